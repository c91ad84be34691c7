"""
lhttp's own load generator: fan-out over WebSocket against any LHTTP
server, in Python, several processes, with nothing outside this repository.

    python bench/loadgen.py -url ws://127.0.0.1:8081/ -subs 100 -msgs 1000
    python bench/loadgen.py -url ws://127.0.0.1:8081/ -subs 1000 -msgs 500 -rate 100 -procs 2

It takes lhttpbench's flags and prints lhttpbench's result line, so
C{bench/run.py} reads either. C{-subs} subscriber connections, spread over
C{-procs} worker processes (one per CPU by default), subscribe to one
channel; C{-pubs} publishers (spread over the same workers) send C{-msgs}
messages each, as fast as they can or C{-rate} per second. Every body
carries its send time and its publisher and sequence number, so each
delivery is timed and checked: C{missing} counts deliveries that never
came, C{duplicates} those that came twice, and C{lost} is lhttpbench's
flag (C{true} when something is missing after C{-timeout}). It exits 1 on a
missing or duplicated delivery. C{-channel} names the channel (C{bench});
C{-offsets} adds C{with_offset}, how many deliveries carried an C{offset:}
header (those on a history channel do). C{-idle N -hold 60s} keeps N more
connections open that long, for memory per connection. C{-token T} (or
C{$LHTTP_TOKEN}) authenticates every connection first (C{LHTTP/1.0
connect}, docs/authentication.rst), for nodes with C{--auth-*} options.

The client is a raw asyncio protocol: the handshake once per connection,
then pre-built frames. A publisher masks its frame once with its own key;
per send it masks only the 29 bytes of time and sequence number. Incoming
frames (unmasked, from the server) are cut out of the read buffer by their
length byte. One key per publisher rather than one per frame is the
trade-off: RFC 6455 wants unpredictable keys against proxy cache
poisoning, which a benchmark on loopback does not face.
"""

import argparse
import asyncio
import base64
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import sys
import time
from array import array
from urllib.parse import urlsplit

STAMP = b"%019d %09d"
STAMP_SIZE = 29
WARM = b"warm "
HANDSHAKES_AT_ONCE = 64


def mask(data, key):
    """
    C{data} XOR the repeated 4-byte C{key}, as a client frame carries it.
    """
    if not data:
        return b""
    keys = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(keys, "big")).to_bytes(len(data), "big")


def frameHead(length, opcode=0x1):
    """
    A final, masked frame's first bytes for a payload of C{length} bytes,
    up to (not including) the masking key.
    """
    if length < 126:
        return bytes([0x80 | opcode, 0x80 | length])
    if length < 1 << 16:
        return bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    return bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")


def clientFrame(payload, opcode=0x1):
    key = os.urandom(4)
    return frameHead(len(payload), opcode) + key + mask(payload, key)


class PublishFrames:
    """
    One publisher's publish frame, masked once: C{frame(seq)} fills in the
    send time and C{seq} by masking those 29 bytes alone.

    The body is C{<time ns, 19 digits> <seq, 9 digits> <publisher, 4
    digits> <size x's>}.
    """

    def __init__(self, command, channel, publisher, size):
        head = b"LHTTP/1.0 " + command + b"\r\npublish:" + channel + b"\r\n\r\n"
        tail = b" %04d " % publisher + b"x" * size
        payload = head + b"0" * STAMP_SIZE + tail
        key = os.urandom(4)
        masked = mask(payload, key)
        start = len(head)
        self.prefix = frameHead(len(payload)) + key + masked[:start]
        self.suffix = masked[start + STAMP_SIZE:]
        stampKey = bytes(key[(start + i) % 4] for i in range(STAMP_SIZE))
        self.stampMask = int.from_bytes(stampKey, "big")
        self.warm = clientFrame(head + WARM + b"x" * size)

    def frame(self, seq):
        stamp = STAMP % (time.monotonic_ns(), seq)
        masked = (int.from_bytes(stamp, "big") ^ self.stampMask).to_bytes(STAMP_SIZE, "big")
        return self.prefix + masked + self.suffix


