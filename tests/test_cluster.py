"""
A cluster over a real C{nats-server}: real C{twistd lhttp --nats} nodes,
real WebSocket clients, and a raw nats-py client playing the original Go
node (SPEC section 6).
"""

import asyncio
import json

import pytest
import pytest_twisted
import treq
from nats.aio.client import Client as NATS
from twisted.internet.defer import Deferred

from lhttpclients import barrier, client, eventually, health, subscribed, untilHealth


def future(coroutine):
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


@pytest.fixture
def cluster(natsServer, startNode):
    """
    Three nodes on one NATS.
    """
    return [startNode("--nats", natsServer.url) for _ in range(3)]


async def receiveUntil(c, done, timeout=10):
    """
    What arrives at C{c} until C{done(got)} holds (each message waited for
    at most C{timeout} seconds).
    """
    got = []
    while not done(got):
        got.append(await c.nextMessage(timeout))
    return got


def endsWith(body):
    return lambda got: bool(got) and got[-1].body == body


@pytest_twisted.ensureDeferred
async def test_threeNodesExactlyOnce(cluster):
    for node in cluster:
        await untilHealth(node, 200)
    subscribers = [await subscribed(node.url, "room other") for node in cluster]
    publishers = [await client(node.url) for node in cluster]

    sent = []
    for i, publisher in enumerate(publishers):
        message = f"LHTTP/1.0 chat\r\npublish:room\r\n\r\nws from node {i}".encode()
        publisher.sendLHTTP(message)
        sent.append(message)
    for i, node in enumerate(cluster):
        message = f"LHTTP/1.0 notice\r\npublish:room\r\n\r\nhttp to node {i}".encode()
        response = await treq.post(node.publishURL, data=message)
        assert response.code == 200
        await response.content()
        sent.append(message)

    for subscriber in subscribers:
        got = await receiveUntil(subscriber, lambda got: len(got) >= len(sent))
        assert sorted(m.toBytes() for m in got) == sorted(sent)
    # And nothing more: a marker from each node is all that comes next (a
    # duplicate would come before the marker of the node it came through).
    for i, publisher in enumerate(publishers):
        publisher.publish("room", "marker", body=f"end {i}")
    for subscriber in subscribers:
        rest = await receiveUntil(subscriber, lambda got: sum(m.command == "marker" for m in got) == 3)
        assert [m.command for m in rest] == ["marker"] * 3

    # Unsubscribe on node 0 works for publishes from node 2.
    subscribers[0].unsubscribe("room")
    await barrier(subscribers[0])
    publishers[2].publish("room", "chat", body="after unsubscribe")
    publishers[2].publish("other", "chat", body="still on other")
    # One publisher: its messages arrive in order, so "still on other" is last.
    last = endsWith(b"still on other")
    assert [m.body for m in await receiveUntil(subscribers[0], last)] == [b"still on other"]
    assert [m.body for m in await receiveUntil(subscribers[1], last)] == [b"after unsubscribe", b"still on other"]


@pytest_twisted.ensureDeferred
async def test_rawNATSInteropBothWays(natsServer, startNode):
    """
    A raw nats-py client does what an original Go node does: the subject is
    the channel, the payload the serialized LHTTP message.
    """
    node = startNode("--nats", natsServer.url)
    await untilHealth(node, 200)
    goNode = NATS()
    await future(goNode.connect(natsServer.url))
    received = []

    async def onMessage(message):
        received.append((message.subject, message.data))

    try:
        await future(goNode.subscribe("from_python", cb=onMessage))
        await future(goNode.flush())
        alice = await subscribed(node.url, "from_go")

        fromGo = b"LHTTP/1.0 chat\r\npublish:from_go\r\nnick:gopher\r\n\r\nhello from Go"
        await future(goNode.publish("from_go", fromGo))
        assert (await alice.nextMessage(10)).toBytes() == fromGo

        fromPython = b"LHTTP/1.0 chat\r\npublish:from_python\r\n\r\nhello from Python"
        alice.sendLHTTP(fromPython)
        await eventually(lambda: received, timeout=10, what="the Go side to receive")
        assert received == [("from_python", fromPython)]
    finally:
        await future(goNode.close())


async def natsSubscriptions(natsServer, pid):
    """
    The channel subjects the NATS server holds for one node's connection,
    found by the connection name, which carries the node's process id (the
    node's own subjects, C{_lhttp.control} for /api, are left out).
    """
    response = await treq.get(natsServer.monitorURL + "/connz?subs=1")
    document = json.loads(await response.content())
    [connection] = [c for c in document["connections"] if c.get("name", "").endswith(f"pid={pid}")]
    return sorted(subject for subject in connection.get("subscriptions_list", [])
                  if not subject.startswith("_lhttp."))


