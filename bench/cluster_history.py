"""
History on a JetStream cluster, at scale: whether a node carries only the
channels it serves, how fast a recovery is, what history costs a
cross-node fan-out, and whether a cut NATS link loses or repeats anything.
One run, one line per figure with its target and PASS or FAIL.

    python bench/cluster_history.py                 # the full size (issue 20's targets)
    python bench/cluster_history.py --messages 500 --channels 5 --subscribers 5 \\
        --throughput-messages 100 --recovery 100,300 --seconds 3 --cut 1 --repeat 1   # smoke size

It starts, on free loopback ports, a C{nats-server -js -sd DIR -m PORT}
(file store in a scratch folder, monitoring port) and three real nodes,
C{twistd lhttp --nats URL --history 'room.*=N'}: A, B and C. B reaches
nats-server through a TCP proxy of this program's (L{CuttableProxy}), so
its link can be cut. Its parts, each choosable with C{--only}:

- B{spread}: one subscriber per channel on C{--channels} channels, all on
  node A; C{--messages} messages over those channels, posted to
  C{POST /publish} (a backend's way in) of a fourth node, P, started for
  this part only, which serves no one: so A's figures are the cost of
  serving its subscribers alone, and whatever B and C receive is history
  traffic they do not serve (C{--publisher a}, C{b} or C{c} posts to that
  node instead; its CPU then includes the publishing, and a node's
  figures leave out the JetStream publish acks it gets, one per post).
  Over the part it reads nats-server's C{/connz} (per connection:
  C{out_msgs}, what nats-server sent the node; a node's connections are
  named C{... pid=<pid>}) and each node's C{/proc/<pid>/stat} (utime +
  stime). Targets: B and C each receive at most 1 % of the messages A
  receives, and use at most 10 % of A's CPU.
- B{recovery}: for each of C{--recovery} sizes, a channel filled with
  that many messages (published on node C), then, C{--repeat} times, a
  new WebSocket client on node A subscribes with C{since:0}; the time
  from writing the subscribe to the last recovered message, median of
  the repeats. Every recovery must be exact and in order. Targets: 1,000
  in at most 50 ms, 10,000 in at most 300 ms (other sizes are shown
  without a target).
- B{throughput}: C{bench/loadgen.py} with C{--subscribers} subscribers on
  node A and the publisher on node C, C{--throughput-messages} messages,
  history off (channel C{plain.bench}) and on (C{room.bench}) interleaved
  C{--throughput-repeat} times (as C{bench/history.py} does); the median of each
  pair's on/off deliveries/s. Target: at least 0.9. Each run also shows
  the CPU of nodes A and C, nats-server and the driver (C{a_cpu_ms},
  C{c_cpu_ms}, C{nats_cpu_ms}, C{driver_cpu_ms}; the summary line has
  their medians on and off): on this shared machine, steadier than the
  ratio. C{--pad-plain N} adds N bytes to the bodies of the runs without
  history: with about 90, as many bytes per delivery as a history
  message's position adds, the control then differs from the history
  runs only by what history does.
- B{cut}: C{min(--channels, 10)} channels with one subscriber each on node
  B and on node A (the control), a publisher on node C sending C{--rate}
  messages/s for C{--seconds} seconds; a third of the way in, the proxy
  cuts node B's NATS connection (closes it and refuses new ones) for
  C{--cut} seconds. The clients do not reconnect; every message is
  counted at each subscriber (a client the node closes is a failed
  target). A second control: the same messages on as many channels
  without history (C{plain.cut*}), with subscribers on B: core NATS loses
  what is published while the link is down, which shows the cut is real.

Every part counts missing and duplicated messages (target 0 everywhere).
At the end, each node's RSS. The output is one C{target ...} line per
figure (C{name}, C{value}, C{target}, C{result=PASS|FAIL|INFO}) and
C{raw ...} lines with the numbers behind them, as C{key=value} fields
(read them with C{shlex.split}). It exits 0 when every part ran (a target
may FAIL: it measures whatever code is checked out), 2 when a part could
not run; with C{--strict}, 1 when a target failed.
"""

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.history import pairedRatios  # noqa: E402
from bench.loadgen import WebSocketClient, clientFrame, connect  # noqa: E402
from bench.run import Servers, findDriver, freePort, measure, median, number, raiseOpenFilesLimit  # noqa: E402

