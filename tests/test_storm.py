"""
A bounded random-message storm against a real C{twistd lhttp} node (SPEC
section 7: the server never crashes on any input; message-level problems get
a well-formed error reply on a connection that stays open; protocol-level
problems close with their RFC 6455 code).

A seeded generator makes the messages: random bytes, valid messages,
truncated and mutated valid ones, huge header counts, long header lines,
bad multipart offsets, bad channel names, upstream headers (not allowed
here), invalid UTF-8 in binary frames. They are framed once, before the
storm, and written in large chunks by threads on plain sockets, while a
control pair of ordinary clients keeps doing pub/sub round trips.
"""

import random
import threading
import time

import pytest_twisted
import treq

from lhttp.codec import parse
from lhttp.errors import LHTTPError
from lhttpclients import RawWebSocket, barrier, client, eventually, health

SEED = 20240611
CONNECTIONS = 4
MESSAGES = 100_000
MAX_MESSAGE = 65536

VALID = [
    b"LHTTP/1.0 chat\r\ncontent-type:json\r\npublish:storm.0\r\n\r\n{\"to\":\"jack\"}",
    b"LHTTP/1.0 subpub\r\nsubscribe:storm.0 storm.1 storm.2\r\n\r\n",
    b"LHTTP/1.0 upload\r\nmultipart:0 14\r\n\r\nk1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2",
    b"LHTTP/1.0 leave\r\nunsubscribe:storm.1 storm.2\r\n\r\n",
    b"LHTTP/1.0 ping\r\n\r\n",
    b"LHTTP/1.0 note\r\npublish: storm.4 \r\nx-a:1\r\n\r\nline1\r\nline2",
]
BAD_CHANNELS = ["a*", ">", "a..b", ".a", "a.", "x" * 300, "a\x01b", "storm.*", "*", "a.>"]


class Storm:
    """
    The seeded generator; C{kinds} counts how many messages of each kind.
    """

    def __init__(self, seed):
        self.random = random.Random(seed)
        self.kinds = {}

    def _randomBytes(self):
        r = self.random
        return r.randbytes(r.randrange(0, 200))

    def _valid(self):
        return self.random.choice(VALID)

    def _truncated(self):
        m = self._valid()
        return m[: self.random.randrange(0, len(m))]

    def _mutated(self):
        r = self.random
        m = bytearray(self._valid())
        for _ in range(r.randrange(1, 6)):
            op = r.randrange(3)
            at = r.randrange(len(m) + 1)
            if op == 0 and at < len(m):
                m[at] = r.randrange(256)
            elif op == 1:
                m[at:at] = r.choice([b"\r\n", b":", b" ", b"\x00", b"\xff", b"\r\n\r\n", b"LHTTP/1.0 "])
            elif at < len(m):
                del m[at]
        return bytes(m)

    def _manyHeaders(self):
        n = self.random.randrange(100, 5000)
        return b"LHTTP/1.0 many\r\n" + b"h:v\r\n" * n + b"\r\nbody"

    def _longLine(self):
        n = self.random.randrange(1000, MAX_MESSAGE - 100)
        return b"LHTTP/1.0 long\r\nx-long:" + b"v" * n + b"\r\n\r\n"

    def _badMultipart(self):
        offsets = self.random.choice(
            ["0 99", "5 2", "x", "0 -1", "0 0.5", "", "0 3 3", "99999999999999999999", "0  14"]
        )
        return f"LHTTP/1.0 upload\r\nmultipart:{offsets}\r\n\r\nk1:v1\r\n\r\nbody1".encode()

    def _badChannel(self):
        header = self.random.choice(["subscribe", "publish", "unsubscribe"])
        name = self.random.choice(BAD_CHANNELS)
        return f"LHTTP/1.0 chan\r\n{header}:{name}\r\n\r\n".encode()

    def _upstream(self):
        return b"LHTTP/1.0 up\r\nupstream:POST http://127.0.0.1:1/x\r\n\r\nbody"

    def _invalidUTF8(self):
        return self.random.choice([
            b"LHTTP/1.0 \xff\xfe\r\n\r\n",
            b"LHTTP/1.0 bin\r\nx-\xc3\x28:v\r\n\r\n\xff",
            b"LHTTP/1.0 bin\r\npublish:storm.\xe2\x82\r\n\r\n",
            b"LHTTP/1.0 bin\r\nx:\xed\xa0\x80\r\n\r\nok",
        ])

    KINDS = [
        ("random bytes", _randomBytes, 15),
        ("valid", _valid, 20),
        ("truncated", _truncated, 15),
        ("mutated", _mutated, 25),
        ("many headers", _manyHeaders, 1),
        ("long line", _longLine, 1),
        ("bad multipart", _badMultipart, 8),
        ("bad channel", _badChannel, 8),
        ("upstream", _upstream, 3),
        ("invalid UTF-8", _invalidUTF8, 4),
    ]

    def message(self):
        names, makers, weights = zip(*self.KINDS)
        i = self.random.choices(range(len(names)), weights)[0]
        self.kinds[names[i]] = self.kinds.get(names[i], 0) + 1
        return makers[i](self)