class Ledger:
    """
    What one worker's subscribers received: counts, duplicates, latencies.
    """

    def __init__(self, subscribers, pubs, msgs, onComplete, offsets=False):
        self.expected = subscribers * pubs * msgs
        self.msgs = msgs
        self.offsets = offsets
        self.withOffset = 0
        self.received = 0
        self.duplicates = 0
        self.warmed = 0
        self.latencies = array("q")
        self.onComplete = onComplete


class WebSocketClient(asyncio.Protocol):
    """
    One client connection: the opening handshake, then frames. Subscribers
    hand each message's body to their ledger; publishers only write.
    """

    def __init__(self, host, path, ledger=None, seen=None):
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ).encode()
        self.key = base64.b64encode(os.urandom(16))
        self.ledger = ledger
        self.seen = seen
        self.warm = False
        self.buffer = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.writable = None
        self.fragments = []
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request + b"Sec-WebSocket-Key: " + self.key + b"\r\n\r\n")

    def connection_lost(self, exc):
        self.closed = True
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self):
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def data_received(self, data):
        if not self.upgraded.done():
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            response, data, self.buffer = self.buffer[:end], self.buffer[end + 4:], b""
            accept = base64.b64encode(
                hashlib.sha1(self.key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            if not response.startswith(b"HTTP/1.1 101") or accept not in response:
                self.upgraded.set_exception(ConnectionError(response.split(b"\r\n")[0].decode()))
                self.transport.close()
                return
            self.upgraded.set_result(self)
        self.frames(self.buffer + data if self.buffer else data)

    def frames(self, data):
        """
        Cut whole frames out of C{data}; keep the rest for the next read.
        """
        at, size = 0, len(data)
        while size - at >= 2:
            length = data[at + 1] & 0x7F
            start = at + 2
            if length == 126:
                start += 2
                length = int.from_bytes(data[at + 2:start], "big")
            elif length == 127:
                start += 8
                length = int.from_bytes(data[at + 2:start], "big")
            end = start + length
            if end > size:
                break
            first = data[at]
            if first == 0x81 or first == 0x82:
                self.message(data, start, end)
            else:
                self.control(first, data[start:end])
            at = end
        self.buffer = data[at:]

    def control(self, first, payload):
        opcode = first & 0x0F
        if opcode == 0x9:
            self.transport.write(clientFrame(payload, 0xA))
        elif opcode == 0x8:
            self.transport.close()
        elif opcode in (0x0, 0x1, 0x2):
            self.fragments.append(payload)
            if first & 0x80:
                whole = b"".join(self.fragments)
                self.fragments = []
                self.message(whole, 0, len(whole))

    def message(self, data, start, end):
        ledger = self.ledger
        if ledger is None:
            return
        body = data.find(b"\r\n\r\n", start, end) + 4
        if data.startswith(WARM, body):
            if not self.warm:
                self.warm = True
                ledger.warmed += 1
            return
        try:
            sent = int(data[body:body + 19])
            index = int(data[body + 30:body + 34]) * ledger.msgs + int(data[body + 20:body + 29])
        except ValueError:
            return
        if index >= len(self.seen):
            return
        if self.seen[index]:
            ledger.duplicates += 1
            return
        self.seen[index] = 1
        if ledger.offsets and data.find(b"\r\noffset:", start, body) >= 0:
            ledger.withOffset += 1
        ledger.latencies.append(time.monotonic_ns() - sent)
        ledger.received += 1
        if ledger.received == ledger.expected:
            ledger.onComplete()


async def connect(url, gate, protocol=None, token=None, **kwargs):
    """
    Open one WebSocket connection (five tries, as lhttpbench does).

    @param protocol: the client class (default L{WebSocketClient}; a
        subclass overrides C{message} to read what arrives).
    @param token: L{bytes}: authenticate first (C{LHTTP/1.0 connect} with
        this C{token}). Its reply is not waited for: the node handles a
        connection's messages in order, so what follows runs as the user.
    """
    protocol = protocol or WebSocketClient
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc
    loop = asyncio.get_running_loop()
    async with gate:
        for attempt in range(5):
            try:
                _, client = await loop.create_connection(
                    lambda: protocol(host, path, **kwargs), parts.hostname, port,
                    ssl=parts.scheme == "wss" or None,
                )
                await asyncio.wait_for(client.upgraded, 20)
                if token:
                    client.transport.write(clientFrame(b"LHTTP/1.0 connect\r\ntoken:" + token + b"\r\n\r\n"))
                return client
            except (OSError, ConnectionError, asyncio.TimeoutError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1)


class Worker:
    """
    One process's share: idle connections, subscribers, publishers; it
    takes orders from the coordinator over C{pipe} and reports back.
    """

    def __init__(self, pipe, config, subs, publishers, idle):
        self.pipe = pipe
        self.config = config
        self.subs = subs
        self.publishers = publishers
        self.idle = idle
        self.loop = asyncio.get_running_loop()
        self.stopped = self.loop.create_future()
        self.completedAt = None
        self.publishedAt = None
        self.ledger = Ledger(subs, config.pubs, config.msgs, self.complete, config.offsets)
        self.tasks = []

    def tell(self, *message):
        self.pipe.send(message)

    def complete(self):
        self.completedAt = time.monotonic_ns()
        self.tell("complete", self.completedAt)

    async def run(self):
        c = self.config
        gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
        token = c.token
        self.idlers = await asyncio.gather(*(connect(c.url, gate, token=token) for _ in range(self.idle)))
        self.subscribers = await asyncio.gather(*(
            connect(c.url, gate, token=token, ledger=self.ledger, seen=bytearray(c.pubs * c.msgs))
            for _ in range(self.subs)
        ))
        subscribe = b"LHTTP/1.0 " + c.cmd + b"\r\nsubscribe:" + c.channel + b"\r\n\r\n"
        for subscriber in self.subscribers:
            subscriber.transport.write(clientFrame(subscribe))
        self.publisherConnections = await asyncio.gather(
            *(connect(c.puburl, gate, token=token) for _ in self.publishers)
        )
        self.frames = [PublishFrames(c.cmd, c.channel, p, c.size) for p in self.publishers]
        self.loop.add_reader(self.pipe.fileno(), self.order)
        self.tell("ready")
        while self.ledger.warmed < self.subs and not self.stopped.done():
            await asyncio.sleep(0.01)
        if not self.stopped.done():
            self.tell("warmed")
        await self.stopped

    def order(self):
        name, *args = self.pipe.recv()
        if name == "warm":
            self.tasks.append(self.loop.create_task(self.warmUp()))
        elif name == "go":
            for task in self.tasks:
                task.cancel()
            if self.ledger.expected == 0:
                self.complete()
            self.tasks = [
                self.loop.create_task(self.publish(connection, frames))
                for connection, frames in zip(self.publisherConnections, self.frames)
            ]
        elif name == "stop":
            for task in self.tasks:
                task.cancel()
            self.stopped.set_result(None)

    async def warmUp(self):
        connection, frames = self.publisherConnections[0], self.frames[0]
        while True:
            connection.transport.write(frames.warm)
            await asyncio.sleep(0.05)

    async def publish(self, connection, frames):
        rate, write = self.config.rate, connection.transport.write
        started = time.monotonic()
        for seq in range(self.config.msgs):
            if rate:
                delay = started + seq / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif seq % 64 == 63:
                await asyncio.sleep(0)
            if connection.writable is not None:
                await connection.writable
            if connection.closed:
                return
            write(frames.frame(seq))
        self.publishedAt = time.monotonic_ns()

    def report(self):
        ledger = self.ledger
        return {
            "received": ledger.received,
            "duplicates": ledger.duplicates,
            "withOffset": ledger.withOffset,
            "latencies": ledger.latencies.tobytes(),
            "completedAt": self.completedAt,
            "publishedAt": self.publishedAt,
            "dropped": sum(s.closed for s in self.subscribers),
            "cpu": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        }


def work(pipe, config, subs, publishers, idle):
    """
    A worker process's body.
    """
    async def main():
        worker = Worker(pipe, config, subs, publishers, idle)
        try:
            await worker.run()
        except Exception as e:
            pipe.send(("error", f"{type(e).__name__}: {e}"))
            return
        pipe.send(("report", worker.report()))
        for connection in (*worker.idlers, *worker.subscribers, *worker.publisherConnections):
            connection.transport.abort()

    raiseOpenFilesLimit()
    asyncio.run(main())


def raiseOpenFilesLimit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def share(total, parts, index):
    """
    Part C{index} of C{total} split as evenly as can be into C{parts}.
    """
    return total // parts + (index < total % parts)


class Coordinator:
    """
    Starts the workers and walks them through: connect and subscribe, warm
    up (until every subscriber got a message), publish, collect.
    """

    def __init__(self, config):
        self.config = config
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        procs = max(1, min(config.procs, max(config.subs, config.pubs, config.idle, 1)))
        self.pipes, self.processes = [], []
        for index in range(procs):
            mine, theirs = context.Pipe()
            publishers = list(range(index, config.pubs, procs))
            process = context.Process(
                target=work, daemon=True,
                args=(theirs, config, share(config.subs, procs, index), publishers,
                      share(config.idle, procs, index)),
            )
            process.start()
            theirs.close()
            self.pipes.append(mine)
            self.processes.append(process)
        self.reports = {}

    def await_(self, name, pipes, deadline):
        """
        Wait until every pipe in C{pipes} said C{name}.

        @return: the pipes that did not, at the deadline.
        @raise SystemExit: if a worker failed.
        """
        waiting = set(pipes)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for pipe in multiprocessing.connection.wait(waiting, left):
                try:
                    said, *args = pipe.recv()
                except EOFError:
                    raise SystemExit("a load generator worker died")
                if said == "error":
                    print(f"loadgen: {args[0]}", file=sys.stderr)
                    raise SystemExit(2)
                if said == "report":
                    self.reports[pipe] = args[0]
                if said == name:
                    waiting.discard(pipe)
        return waiting

    def tellAll(self, *message):
        for pipe in self.pipes:
            pipe.send(message)

    def run(self):
        c = self.config
        connectTime = 60 + (c.subs + c.idle) / 100
        if self.await_("ready", self.pipes, time.monotonic() + connectTime):
            print(f"loadgen: not connected after {connectTime:.0f}s", file=sys.stderr)
            raise SystemExit(2)
        self.pipes[0].send(("warm",))
        if self.await_("warmed", self.pipes, time.monotonic() + 30):
            self.tellAll("stop")
            print(f"warm-up failed: not every one of {c.subs} subscribers reached")
            raise SystemExit(1)
        time.sleep(0.2)
        start = time.monotonic_ns()
        self.tellAll("go")
        late = self.await_("complete", self.pipes, time.monotonic() + c.timeout)
        waited = time.monotonic_ns()
        time.sleep(c.hold)
        self.tellAll("stop")
        self.await_("report", [p for p in self.pipes if p not in self.reports], time.monotonic() + 30)
        for process in self.processes:
            process.join(10)
        return self.result(start, waited, bool(late))

    def result(self, start, waited, late):
        c = self.config
        reports = list(self.reports.values())
        latencies = array("q")
        for report in reports:
            latencies.frombytes(report["latencies"])
        latencies = sorted(latencies)

        def percentile(p):
            return latencies[int((len(latencies) - 1) * p)] / 1e6 if latencies else 0.0

        expected = c.subs * c.pubs * c.msgs
        received = sum(r["received"] for r in reports)
        finished = waited if late else max(r["completedAt"] or waited for r in reports)
        published = max((r["publishedAt"] for r in reports if r["publishedAt"]), default=waited)
        elapsed = (finished - start) / 1e9
        result = {
            "subs": c.subs, "pubs": c.pubs, "msgs": c.msgs, "size": c.size,
            "publish_s": f"{(published - start) / 1e9:.3f}",
            "elapsed_s": f"{elapsed:.3f}",
            "delivered": f"{received}/{expected}",
            "deliveries_per_s": f"{received / elapsed:.0f}",
            "p50_ms": f"{percentile(0.5):.2f}",
            "p99_ms": f"{percentile(0.99):.2f}",
            "max_ms": f"{percentile(1.0):.2f}",
            "lost": "true" if received < expected else "false",
            "missing": expected - received,
            "duplicates": sum(r["duplicates"] for r in reports),
            "dropped": sum(r["dropped"] for r in reports),
            "procs": len(self.processes),
            "driver_cpu_s": f"{sum(r['cpu'] for r in reports):.2f}",
            "driver": "loadgen",
        }
        if c.offsets:
            result["with_offset"] = sum(r["withOffset"] for r in reports)
        return result


def duration(text):
    """
    lhttpbench's durations: C{60s}, C{500ms}, C{2m}, or plain seconds.
    """
    for suffix, scale in (("ms", 0.001), ("s", 1), ("m", 60)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


def parse(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], prefix_chars="-",
        epilog="Flags take one dash or two: -subs 100 and --subs 100 are the same.",
    )
    add = parser.add_argument

    def flag(name, **kwargs):
        add(f"-{name}", f"--{name}", dest=name, **kwargs)

    flag("url", default="ws://127.0.0.1:8081/", help="WebSocket URL of the LHTTP server (subscribers)")
    flag("puburl", default=None, help="WebSocket URL for publishers (default: -url)")
    flag("subs", type=int, default=100, help="subscriber connections")
    flag("pubs", type=int, default=1, help="publisher connections")
    flag("msgs", type=int, default=1000, help="messages per publisher")
    flag("size", type=int, default=64, help="padding bytes in each body")
    flag("rate", type=float, default=0, help="messages/s per publisher (0: as fast as possible)")
    flag("channel", default="bench", help="channel name")
    flag("cmd", default="subpub", help="LHTTP command")
    flag("timeout", type=duration, default=60.0, help="give up waiting for deliveries after this (60s)")
    flag("idle", type=int, default=0, help="extra idle connections to hold open (memory test)")
    flag("hold", type=duration, default=0.0, help="hold connections open this long before exit")
    add("-offsets", "--offsets", dest="offsets", action="store_true",
        help="count deliveries that carry an offset: header (history channels) as with_offset")
    flag("token", default=os.environ.get("LHTTP_TOKEN"),
         help="authenticate every connection first with this token (LHTTP/1.0 connect; "
              "default: $LHTTP_TOKEN, else none)")
    flag("procs", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per CPU)")
    config = parser.parse_args(argv)
    config.puburl = config.puburl or config.url
    config.cmd, config.channel = config.cmd.encode(), config.channel.encode()
    config.token = config.token.encode() if config.token else None
    if config.pubs < 1 or config.msgs < 0 or config.subs < 0:
        parser.error("-pubs must be at least 1, -subs and -msgs at least 0")
    if config.pubs > 9999 or config.msgs > 999_999_999:
        parser.error("at most 9999 publishers of 999,999,999 messages each")
    return config


def main(argv=None):
    config = parse(argv)
    raiseOpenFilesLimit()
    result = Coordinator(config).run()
    print(" ".join(f"{key}={value}" for key, value in result.items()), flush=True)
    if result["missing"] or result["duplicates"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
