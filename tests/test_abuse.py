"""
Clients that attack a node's memory and sockets, against real C{twistd
lhttp} processes (issue 12): a client that never reads, and a connection
whose messages pile up while it waits.
"""

import time

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from lhttpclients import RawWebSocket, client
from procs import eventually, rss


async def metric(node, name):
    """
    The value of one unlabelled metric of the node's C{/metrics}.
    """
    response = await treq.get(node.httpURL + "metrics")
    for line in (await response.text()).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def serverSocketOpen(serverPort, clientPort):
    """
    Whether the kernel still has the server's end of a loopback TCP
    connection (any state), from C{/proc/net/tcp}.
    """
    local, remote = f"0100007F:{serverPort:04X}", f"0100007F:{clientPort:04X}"
    with open("/proc/net/tcp") as table:
        return any(line.split()[1:3] == [local, remote] for line in table.readlines()[1:])


def rawSubscriber(node, channel, rcvbuf=None):
    """
    A raw client subscribed to C{channel} (the subscription confirmed by a
    round trip), that then reads only when told to.
    """
    raw = RawWebSocket(node.port, rcvbuf=rcvbuf)
    marker = f"subscribed.{channel}"
    raw.sendall(RawWebSocket.frame(
        f"LHTTP/1.0 sub\r\nsubscribe:{channel} {marker}\r\npublish:{marker}\r\n\r\n".encode(),
        opcode=1,
    ))
    while marker.encode() not in raw.readFrame()[1]:
        pass
    return raw


@pytest_twisted.ensureDeferred
async def test_clientThatNeverReadsIsDroppedWithinTheGrace(startNode):
    """
    A client with a tiny receive window that stops reading: once its send
    buffer is over the limit the node gives up on it, and within
    C{--slow-consumer-grace} (plus a little) the socket is gone, though the
    close frame could never be written.
    """
    grace = 2.0
    node = startNode("--max-send-buffer", "65536", "--slow-consumer-grace", str(grace),
                     "--ping-interval", "0")
    stuck = await deferToThread(rawSubscriber, node, "flood", 4096)
    clientPort = stuck.sock.getsockname()[1]
    assert serverSocketOpen(node.port, clientPort)
    publisher = await client(node.url)
    # More than the kernel's buffers on both sides hold.
    for _ in range(100):
        for _ in range(10):
            publisher.publish("flood", "data", body=b"x" * 10000)
        await publisher.sync(timeout=10)
    await eventually(lambda: _atLeast(metric(node, "lhttp_slow_consumer_disconnects_total"), 1),
                     timeout=10, what="the node to give up on the client")
    start = time.monotonic()
    await eventually(lambda: _atMost(metric(node, "lhttp_connections"), 1),
                     timeout=grace + 5, what="the node to drop the client")
    dropped = time.monotonic() - start
    await eventually(lambda: not serverSocketOpen(node.port, clientPort), timeout=5,
                     what="the node to close the client's socket")
    print(f"\nslow consumer dropped {dropped:.2f} s after it was given up on (grace {grace} s)")
    assert dropped < grace + 1.5
    stuck.close()


async def _atLeast(value, minimum):
    return (await value) >= minimum


async def _atMost(value, maximum):
    return (await value) <= maximum


class _Hang(Protocol):
    """
    An HTTP backend that reads and never answers.
    """

    def dataReceived(self, data):
        pass


class _Flood:
    """
    A raw client, in a thread, that sends as much as the node takes and
    keeps count.
    """

    def __init__(self, port, messages):
        self.raw = RawWebSocket(port, timeout=60)
        self.messages = messages
        self.total = sum(len(m) for m in messages)
        self.sent = 0
        self.changed = time.monotonic()

    def run(self):
        for message in self.messages:
            self.raw.sendall(message)
            self.sent += len(message)
            self.changed = time.monotonic()

    def stalled(self, seconds=1.0):
        return self.sent < self.total and time.monotonic() - self.changed > seconds