def isText(payload):
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def malformed(payload):
    """
    Whether the codec alone refuses it: the node must answer an error.
    """
    try:
        parse(payload)
    except LHTTPError:
        return True
    return False


class StormConnection(threading.Thread):
    """
    One storm connection: writes its pre-built frames, then a message whose
    error reply marks the end (messages are handled in order), and reads
    every reply meanwhile.
    """

    def __init__(self, port, payloads, endCommand):
        threading.Thread.__init__(self, daemon=True)
        self.ws = RawWebSocket(port)
        assert self.ws.status == 101, self.ws.response
        self.endCommand = endCommand
        frames = [RawWebSocket.frame(p, 1 if isText(p) else 2) for p in payloads]
        frames.append(RawWebSocket.frame(f"LHTTP/1.0 {endCommand}\r\npublish:*\r\n\r\n".encode(), 1))
        self.chunks = [b"".join(frames[i:i + 500]) for i in range(0, len(frames), 500)]
        self.errors = {}
        self.malformedReplies = []
        self.deliveries = 0
        self.closed = None
        self.ended = False
        self.failure = None
        self.writer = threading.Thread(target=self._write, daemon=True)

    def _write(self):
        try:
            for chunk in self.chunks:
                self.ws.sendall(chunk)
        except OSError as e:
            self.failure = f"write: {e!r}"

    def run(self):
        self.writer.start()
        try:
            while not self.ended:
                opcode, payload = self.ws.readFrame()
                if opcode == 8:
                    self.closed = payload
                    return
                self._reply(payload)
        except Exception as e:  # recorded; the test asserts it is None
            self.failure = f"read: {e!r}"
        finally:
            self.ws.close()

    def _reply(self, payload):
        try:
            message = parse(payload)
        except LHTTPError:
            self.malformedReplies.append(payload[:200])
            return
        if message.command != "error":
            self.deliveries += 1
            return
        status = message.getHeader("status", "")
        if not (status.isdigit() and 400 <= int(status) <= 599 and message.getHeader("reason")):
            self.malformedReplies.append(payload[:200])
            return
        self.errors[int(status)] = self.errors.get(int(status), 0) + 1
        if message.getHeader("command") == self.endCommand:
            self.ended = True