PATTERN = "room.*"
OFF, ON = "plain.bench", "room.bench"
RECOVERY_TARGETS_MS = {1000: 50, 10000: 300}
POST_CONNECTIONS = 10
CUT_CHANNELS = 10


# -- output ------------------------------------------------------------------

class Report:
    """
    The figures, printed as they come; whether any target failed.
    """

    def __init__(self):
        self.failed = []

    def target(self, name, value, target, ok, unit=""):
        """
        One figure against its target; C{ok} L{None} is shown as INFO.
        """
        result = "INFO" if ok is None else "PASS" if ok else "FAIL"
        if ok is False:
            self.failed.append(name)
        shown = "?" if value is None else f"{value:.4g}{unit}"
        print(f"target name={name} value={shlex.quote(shown)} target={shlex.quote(target)} result={result}",
              flush=True)

    def raw(self, part, **fields):
        words = " ".join(f"{key}={shlex.quote(str(value))}" for key, value in fields.items())
        print(f"raw part={part} {words}", flush=True)

    def counted(self, name, missing, duplicates, disorder=0):
        """
        The missing/duplicates target of one part.
        """
        self.target(f"{name}_missing", missing, "== 0", missing == 0)
        self.target(f"{name}_duplicates", duplicates, "== 0", duplicates == 0)
        if disorder:
            self.target(f"{name}_out_of_order", disorder, "== 0", False)


# -- measuring the processes -------------------------------------------------

def cpuSeconds(pid):
    """
    utime + stime of a process, in seconds (/proc/<pid>/stat).
    """
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processNamed(name, ancestor):
    """
    The pid of the newest process called C{name} that descends from
    C{ancestor} (nats-server behind the wrappers that start it), or
    L{None}.
    """
    parents, names = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        names[int(entry)] = text[text.index("(") + 1:text.rindex(")")]
        parents[int(entry)] = int(text.rpartition(")")[2].split()[1])
    found = None
    for pid, comm in names.items():
        if comm != name[:15]:
            continue
        up = pid
        while up > 1 and up != ancestor:
            up = parents.get(up, 1)
        if up == ancestor and (found is None or pid > found):
            found = pid
    return found


def natsCounts(monitorURL, pids):
    """
    C{{pid: (in_msgs, out_msgs, connections)}}: nats-server's counts
    summed over each node's open connections (named C{... pid=<pid>}).
    """
    with urllib.request.urlopen(f"{monitorURL}/connz?limit=4096", timeout=5) as response:
        document = json.load(response)
    counts = {pid: (0, 0, 0) for pid in pids}
    for connection in document.get("connections", []):
        name = connection.get("name", "")
        for pid in pids:
            if name.endswith(f"pid={pid}"):
                i, o, n = counts[pid]
                counts[pid] = (i + connection.get("in_msgs", 0), o + connection.get("out_msgs", 0), n + 1)
    return counts


def healthy(node):
    try:
        with urllib.request.urlopen(node.url.replace("ws://", "http://") + "health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def reconnects(node):
    """
    The largest C{reconnects} count anywhere in the node's C{/health}
    document (the NATS client's; L{None} if there is none).
    """
    try:
        with urllib.request.urlopen(node.url.replace("ws://", "http://") + "health", timeout=2) as response:
            document = json.load(response)
    except urllib.error.HTTPError as error:
        document = json.load(error)
    except OSError:
        return None
    found = []

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "reconnects" and isinstance(item, int):
                    found.append(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(document)
    return max(found) if found else None


# -- the NATS link that can be cut ---------------------------------------------

class CuttableProxy:
    """
    A TCP proxy to nats-server, on its own thread and event loop (the
    nodes connect through it while this program blocks starting them).
    L{cut} closes every connection through it and stops listening, as a
    network path that fails does; L{restore} listens again on the same
    port.
    """

    def __init__(self, target):
        host, port = target.rsplit("/", 1)[-1].split(":")
        self.target = (host, int(port))
        self.port = freePort()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.transports = set()
        self.server = None
        self.cuts = 0
        self.accepted = 0
        self.aborted = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._listen())

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _listen(self):
        self.server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port, reuse_address=True)

    async def _accepted(self, reader, writer):
        try:
            upstreamReader, upstreamWriter = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = {writer.transport, upstreamWriter.transport}
        self.transports |= pair
        try:
            await asyncio.gather(self._pipe(reader, upstreamWriter), self._pipe(upstreamReader, writer),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            pass
        finally:
            self.transports -= pair

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    async def _cut(self):
        self.server.close()
        for transport in list(self.transports):
            transport.abort()
        self.aborted += len(self.transports) // 2
        self.cuts += 1

    def cut(self):
        self.call(self._cut())

    def restore(self):
        self.call(self._listen())

    async def _close(self):
        await self._cut()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self):
        try:
            self.call(self._close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


# -- clients -----------------------------------------------------------------

def parse(payload):
    """
    An LHTTP message: C{(command, {header: value}, body)} (first value of
    a repeated header).
    """
    head, _, body = payload.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    command = lines[0].split(b" ", 1)[1] if b" " in lines[0] else b""
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), value.strip())
    return command, headers, body