@pytest_twisted.ensureDeferred
async def test_waitingConnectionIsNotReadWithoutBound(startNode):
    """
    While a connection waits (its upstream slot is taken by a backend that
    does not answer), the messages it keeps sending are not taken without
    bound: the node stops reading from it, its memory stays flat, and once
    the wait is over every message is handled, in order.
    """
    hang = reactor.listenTCP(0, Factory.forProtocol(_Hang), interface="127.0.0.1")
    url = f"http://127.0.0.1:{hang.getHost().port}/"
    try:
        node = startNode("--upstream-allow", url, "--upstream-concurrency", "1",
                         "--upstream-timeout", "3", "--max-queued-bytes", "1048576")
        pid = node.popen.pid
        before = rss(pid)
        upstream = f"LHTTP/1.0 ask\r\nupstream:POST {url}\r\n\r\n".encode()
        # A header makes each one do something (a command with neither a
        # processor nor a reserved header gets a 404 error reply).
        big = b"LHTTP/1.0 bulk\r\nsubscribe:bulk\r\n\r\n" + b"x" * (1000 * 1000)
        last = b"LHTTP/1.0 last\r\nsubscribe:done\r\npublish:done\r\n\r\n"
        frames = [RawWebSocket.frame(m, opcode=1) for m in [upstream, upstream, *[big] * 300, last]]
        flood = _Flood(node.port, frames)
        sending = deferToThread(flood.run)
        await eventually(flood.stalled, timeout=20, what="the node to stop reading")
        grown = rss(pid) - before
        print(f"\nwhile waiting: the node took {flood.sent / 2**20:.1f} MiB of "
              f"{flood.total / 2**20:.1f} MiB; its RSS grew {grown / 2**20:.1f} MiB")
        assert flood.sent < flood.total / 4
        assert grown < 64 * 2**20
        await sending
        # Upstream answers come when they come: read until the last
        # message's publish and both 504s are in.
        replies = await deferToThread(_readUntil, flood.raw, lambda got: (
            any(r.startswith(b"LHTTP/1.0 last") for r in got)
            and sum(r.startswith(b"LHTTP/1.0 error") for r in got) == 2
        ))
        statuses = [r.split(b"status:")[1][:3] for r in replies if r.startswith(b"LHTTP/1.0 error")]
        assert statuses == [b"504", b"504"]
        assert len(replies) == 3
        flood.raw.close()
    finally:
        await hang.stopListening()


def _readUntil(raw, done, timeout=30):
    deadline = time.monotonic() + timeout
    raw.sock.settimeout(timeout)
    got = []
    while not done(got):
        assert time.monotonic() < deadline, f"gave up waiting; read {got!r}"[:2000]
        got.append(raw.readFrame()[1])
    return got


@pytest_twisted.ensureDeferred
async def test_messageLevelAbuseGetsClearErrors(lhttpNode):
    """
    One publish naming a flood of channels, invisible characters in channel
    names, a malformed message, a multipart part with a flood of headers:
    each gets a clear error reply naming its command, and nothing else
    happens (a subscriber of the named channels gets nothing).
    """
    node = lhttpNode
    watcher = await client(node.url)
    watcher.subscribe("c0 c63 c64")
    await watcher.sync(timeout=10)
    attacker = await client(node.url)
    many = " ".join(f"c{i}" for i in range(65))
    cases = [
        (f"LHTTP/1.0 flood\r\npublish:{many}\r\n\r\nx".encode(), "400", "too many channels", "flood"),
        ("LHTTP/1.0 bidi\r\nsubscribe:c0\u202e\r\n\r\n".encode(), "400", "bad channel name", "bidi"),
        ("LHTTP/1.0 nbsp\r\npublish:c0\u00a0c63\r\n\r\nx".encode(), "400", "bad channel name", "nbsp"),
        (b"LHTTP/1.0 broken\r\nnocolon\r\n\r\n", "400", "malformed message", "broken"),
        (b"LHTTP/1.0 parts\r\nmultipart:0\r\npublish:c0\r\n\r\n" + b"h:v\r\n" * 101 + b"\r\nbody",
         "400", "too many headers", "parts"),
    ]
    for data, status, reason, command in cases:
        attacker.sendLHTTP(data)
        reply = await attacker.nextMessage(10)
        assert (reply.command, reply.getHeader("status"), reply.getHeader("reason"),
                reply.getHeader("command")) == ("error", status, reason, command)
    response = await treq.post(node.publishURL, data=f"LHTTP/1.0 x\r\npublish:{many}\r\n\r\n".encode())
    assert response.code == 400
    assert (await response.json())["reason"] == "too many channels"
    # At the limit, it works: one copy per channel the watcher is on (c0
    # and c63), and nothing of the refused messages arrived before it.
    fine = " ".join(f"c{i}" for i in range(64))
    attacker.send("fine", [("publish", fine)], b"at the limit")
    await attacker.sync(timeout=10)
    await watcher.sync(timeout=10)
    bodies = [(await watcher.nextMessage(1)).body for _ in range(watcher.pending())]
    assert bodies == [b"at the limit"] * 2
