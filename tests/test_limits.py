"""
Limits and guards (SPEC section 7) against real nodes: Origins, connection
limit, header limits, slow consumers, dead peers, graceful shutdown.
"""

import signal
import time

import pytest
import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from lhttp.client import connect
from lhttp.codec import parse
from lhttp.errors import MalformedMessage
from lhttp.web.origins import originAllowed
from lhttpclients import barrier, client, eventually
from twisted.internet import reactor


class _Request:
    def __init__(self, origin, host="chat.example.com:8081"):
        self.origin = origin
        self.host = host.split(":")[0]
        self.headers = {"host": host}


class OriginTests(SynchronousTestCase):
    def test_defaultPolicy(self):
        self.assertTrue(originAllowed(_Request(None), ()))
        self.assertTrue(originAllowed(_Request("http://chat.example.com:8081"), ()))
        self.assertTrue(originAllowed(_Request("https://chat.example.com", "chat.example.com"), ()))
        self.assertFalse(originAllowed(_Request("http://evil.example"), ()))
        self.assertFalse(originAllowed(_Request("http://chat.example.com:9999"), ()))
        self.assertFalse(originAllowed(_Request("null"), ()))

    def test_patterns(self):
        allowed = ("https://*.example.org", "http://localhost:3000")
        self.assertTrue(originAllowed(_Request("https://app.example.org"), allowed))
        self.assertTrue(originAllowed(_Request("http://localhost:3000"), allowed))
        self.assertFalse(originAllowed(_Request("https://example.org.evil.com"), allowed))
        self.assertTrue(originAllowed(_Request("http://anything"), ("*",)))


class HeaderLimitTests(SynchronousTestCase):
    def test_tooManyHeaders(self):
        data = b"LHTTP/1.0 c\r\n" + b"h:v\r\n" * 11 + b"\r\n"
        error = self.assertRaises(MalformedMessage, parse, data, 10)
        self.assertEqual((error.status, error.reason), (400, "too many headers"))
        self.assertEqual(len(parse(data, 11).headers), 11)

    def test_lineTooLong(self):
        data = b"LHTTP/1.0 c\r\nh:" + b"v" * 100 + b"\r\n\r\n"
        error = self.assertRaises(MalformedMessage, parse, data, None, 50)
        self.assertEqual(error.reason, "header too long")


@pytest_twisted.ensureDeferred
async def test_foreignOriginRefusedOwnAndAllowedAccepted(startNode):
    node = startNode("--allow-origin", "https://*.example.org")
    own = await connect(reactor, node.url, headers={"Origin": f"http://127.0.0.1:{node.port}"})
    allowed = await connect(reactor, node.url, headers={"Origin": "https://app.example.org"})
    own.sendClose()
    allowed.sendClose()
    with pytest.raises(Exception) as refused:
        await connect(reactor, node.url, headers={"Origin": "http://evil.example"})
    assert "403" in str(refused.value) or "origin" in str(refused.value).lower()


@pytest_twisted.ensureDeferred
async def test_connectionLimitRefusesWith503(startNode):
    node = startNode("--max-connections", "2")
    first = await client(node.url)
    second = await client(node.url)
    with pytest.raises(Exception) as refused:
        await client(node.url)
    assert "503" in str(refused.value) or "maximum" in str(refused.value)
    first.sendClose()
    await first.closed
    third = await client(node.url)
    assert await barrier(third) == []
    assert await barrier(second) == []


@pytest_twisted.ensureDeferred
async def test_headerLimitsGetErrorReplies(startNode):
    node = startNode("--max-headers", "5", "--max-header-length", "100")
    alice = await client(node.url)
    alice.sendLHTTP(b"LHTTP/1.0 c\r\n" + b"h:v\r\n" * 6 + b"\r\n")
    alice.sendLHTTP(b"LHTTP/1.0 c\r\nh:" + b"v" * 200 + b"\r\n\r\n")
    errors = await barrier(alice)
    assert [(e.getHeader("status"), e.getHeader("reason")) for e in errors] == [
        ("400", "too many headers"),
        ("400", "header too long"),
    ]


@pytest_twisted.ensureDeferred
async def test_publishBodyHasTheSameHeaderLimits(startNode):
    import json

    import treq

    node = startNode("--max-headers", "5", "--max-header-length", "100")
    listener = await client(node.url)
    listener.subscribe("room")
    await barrier(listener)
    answers = []
    for body in (
        b"LHTTP/1.0 c\r\npublish:room\r\n" + b"h:v\r\n" * 5 + b"\r\n",
        b"LHTTP/1.0 c\r\npublish:room\r\nh:" + b"v" * 200 + b"\r\n\r\n",
    ):
        response = await treq.post(node.publishURL, data=body, timeout=10)
        answers.append((response.code, json.loads(await response.content())["reason"]))
    assert answers == [(400, "too many headers"), (400, "header too long")]
    assert await barrier(listener) == []


async def metric(node, name):
    """
    The value of one unlabelled metric of the node's C{/metrics}.
    """
    import treq

    response = await treq.get(node.httpURL + "metrics")
    for line in (await response.text()).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