class Client(WebSocketClient):
    """
    A WebSocket client (loadgen's) that hands each whole LHTTP message to
    C{onMessage}, and can wait for a barrier.
    """

    def __init__(self, host, path):
        WebSocketClient.__init__(self, host, path)
        self.onMessage = None
        self.barriers = {}

    def message(self, data, start, end):
        payload = data[start:end]
        if payload.startswith(b"LHTTP/1.0 barrier\r\n"):
            _, headers, _ = parse(payload)
            waiting = self.barriers.pop(headers.get(b"publish"), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return
        if self.onMessage is not None:
            self.onMessage(payload)

    def send(self, payload):
        self.transport.write(clientFrame(payload))

    async def barrier(self, timeout=20):
        """
        Wait until the node has handled all this client sent before: a
        message published on a private channel comes back.
        """
        name = b"bench-barrier.%d.%d" % (os.getpid(), id(self))
        waiting = self.barriers[name] = asyncio.get_running_loop().create_future()
        self.send(b"LHTTP/1.0 barrier\r\nsubscribe:%s\r\npublish:%s\r\nunsubscribe:%s\r\n\r\n" % (name, name, name))
        await asyncio.wait_for(waiting, timeout)


class Subscriber:
    """
    One client subscribed to one history channel, counting what it gets:
    bodies are sequence numbers 0..expected-1, in order.
    """

    def __init__(self, client, channel):
        self.client = client
        self.channel = channel
        self.seen = set()
        self.duplicates = 0
        self.disorder = 0
        self.last = -1
        self.offsets = 0
        client.onMessage = self.received

    def received(self, payload):
        command, headers, body = parse(payload)
        if command != b"m" or headers.get(b"channel", self.channel) != self.channel:
            return
        try:
            seq = int(body)
        except ValueError:
            return
        if seq in self.seen:
            self.duplicates += 1
            return
        if seq < self.last:
            self.disorder += 1
        self.last = seq
        self.seen.add(seq)
        if b"offset" in headers:
            self.offsets += 1

    def missing(self, expected):
        return expected - len(self.seen & set(range(expected)))


async def subscribers(url, channels, gate):
    """
    One connected, subscribed client per channel on the node at C{url}.
    """
    clients = await asyncio.gather(*(connect(url, gate, protocol=Client) for _ in channels))
    result = []
    for client, channel in zip(clients, channels):
        client.send(b"LHTTP/1.0 m\r\nsubscribe:%s\r\n\r\n" % channel)
        result.append(Subscriber(client, channel))
    await asyncio.gather(*(client.barrier() for client in clients))
    return result


async def until(condition, timeout, interval=0.02):
    """
    Wait, with the loop running, until C{condition()} or C{timeout}.

    @return: whether the condition held.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def post(url, messages, counts):
    """
    POST each C{(channel, body)} of C{messages} to the node's
    C{/publish}, in order, on one keep-alive HTTP/1.1 connection; a 503 is
    retried (the cluster said: not known to be stored).
    """
    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = b"POST /publish HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: text/plain; charset=utf-8\r\n" % (
        host.encode(), port.encode())
    try:
        for channel, body in messages:
            message = b"LHTTP/1.0 m\r\npublish:%s\r\n\r\n%s" % (channel, body)
            for _ in range(5):
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(message) + message)
                status = await readResponse(reader)
                if status == 200:
                    counts["posted"] += 1
                    break
                counts["refused"] += 1
            else:
                counts["failed"] += 1
    finally:
        writer.close()


async def readResponse(reader):
    """
    Read one HTTP response (Content-Length or chunked); its status.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(b":", 1) for line in lines[1:] if b":" in line)
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").strip() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