@pytest_twisted.ensureDeferred
async def test_oneNATSSubscriptionPerLocalChannel(natsServer, startNode):
    node = startNode("--nats", natsServer.url)
    await untilHealth(node, 200)
    pid = node.popen.pid
    alice = await subscribed(node.url, "a b")
    bob = await subscribed(node.url, "b c")

    async def natsHas(expected):
        return await natsSubscriptions(natsServer, pid) == expected

    # The barriers' private channels come and go; wait until they are gone.
    await eventually(lambda: natsHas(["a", "b", "c"]), what="NATS to hold a, b, c")
    assert (await health(node))[1]["broker"]["subscriptions"] == 3

    alice.unsubscribe("a b")
    await eventually(lambda: natsHas(["b", "c"]), what="NATS to drop 'a' (and barriers)")
    bob.sendClose()
    await bob.closed
    await eventually(lambda: natsHas([]), what="NATS to drop every subscription")
    assert (await health(node))[1]["broker"]["subscriptions"] == 0


@pytest_twisted.ensureDeferred
async def test_wildcardsRefused(natsServer, startNode):
    node = startNode("--nats", natsServer.url)
    await untilHealth(node, 200)
    alice = await client(node.url)
    for bad in (">", "*", "a.*", "a.>", "a..b"):
        alice.send("sub", [("subscribe", bad)])
        reply = await alice.nextMessage(10)
        assert (reply.command, reply.getHeader("status")) == ("error", "400"), bad
    response = await treq.post(node.publishURL, data=b"LHTTP/1.0 x\r\npublish:>\r\n\r\n")
    assert response.code == 400
    await response.content()


@pytest_twisted.ensureDeferred
async def test_natsDownAtStartup(startNode):
    from procs import NATSServer, freePort

    port = freePort()
    node = startNode("--nats", f"nats://127.0.0.1:{port}")
    code, document = await health(node)
    assert code == 503 and document["ready"] is False
    publisher = await client(node.url)
    publisher.publish("room", "chat", body="too early")
    refused = await publisher.nextMessage(10)
    assert refused.getHeader("status") == "503"
    response = await treq.post(node.publishURL, data=b"LHTTP/1.0 x\r\npublish:room\r\n\r\n")
    assert response.code == 503
    await response.content()

    nats = NATSServer(port=port).waitReady()
    try:
        seconds = await untilHealth(node, 200, timeout=15)
        assert seconds < 10
        alice = await subscribed(node.url, "room")
        publisher.publish("room", "chat", body="now")
        assert (await alice.nextMessage(10)).body == b"now"
    finally:
        nats.stop()


@pytest_twisted.ensureDeferred
async def test_credentialsNotShown(startNode):
    """
    A NATS URL with a password: the node connects, and the password shows
    neither in the unauthenticated C{/health} nor in the log.
    """
    from procs import NATSServer

    nats = NATSServer(args=["--user", "alice", "--pass", "s3cret-pw"]).waitReady()
    try:
        url = f"nats://alice:s3cret-pw@127.0.0.1:{nats.port}"
        node = startNode("--nats", url)
        await untilHealth(node, 200)
        alice = await subscribed(node.url, "room")
        alice.publish("room", "chat", body="hi")
        assert (await alice.nextMessage(10)).body == b"hi"
        code, document = await health(node)
        assert "s3cret-pw" not in json.dumps(document)
        assert f"alice:***@127.0.0.1:{nats.port}" in json.dumps(document)
        # From the environment, not the command line (ps shows that).
        fromEnv = startNode(env={"LHTTP_NATS_URL": url})
        await untilHealth(fromEnv, 200)
        assert (await health(fromEnv))[1]["broker"]["kind"] == "nats"
        node.stop()
        fromEnv.stop()
        assert "s3cret-pw" not in node.log() + fromEnv.log()
        assert "alice:***@" in node.log()
    finally:
        nats.stop()


@pytest_twisted.ensureDeferred
async def test_subjectPrefix(natsServer, startNode):
    """
    With C{--nats-prefix}, channels live under the prefix: other services
    on the account do not see them as bare subjects, and two prefixes are
    two separate clusters on one NATS.
    """
    nodes = [startNode("--nats", natsServer.url, "--nats-prefix", "app1") for _ in range(2)]
    other = startNode("--nats", natsServer.url, "--nats-prefix", "app2")
    for node in (*nodes, other):
        await untilHealth(node, 200)
    watcher = NATS()
    await future(watcher.connect(natsServer.url))
    seen = []

    async def onMessage(message):
        seen.append(message.subject)

    try:
        await future(watcher.subscribe(">", cb=onMessage))
        await future(watcher.flush())
        alice = await subscribed(nodes[0].url, "room")
        stranger = await subscribed(other.url, "room")
        publisher = await client(nodes[1].url)
        publisher.publish("room", "chat", body="app1 only")
        assert (await alice.nextMessage(10)).body == b"app1 only"
        await eventually(lambda: "app1.room" in seen, timeout=10, what="the prefixed subject")
        assert "room" not in seen
        # The stranger's subject "app2.room" saw nothing (the watcher sees
        # every subject); a marker on it is the first thing the stranger gets.
        assert "app2.room" not in seen
        await future(watcher.publish("app2.room", b"LHTTP/1.0 marker\r\npublish:room\r\n\r\nend"))
        assert (await stranger.nextMessage(10)).command == "marker"
    finally:
        await future(watcher.close())