@pytest_twisted.ensureDeferred
async def test_slowConsumerClosedWith1008OthersUnaffected(startNode):
    node = startNode("--max-send-buffer", "262144", "--ping-interval", "0")
    slow = await client(node.url)
    fast = await client(node.url)
    for c in (slow, fast):
        c.subscribe("firehose")
        await barrier(c)
    received = []
    fast.onLHTTPMessage = lambda message: received.append(len(message.body))
    slow.transport.pauseProducing()
    publisher = await client(node.url)
    body = b"x" * 60000
    count = 400
    for n in range(count):
        publisher.publish("firehose", "data", body=body)
        # Paced by the fast reader (at most 3 messages ahead, under its
        # 256 KiB buffer): this process reads for it, and on a busy machine
        # an unpaced publisher made the fast reader a slow consumer too.
        await eventually(lambda: len(received) >= n - 2, timeout=30, interval=0.002,
                         what="the fast reader to keep up")
    await eventually(
        lambda: _over(metric(node, "lhttp_slow_consumer_disconnects_total"), 1),
        what="the node to give up on the slow consumer",
    )
    # It reads again: what was queued, then the close frame saying why.
    slow.transport.resumeProducing()
    await slow.closed
    assert slow.closeCode == 1008
    await eventually(lambda: len(received) == count, timeout=30, what="the fast reader to get everything")
    assert received == [len(body)] * count
    assert fast.closeCode is None
    assert await metric(node, "lhttp_slow_consumer_disconnects_total") == 1


async def _over(value, minimum):
    return (await value) >= minimum


@pytest_twisted.ensureDeferred
async def test_deadPeerDroppedByPings(startNode):
    node = startNode("--ping-interval", "0.5", "--ping-timeout", "1")
    dead = await client(node.url)
    alive = await client(node.url)
    assert await metric(node, "lhttp_connections") == 2
    # It stops reading: no pong will come back.
    dead.transport.pauseProducing()
    start = time.monotonic()
    await eventually(
        lambda: _below(metric(node, "lhttp_connections"), 2), timeout=10,
        what="the server to drop the dead peer",
    )
    assert time.monotonic() - start < 5
    assert await barrier(alive, timeout=5) == []


async def _below(value, limit):
    return (await value) < limit


@pytest_twisted.ensureDeferred
async def test_sigtermClosesClientsWith1001(startNode):
    node = startNode()
    clients = [await client(node.url) for _ in range(3)]
    node.signal(signal.SIGTERM)
    for c in clients:
        await c.closed
    assert [c.closeCode for c in clients] == [1001] * 3
    await eventually(lambda: not node.alive(), timeout=10, what="the node to exit")
    # twistd exits by re-raising the signal once it has shut down cleanly.
    assert node.popen.returncode in (0, -signal.SIGTERM)


@pytest_twisted.ensureDeferred
async def test_serverHeaderNamesLHTTP(lhttpNode):
    import treq

    response = await treq.get(lhttpNode.httpURL)
    await response.content()
    alice = await client(lhttpNode.url)
    assert alice.http_headers.get("server", "").startswith("lhttp")


@pytest_twisted.ensureDeferred
async def test_silentSocketDroppedAfterHandshakeTimeout(startNode):
    import socket

    node = startNode("--handshake-timeout", "1")
    silent = socket.create_connection(("127.0.0.1", node.port))
    silent.settimeout(0)
    start = time.monotonic()

    def closedByServer():
        try:
            return silent.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    try:
        await eventually(closedByServer, timeout=10, what="the server to drop a silent socket")
        assert time.monotonic() - start < 3
    finally:
        silent.close()


@pytest_twisted.ensureDeferred
async def test_sigtermLeavesNATSCleanly(natsServer, startNode):
    import json

    import treq
    from lhttpclients import untilHealth

    node = startNode("--nats", natsServer.url)
    await untilHealth(node, 200)
    alice = await client(node.url)
    alice.subscribe("room")
    await barrier(alice)
    pid = node.popen.pid
    node.signal(signal.SIGTERM)
    await alice.closed
    await eventually(lambda: not node.alive(), timeout=10, what="the node to exit")
    response = await treq.get(natsServer.monitorURL + "/connz?state=closed")
    closed = [c for c in json.loads(await response.content())["connections"]
              if c.get("name", "").endswith(f"pid={pid}")]
    assert [c["reason"] for c in closed] == ["Client Closed"]
    assert alice.closeCode == 1001


@pytest_twisted.ensureDeferred
async def test_idleWebSocketOutlivesHandshakeTimeout(startNode):
    node = startNode("--handshake-timeout", "1", "--ping-interval", "0")
    idle = await client(node.url)
    start = time.monotonic()
    # The HTTP phase's idle timeout must not follow the connection into
    # the WebSocket: three times the timeout later, it still works.
    await eventually(lambda: time.monotonic() - start > 3, timeout=10, what="three seconds")
    assert idle.closeCode is None
    assert await barrier(idle) == []