# -- the parts ---------------------------------------------------------------

async def spread(args, nodes, publisher, monitorURL, report):
    a, b, c = nodes
    gate = asyncio.Semaphore(64)
    channels = [b"room.spread%d" % i for i in range(args.channels)]
    subs = await subscribers(a.url, channels, gate)
    pids = [node.process.pid for node in nodes]
    perChannel = [args.messages // args.channels + (i < args.messages % args.channels) for i in range(args.channels)]
    # Each POST connection publishes whole channels, in order: per channel,
    # bodies 0, 1, 2, ... are stored in that order.
    plans = [[] for _ in range(min(POST_CONNECTIONS, args.channels))]
    for i, channel in enumerate(channels):
        plans[i % len(plans)].append(i)
    work = [[(channels[i], b"%d" % seq) for seq in range(max(perChannel)) for i in plan if seq < perChannel[i]]
            for plan in plans]

    natsBefore, cpuBefore = natsCounts(monitorURL, pids), [cpuSeconds(pid) for pid in pids]
    started = time.monotonic()
    counts = {"posted": 0, "refused": 0, "failed": 0}
    postURL = publisher.url.replace("ws://", "http://")
    await asyncio.gather(*(post(postURL, messages, counts) for messages in work))
    posted = time.monotonic()
    done = await until(lambda: all(len(s.seen) >= n for s, n in zip(subs, perChannel)), 60 + args.messages / 500)
    delivered = time.monotonic()

    # Let what is in flight to B and C arrive: until nats-server's counts
    # for every node stop moving (at most 5 s).
    previous = None
    for _ in range(25):
        now = natsCounts(monitorURL, pids)
        if now == previous:
            break
        previous = now
        await asyncio.sleep(0.2)
    natsAfter, cpuAfter = previous, [cpuSeconds(pid) for pid in pids]
    for s in subs:
        s.client.transport.abort()

    received = {pid: natsAfter[pid][1] - natsBefore[pid][1] for pid in pids}
    sent = {pid: natsAfter[pid][0] - natsBefore[pid][0] for pid in pids}
    cpu = dict(zip(pids, (after - before for before, after in zip(cpuBefore, cpuAfter))))
    # The publishing node gets one JetStream publish ack per post: replies,
    # not history messages.
    acks = {pid: (counts["posted"] + counts["refused"]) if pid == publisher.process.pid else 0 for pid in pids}
    history = {pid: max(received[pid] - acks[pid], 0) for pid in pids}
    missing = sum(s.missing(n) for s, n in zip(subs, perChannel))
    duplicates = sum(s.duplicates for s in subs)
    disorder = sum(s.disorder for s in subs)
    report.raw("spread", messages=args.messages, channels=args.channels, subscribers_on="A",
               publisher=f"POST /publish on node {args.publisher.upper()}",
               posted=counts["posted"], refused_503=counts["refused"], failed=counts["failed"],
               post_s=f"{posted - started:.2f}", delivered_s=f"{delivered - started:.2f}", complete=done,
               **{f"{name}_nats_out_msgs": received[pid] for name, pid in zip("abc", pids)},
               **{f"{name}_nats_in_msgs": sent[pid] for name, pid in zip("abc", pids)},
               **{f"{name}_history_msgs": history[pid] for name, pid in zip("abc", pids)},
               **{f"{name}_cpu_s": f"{cpu[pid]:.2f}" for name, pid in zip("abc", pids)})
    base = max(history[pids[0]], 1)
    for name, pid in zip("bc", pids[1:]):
        share = 100 * history[pid] / base
        report.target(f"spread_nats_msgs_{name}_vs_a", share, "<= 1%", share <= 1, "%")
    for name, pid in zip("bc", pids[1:]):
        share = 100 * cpu[pid] / cpu[pids[0]] if cpu[pids[0]] else None
        if pid == publisher.process.pid:
            report.target(f"spread_cpu_{name}_vs_a", share, "none: it publishes", None, "%")
        else:
            report.target(f"spread_cpu_{name}_vs_a", share, "<= 10%", share is not None and share <= 10, "%")
    report.counted("spread", missing, duplicates, disorder)


async def fill(url, watchURL, channel, count, gate):
    """
    Publish bodies 0..count-1 on C{channel} from a client on C{url}, in
    windows of 500, until a live subscriber on C{watchURL} has them all.
    """
    [watcher] = await subscribers(watchURL, [channel], gate)
    publisher = await connect(url, gate, protocol=Client)
    window = 500
    for start in range(0, count, window):
        publisher.transport.write(b"".join(
            clientFrame(b"LHTTP/1.0 m\r\npublish:%s\r\n\r\n%d" % (channel, seq))
            for seq in range(start, min(count, start + window))))
        if not await until(lambda: len(watcher.seen) >= min(count, start + window), 60):
            raise SystemExit(f"filling {channel.decode()}: {len(watcher.seen)} of {count} stored")
    watcher.client.transport.abort()
    publisher.transport.abort()


async def recoverOnce(url, channel, count, gate):
    """
    Subscribe with since:0 on a new connection.

    @return: seconds from writing the subscribe to the last recovered
        message, and what was wrong (missing, duplicates, out of order,
        the recovery reply's fields).
    """
    client = await connect(url, gate, protocol=Client)
    bodies, reply = [], {}
    finished = asyncio.get_running_loop().create_future()

    def received(payload):
        # Lean on purpose: the client's own time is inside the figure.
        if payload.startswith(b"LHTTP/1.0 m\r\n"):
            bodies.append(int(payload[payload.find(b"\r\n\r\n") + 4:]))
            if len(bodies) == count and not finished.done():
                finished.set_result(time.perf_counter())
            return
        command, headers, body = parse(payload)
        if command == b"recovery":
            reply.update(headers)
            if int(headers.get(b"count", b"0")) == 0 and not finished.done():
                finished.set_result(time.perf_counter())

    client.onMessage = received
    cpu = time.thread_time()
    started = time.perf_counter()
    client.send(b"LHTTP/1.0 m\r\nsubscribe:%s\r\nsince:0\r\n\r\n" % channel)
    try:
        ended = await asyncio.wait_for(finished, 120)
    except asyncio.TimeoutError:
        ended = None
    cpu = time.thread_time() - cpu
    client.transport.abort()
    unique = set(bodies)
    return (None if ended is None else ended - started), {
        "missing": count - len(unique & set(range(count))),
        "duplicates": len(bodies) - len(unique),
        "out_of_order": sum(1 for x, y in zip(bodies, bodies[1:]) if y < x),
        "recovered": reply.get(b"recovered", b"?").decode(),
        "count": reply.get(b"count", b"?").decode(),
        "client_cpu_ms": f"{cpu * 1000:.1f}",
    }


async def recovery(args, nodes, report):
    a, b, c = nodes
    gate = asyncio.Semaphore(64)
    missing = duplicates = disorder = 0
    for size in args.recovery:
        channel = b"room.recover%d" % size
        await fill(c.url, c.url, channel, size, gate)
        times = []
        for run in range(args.repeat):
            seconds, wrong = await recoverOnce(a.url, channel, size, gate)
            times.append(seconds)
            missing += wrong["missing"]
            duplicates += wrong["duplicates"]
            disorder += wrong["out_of_order"]
            report.raw("recovery", size=size, run=run + 1, ms="?" if seconds is None else f"{seconds * 1000:.1f}",
                       **wrong)
        done = [t for t in times if t is not None]
        ms = statistics.median(done) * 1000 if len(done) == len(times) else None
        target = RECOVERY_TARGETS_MS.get(size)
        report.target(f"recovery_{size}_ms", ms, f"<= {target} ms" if target else "none at this size",
                      None if target is None else ms is not None and ms <= target, " ms")
    report.counted("recovery", missing, duplicates, disorder)


def throughput(args, nodes, driver, report, natsPid=None):
    a, b, c = nodes
    shape = f"-subs {args.subscribers} -msgs {args.throughput_messages} -offsets"
    runs = {OFF: [], ON: []}
    nodesCPU = {"a": a.process.pid, "c": c.process.pid}
    if natsPid is not None:
        nodesCPU["nats"] = natsPid
    for run in range(args.throughput_repeat):
        for channel in (OFF, ON):
            before = {name: cpuSeconds(pid) for name, pid in nodesCPU.items()}
            driverBefore = os.times()
            size = 64 + (args.pad_plain if channel == OFF else 0)
            fields = measure(driver, f"{shape} -size {size} -channel {channel}", a.url, c.url,
                             args.timeout)
            driverAfter = os.times()
            # Each process's CPU over the run (the driver's start and its
            # connections included): steadier than deliveries/s on a
            # shared machine, it shows what history costs each one; the
            # driver shares the cores, so what it spends is the nodes'
            # loss too.
            for name, pid in nodesCPU.items():
                fields[f"{name}_cpu_ms"] = f"{(cpuSeconds(pid) - before[name]) * 1000:.0f}"
            fields["driver_cpu_ms"] = "%.0f" % (1000 * (
                driverAfter.children_user + driverAfter.children_system
                - driverBefore.children_user - driverBefore.children_system))
            runs[channel].append(fields)
            report.raw("throughput", history="on" if channel == ON else "off", run=run + 1,
                       subscribers_on="A", publisher_on="C",
                       **{k: v for k, v in fields.items() if k in (
                           "delivered", "deliveries_per_s", "p50_ms", "p99_ms", "missing", "duplicates",
                           "with_offset", "elapsed_s", "a_cpu_ms", "c_cpu_ms", "nats_cpu_ms",
                           "driver_cpu_ms", "error")})
    pairs = pairedRatios(runs[ON], runs[OFF], "deliveries_per_s")
    ratio = median(pairs)
    rates = {channel: median(number(f, "deliveries_per_s") for f in runs[channel]) or 0 for channel in runs}
    cpu = {(channel, name): median(number(f, f"{name}_cpu_ms") for f in runs[channel]) or 0
           for channel in runs for name in [*nodesCPU, "driver"]}
    report.raw("throughput", off_deliveries_per_s=f"{rates[OFF]:.0f}", on_deliveries_per_s=f"{rates[ON]:.0f}",
               pairs=",".join(f"{p:.2f}" for p in pairs) or "?",
               **{f"{name}_cpu_ms_{'on' if channel == ON else 'off'}": f"{cpu[channel, name]:.0f}"
                  for channel, name in cpu})
    report.target("throughput_on_off", ratio, ">= 0.9", ratio is not None and ratio >= 0.9)
    every = runs[OFF] + runs[ON]
    missing = sum(int(number(f, "missing") if number(f, "missing") is not None else 1) for f in every)
    duplicates = sum(int(number(f, "duplicates") or 0) for f in every)
    report.counted("throughput", missing, duplicates)
    return all("deliveries_per_s" in f for f in every)


async def cutLink(args, nodes, proxy, report):
    a, b, c = nodes
    gate = asyncio.Semaphore(64)
    count = min(args.channels, CUT_CHANNELS)
    channels = [b"room.cut%d" % i for i in range(count)]
    plain = [b"plain.cut%d" % i for i in range(count)]
    onB = await subscribers(b.url, channels, gate)
    onA = await subscribers(a.url, channels, gate)
    # The control: the same messages on channels without history, through
    # core NATS, lose what is published while the link is down.
    plainOnB = await subscribers(b.url, plain, gate)
    publisher = await connect(c.url, gate, protocol=Client)
    total = int(args.rate * args.seconds)
    reconnectsBefore, acceptedBefore = reconnects(b), proxy.accepted
    cutAt, cutFor = args.seconds / 3, args.cut
    started = time.monotonic()
    restoredAt = None
    for i in range(total):
        due = started + i / args.rate
        now = time.monotonic()
        if proxy.cuts == 0 and now - started >= cutAt:
            proxy.cut()
            cutStarted = time.monotonic()
        if proxy.cuts and restoredAt is None and now - cutStarted >= cutFor:
            proxy.restore()
            restoredAt = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        publisher.send(b"LHTTP/1.0 m\r\npublish:%s\r\n\r\n%d" % (channels[i % count], i // count))
        publisher.send(b"LHTTP/1.0 m\r\npublish:%s\r\n\r\n%d" % (plain[i % count], i // count))
    if restoredAt is None:
        if proxy.cuts == 0:
            proxy.cut()
            cutStarted = time.monotonic()
        await asyncio.sleep(max(0.0, cutFor - (time.monotonic() - cutStarted)))
        proxy.restore()
        restoredAt = time.monotonic()
    published = time.monotonic()
    expected = [total // count + (i < total % count) for i in range(count)]
    back = await until(lambda: healthy(b), 30, 0.2)

    def complete(group):
        return all(len(s.seen) >= n for s, n in zip(group, expected))

    # Everything should arrive; give it 10 s after B is healthy again, and
    # stop waiting early if nothing moves for 3 s once A has it all.
    lastCount, lastMove = -1, time.monotonic()
    deadline = time.monotonic() + 10
    while not (complete(onA) and complete(onB)) and time.monotonic() < deadline:
        now = sum(len(s.seen) for s in onB)
        if now != lastCount:
            lastCount, lastMove = now, time.monotonic()
        elif complete(onA) and time.monotonic() - lastMove > 3:
            break
        await asyncio.sleep(0.05)
    ended = time.monotonic()
    for name, group in (("b", onB), ("a", onA), ("b-plain", plainOnB)):
        report.raw("cut", node=name, channels=count, published=total,
                   received=sum(len(s.seen) for s in group),
                   missing=sum(s.missing(n) for s, n in zip(group, expected)),
                   duplicates=sum(s.duplicates for s in group),
                   out_of_order=sum(s.disorder for s in group),
                   client_closed_by_node=sum(s.client.closed for s in group))
    report.raw("cut", publisher_on="C", rate=args.rate, seconds=args.seconds, cut_s=cutFor,
               cut_at_s=f"{cutAt:.1f}", connections_cut=proxy.aborted,
               b_reconnected=proxy.accepted - acceptedBefore,
               b_health_reconnects=f"{reconnectsBefore}->{reconnects(b)}",
               restored_at_s=f"{restoredAt - started:.2f}",
               published_s=f"{published - started:.2f}", b_healthy_again=back,
               waited_after_publishing_s=f"{ended - published:.2f}")
    closedByNode = sum(s.client.closed for s in onB + onA + plainOnB)
    plainMissing = sum(s.missing(n) for s, n in zip(plainOnB, expected))
    for client in [s.client for s in onA + onB + plainOnB] + [publisher]:
        client.transport.abort()
    report.counted("cut_b", sum(s.missing(n) for s, n in zip(onB, expected)), sum(s.duplicates for s in onB),
                   sum(s.disorder for s in onB))
    report.counted("cut_a_control", sum(s.missing(n) for s, n in zip(onA, expected)),
                   sum(s.duplicates for s in onA), sum(s.disorder for s in onA))
    report.target("cut_b_plain_missing_control", plainMissing,
                  "none: channels without history, to show the cut loses what it holds", None)
    # The clients do not reconnect: one the node closed lost what came after.
    report.target("cut_clients_closed_by_node", closedByNode, "== 0", closedByNode == 0)


# -- main --------------------------------------------------------------------

def attempt(report, part, run):
    """
    Run one part; a part that fails (a timeout, a node that stopped
    answering) is reported and the others still run.

    @return: whether it ran to the end (L{False} if C{run} returned
        L{False} or raised).
    """
    try:
        return run() is not False
    except (Exception, SystemExit) as error:
        report.raw(part, error=" ".join(f"{type(error).__name__}: {error}".split())[:300])
        return False


def sizes(text):
    return [int(part) for part in text.split(",") if part]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--only", choices=["spread", "recovery", "throughput", "cut"], action="append",
        help="run only this part (repeatable; default all)")
    add("--messages", type=int, default=20000, help="spread: messages posted (default 20000)")
    add("--channels", type=int, default=50, help="spread: channels, one subscriber each on node A (default 50)")
    add("--publisher", choices="pabc", default="p",
        help="spread: the node whose POST /publish takes the messages: p, a fourth node that serves no "
             "one (default), or a, b, c")
    add("--recovery", type=sizes, default=[1000, 10000],
        help="recovery: channel sizes, comma-separated (default 1000,10000)")
    add("--subscribers", type=int, default=100, help="throughput: subscribers on node A (default 100)")
    add("--throughput-messages", type=int, default=1000, help="throughput: messages published (default 1000)")
    add("--repeat", type=int, default=3, help="recoveries per size (default 3)")
    add("--pad-plain", type=int, default=0,
        help="throughput: bytes added to the bodies of the runs without history, a control for "
             "the ~90 bytes of position each history delivery carries (default 0)")
    add("--throughput-repeat", type=int, default=5, help="throughput: off/on pairs (default 5)")
    add("--seconds", type=float, default=6.0, help="cut: seconds of publishing (default 6)")
    add("--cut", type=float, default=2.0, help="cut: seconds node B's NATS link is down (default 2)")
    add("--rate", type=float, default=500.0, help="cut: messages/s published (default 500)")
    add("--procs", type=int, help="loadgen's worker processes (default: one per CPU)")
    add("--timeout", type=float, default=120, help="seconds for one loadgen run (default 120)")
    add("--strict", action="store_true", help="exit 1 if a target failed")
    args = parser.parse_args(argv)
    parts = args.only or ["spread", "recovery", "throughput", "cut"]
    retention = max([10000, *args.recovery, args.throughput_messages,
                     args.messages // max(args.channels, 1) + 1, int(args.rate * args.seconds)])
    raiseOpenFilesLimit()
    report = Report()
    ran = True
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lhttp-bench-cluster-") as workdir:
        driver = findDriver("loadgen", None, args.procs, workdir)
        store = Path(workdir) / "jetstream"
        store.mkdir()
        servers = Servers(workdir)
        proxy = None
        try:
            monitor = freePort()
            nats = servers.nats("-js", "-sd", str(store), "-m", str(monitor))
            monitorURL = f"http://127.0.0.1:{monitor}"
            proxy = CuttableProxy(nats)
            history = ("--history", f"{PATTERN}={retention}")
            nodes = [servers.node("node-a", "--nats", nats, *history),
                     servers.node("node-b", "--nats", proxy.url, *history),
                     servers.node("node-c", "--nats", nats, *history)]
            publishing = None
            if "spread" in parts and args.publisher == "p":
                publishing = servers.node("node-p", "--nats", nats, *history)
            print(f"# {os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
                  f"nodes A B C: pids {' '.join(str(n.process.pid) for n in nodes)}"
                  f"{f', P (publishing): {publishing.process.pid}' if publishing else ''}; "
                  f"--history '{PATTERN}={retention}'; node B's NATS link through a proxy", flush=True)
            if "spread" in parts:
                publisher = publishing if args.publisher == "p" else nodes["abc".index(args.publisher)]
                ran &= attempt(report, "spread",
                               lambda: asyncio.run(spread(args, nodes, publisher, monitorURL, report)))
                if publishing is not None:
                    # It would read every later history message (on code
                    # where every node does), loading the machine.
                    servers.stop(publishing)
            if "recovery" in parts:
                ran &= attempt(report, "recovery", lambda: asyncio.run(recovery(args, nodes, report)))
            if "throughput" in parts:
                natsPid = processNamed("nats-server", servers.processes[0].pid)
                ran &= attempt(report, "throughput",
                               lambda: throughput(args, nodes, driver, report, natsPid))
            if "cut" in parts:
                ran &= attempt(report, "cut", lambda: asyncio.run(cutLink(args, nodes, proxy, report)))
            report.raw("rss", **{f"{name}_mib": f"{n.rss() / 2**20:.1f}" for name, n in zip("abc", nodes)},
                       load_average=" ".join(f"{x:.2f}" for x in os.getloadavg()),
                       elapsed_s=f"{time.monotonic() - began:.1f}")
            alive = all(n.process.poll() is None for n in nodes)
            ran = ran and alive
        finally:
            if proxy is not None:
                proxy.close()
            servers.stopAll()
    print(f"cluster_history: {len(report.failed)} target(s) failed"
          + (f": {' '.join(report.failed)}" if report.failed else ""), flush=True)
    if not ran:
        print("cluster_history: a part did not run to the end (see the raw lines)", file=sys.stderr)
        raise SystemExit(2)
    if args.strict and report.failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