@pytest_twisted.ensureDeferred
async def test_randomMessageStorm(startNode):
    node = startNode("--max-message-size", str(MAX_MESSAGE))
    storm = Storm(SEED)
    payloads = [storm.message() for _ in range(MESSAGES)]
    expectedErrors = sum(1 for p in payloads if malformed(p))
    share = MESSAGES // CONNECTIONS
    connections = [
        StormConnection(node.port, payloads[i * share:(i + 1) * share], f"storm-end-{i}")
        for i in range(CONNECTIONS)
    ]

    # The control pair: round trips through the node all along the storm.
    listener = await client(node.url)
    listener.subscribe("control")
    await barrier(listener)
    talker = await client(node.url)
    roundTrips = []

    started = time.monotonic()
    for c in connections:
        c.start()
    seq = 0
    while any(c.is_alive() for c in connections):
        sentAt = time.monotonic()
        talker.publish("control", "ctl", body=str(seq))
        message = await listener.nextMessage(timeout=10)
        assert (message.command, message.body) == ("ctl", str(seq).encode())
        roundTrips.append(time.monotonic() - sentAt)
        seq += 1
        assert time.monotonic() - started < 90, "the storm did not end within 90 s"
    elapsed = time.monotonic() - started

    errors = {}
    for c in connections:
        assert c.failure is None, c.failure
        assert c.closed is None, f"a storm connection was closed: {c.closed}"
        assert c.ended, "the end marker's error reply never came"
        assert not c.malformedReplies, f"replies that are not well-formed: {c.malformedReplies[:5]}"
        for status, n in c.errors.items():
            errors[status] = errors.get(status, 0) + n
    counted = sum(errors.values()) - CONNECTIONS  # less the end markers
    deliveries = sum(c.deliveries for c in connections)
    print(
        f"\nstorm: {MESSAGES} messages ({storm.kinds}) over {CONNECTIONS} connections "
        f"in {elapsed:.1f}s; {counted} error replies by status {errors}, "
        f"{expectedErrors} messages the codec refuses, {deliveries} deliveries; "
        f"{len(roundTrips)} control round trips, slowest {max(roundTrips) * 1000:.0f} ms"
    )
    # Every message the codec refuses got its error reply, and no more
    # errors than messages came back.
    assert expectedErrors <= counted <= MESSAGES
    assert set(errors) <= set(range(400, 600))
    assert len(roundTrips) >= 3
    assert node.alive()
    code, document = await health(node)
    assert code == 200
    metrics = (await (await treq.get(node.httpURL + "metrics")).text())
    served = sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
        if line.startswith("lhttp_error_replies_total{")
    )
    assert served == counted + CONNECTIONS
    # Still an ordinary node afterwards.
    talker.publish("control", "after", body="ok")
    message = await listener.nextMessage(timeout=5)
    assert message.command == "after"


@pytest_twisted.ensureDeferred
async def test_protocolErrorsCloseWithTheirCode(startNode):
    """
    Frames the WebSocket layer refuses close the connection with their RFC
    6455 code, never a silent drop, and the node keeps serving.
    """
    node = startNode("--max-message-size", "4096")
    rng = random.Random(SEED)
    cases = []
    for _ in range(40):
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"])
        cases.append(("invalid UTF-8 in a text frame", RawWebSocket.frame(b"LHTTP/1.0 x\r\n\r\n" + bad, 1), 1007))
        size = rng.randrange(4097, 20000)
        cases.append(("over the size limit", RawWebSocket.frame(b"LHTTP/1.0 big\r\n\r\n".ljust(size, b"x"), 2), 1009))
        cases.append(("reserved opcode", RawWebSocket.frame(b"x", rng.choice([3, 4, 5, 6, 7, 11, 12])), 1002))
        cases.append(("RSV bit without extension", RawWebSocket.frame(b"x", 2, rsv=rng.randrange(1, 8)), 1002))
    wrong = []

    def run():
        for what, frame, expected in cases:
            ws = RawWebSocket(node.port)
            ws.sendall(frame)
            code = ws.closeCode()
            ws.close()
            if code != expected:
                wrong.append((what, code, expected))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    await eventually(lambda: not worker.is_alive(), timeout=60, what="the bad-frame connections")
    print(f"\nprotocol errors: {len(cases)} connections, {len(wrong)} closed wrongly")
    assert not wrong, wrong[:10]
    assert node.alive()
    c = await client(node.url)
    c.subscribe("after")
    await barrier(c)
