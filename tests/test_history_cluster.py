"""
History and recovery on a cluster: real C{twistd lhttp --nats --history}
nodes on a real C{nats-server -js} with a file store, real WebSocket
clients. Exact counts: every message once, in order, none missing.
"""

import signal

import pytest_twisted
from nats.aio.client import Client as NATS

from lhttp.brokers.nats import deferred as future
from lhttpclients import barrier, client, health, untilHealth

HISTORY = "room.*=5000"


def node(startNode, jetstream, history=HISTORY, port=None):
    return startNode("--nats", jetstream.url, "--history", history, port=port)


async def ready(*nodes):
    for n in nodes:
        await untilHealth(n, 200, timeout=30)


def subscribeMessage(channel, since=None, epoch=None):
    head = f"LHTTP/1.0 chat\r\nsubscribe:{channel}\r\n"
    if since is not None:
        head += f"since:{since}\r\nepoch:{epoch}\r\n"
    return (head + "\r\n").encode()


async def publishMany(publisher, channel, bodies):
    for body in bodies:
        publisher.send("chat", [("publish", channel)], body.encode())
    await barrier(publisher, timeout=60)


async def receiveBodies(c, count, timeout=20):
    """
    The next C{count} chat messages (and the recovery replies among them).
    """
    chats, recoveries = [], []
    while len(chats) < count:
        message = await c.nextMessage(timeout)
        if message.command == "recovery":
            recoveries.append(message)
        elif message.command == "chat":
            chats.append(message)
    return chats, recoveries


async def position(node, channel, publisher):
    """
    Subscribe on C{node}, see one message, and leave: the offset and epoch
    a client that went away remembers.
    """
    c = await client(node.url)
    c.sendLHTTP(subscribeMessage(channel))
    await barrier(c)
    await publishMany(publisher, channel, ["seen"])
    [seen], _ = await receiveBodies(c, 1)
    assert seen.body == b"seen"
    c.transport.loseConnection()
    return int(seen.getHeader("offset")), seen.getHeader("epoch")


async def recover(node, channel, since, epoch, count):
    c = await client(node.url)
    c.sendLHTTP(subscribeMessage(channel, since, epoch))
    chats, recoveries = await receiveBodies(c, count, timeout=30)
    return c, chats, recoveries


async def missedWhileItsNodeIsDown(startNode, jetstream, channel, count):
    """
    Two nodes; a client on the first sees one message and leaves, the first
    node stops, and C{count} messages are published on the second.

    @return: C{(first node, publisher, since, epoch, missed bodies)}.
    """
    a, b = node(startNode, jetstream), node(startNode, jetstream)
    await ready(a, b)
    publisher = await client(b.url)
    since, epoch = await position(a, channel, publisher)
    a.stop()
    missed = [f"m{i}" for i in range(count)]
    await publishMany(publisher, channel, missed)
    return a, publisher, since, epoch, missed


async def deleteStream(jetstream):
    """
    What an operator deleting the history stream does.
    """
    nc = NATS()
    await future(nc.connect(jetstream.url))
    await future(nc.jsm().delete_stream("LHTTP_HISTORY"))
    await future(nc.close())


def checkExact(chats, expected):
    bodies = [m.body.decode() for m in chats]
    assert bodies == expected, (len(bodies), bodies[:3], bodies[-3:])
    offsets = [int(m.getHeader("offset")) for m in chats]
    assert offsets == sorted(set(offsets)), "offsets increase, none twice"


async def nothingMore(c, channel, publisher):
    """
    After a marker, nothing else arrived (a duplicate would be before it).
    """
    await publishMany(publisher, channel, ["marker"])
    [marker], _ = await receiveBodies(c, 1)
    assert marker.body == b"marker"
    assert c.pending() == 0


@pytest_twisted.ensureDeferred
async def test_recoverThousandPublishedElsewhere(jetstream, startNode):
    """
    Done-means 1: a subscriber leaves, 1,000 messages are published on
    another node, it comes back with its offset: exactly those 1,000 in
    order, then live ones published while it recovered, none twice.
    """
    a, b = node(startNode, jetstream), node(startNode, jetstream)
    await ready(a, b)
    publisher = await client(b.url)
    since, epoch = await position(a, "room.1", publisher)
    missed = [f"m{i}" for i in range(1000)]
    await publishMany(publisher, "room.1", missed)

    c = await client(a.url)
    c.sendLHTTP(subscribeMessage("room.1", since, epoch))
    live = [f"live{i}" for i in range(20)]
    await publishMany(publisher, "room.1", live)
    chats, recoveries = await receiveBodies(c, 1020, timeout=30)
    [recovery] = recoveries
    assert recovery.getHeader("recovered") == "true"
    assert recovery.getHeader("epoch") == epoch
    checkExact(chats, missed + live)
    await nothingMore(c, "room.1", publisher)
    # A thousand JetStream publishes later, the publishing node holds a
    # handful of NATS subscriptions (its consumer, one inbox for acks), not
    # one per publish.
    from test_cluster import natsSubscriptions

    subscriptions = await natsSubscriptions(jetstream, b.popen.pid)
    assert len(subscriptions) <= 4, subscriptions


@pytest_twisted.ensureDeferred
async def test_recoverAcrossNodeRestart(jetstream, startNode):
    a, publisher, since, epoch, missed = await missedWhileItsNodeIsDown(
        startNode, jetstream, "room.2", 300)
    again = node(startNode, jetstream, port=a.port)
    await ready(again)
    c, chats, [recovery] = await recover(again, "room.2", since, epoch, 300)
    assert recovery.getHeader("recovered") == "true"
    checkExact(chats, missed)
    await nothingMore(c, "room.2", publisher)


@pytest_twisted.ensureDeferred
async def test_recoverAcrossNATSRestart(jetstream, startNode):
    """
    With a file store, history outlives nats-server: what was published
    before and after its restart is recovered, the epoch unchanged.
    """
    a, b = node(startNode, jetstream), node(startNode, jetstream)
    await ready(a, b)
    publisher = await client(b.url)
    since, epoch = await position(a, "room.3", publisher)
    # A watcher on the other node: once it has a message, JetStream has
    # stored it (a WebSocket publish is not acknowledged to its sender, and
    # one still unacknowledged when nats-server stops is retried after it,
    # behind later ones).
    watcher = await client(b.url)
    watcher.sendLHTTP(subscribeMessage("room.3"))
    await barrier(watcher)
    before = [f"before{i}" for i in range(100)]
    await publishMany(publisher, "room.3", before)
    stored, _ = await receiveBodies(watcher, 100, timeout=30)
    assert [m.body.decode() for m in stored] == before
    jetstream.restart()
    await ready(a, b)
    after = [f"after{i}" for i in range(100)]
    await publishMany(publisher, "room.3", after)
    c, chats, [recovery] = await recover(a, "room.3", since, epoch, 200)
    assert recovery.getHeader("recovered") == "true"
    assert recovery.getHeader("epoch") == epoch
    checkExact(chats, before + after)
    await nothingMore(c, "room.3", publisher)


@pytest_twisted.ensureDeferred
async def test_olderThanRetention(jetstream, startNode):
    a, b = node(startNode, jetstream, "room.*=10"), node(startNode, jetstream, "room.*=10")
    await ready(a, b)
    publisher = await client(b.url)
    since, epoch = await position(a, "room.4", publisher)
    await publishMany(publisher, "room.4", [f"m{i}" for i in range(50)])
    c, chats, [recovery] = await recover(a, "room.4", since, epoch, 10)
    assert recovery.getHeader("recovered") == "false"
    checkExact(chats, [f"m{i}" for i in range(40, 50)])
    await nothingMore(c, "room.4", publisher)


@pytest_twisted.ensureDeferred
async def test_originalGoNodeInterop(jetstream, startNode):
    """
    A plain NATS publish (what an original Go node sends) on a history
    subject is stored and delivered with its offset; channels without
    history stay plain NATS subjects.
    """
    a = node(startNode, jetstream)
    await ready(a)
    c = await client(a.url)
    c.sendLHTTP(subscribeMessage("room.5 plain"))
    await barrier(c)
    nc = NATS()
    await future(nc.connect(jetstream.url))
    got = []

    async def collect(message):
        got.append(message.data)

    await future(nc.subscribe("room.5", cb=collect))
    await future(nc.publish("room.5", b"LHTTP/1.0 chat\r\n\r\nfrom go"))
    await future(nc.publish("plain", b"LHTTP/1.0 chat\r\n\r\nplain from go"))
    await future(nc.flush())
    chats, _ = await receiveBodies(c, 2)
    byBody = {m.body: m for m in chats}
    assert byBody[b"from go"].getHeader("offset") is not None
    assert byBody[b"plain from go"].getHeader("offset") is None
    publisher = await client(a.url)
    await publishMany(publisher, "room.5", ["from lhttp"])
    await future(nc.flush())
    assert b"LHTTP/1.0 chat\r\npublish:room.5\r\n\r\nfrom lhttp" in got
    await future(nc.close())


@pytest_twisted.ensureDeferred
async def test_streamMadeAgainIsANewEpoch(jetstream, startNode):
    """
    The stream deleted and made again: old offsets mean nothing, and a
    client coming back with them is told it lost messages.
    """
    a = node(startNode, jetstream)
    await ready(a)
    publisher = await client(a.url)
    since, epoch = await position(a, "room.6", publisher)
    a.stop()
    await deleteStream(jetstream)
    again = node(startNode, jetstream, port=a.port)
    await ready(again)
    publisher = await client(again.url)
    await publishMany(publisher, "room.6", ["new"])
    c, chats, [recovery] = await recover(again, "room.6", since, epoch, 1)
    assert recovery.getHeader("recovered") == "false"
    assert recovery.getHeader("epoch") != epoch
    checkExact(chats, ["new"])


@pytest_twisted.ensureDeferred
async def test_recoverAsSoonAsTheRestartedNodeAccepts(jetstream, startNode):
    """
    A client (a browser's SDK, say) that reconnects the moment its
    restarted node accepts connections, before the node has JetStream in
    place, still gets exactly what it missed, recovered:true in the same
    epoch, then live messages: its recovery waits for the history. (Here
    nats-server is paused while the node starts, so the client is surely
    first; before the fix it was told recovered:false.)
    """
    a, publisher, since, epoch, missed = await missedWhileItsNodeIsDown(
        startNode, jetstream, "room.5", 50)
    jetstream.signal(signal.SIGSTOP)
    try:
        again = node(startNode, jetstream, port=a.port)
        c = await client(again.url)
        c.sendLHTTP(subscribeMessage("room.5", since, epoch))
        # A round trip to the node after the subscribe was sent: it has it,
        # and it is not ready.
        assert (await health(again))[0] == 503
        assert c.pending() == 0, "answered before the node has its history"
    finally:
        jetstream.signal(signal.SIGCONT)
    chats, [recovery] = await receiveBodies(c, 50, timeout=30)
    assert (recovery.getHeader("recovered"), recovery.getHeader("epoch")) == ("true", epoch)
    checkExact(chats, missed)
    await ready(again)
    await nothingMore(c, "room.5", publisher)


@pytest_twisted.ensureDeferred
async def test_streamDeletedWhileRunningIsMadeAgain(jetstream, startNode):
    """
    Someone deletes the stream under running nodes: the publish that finds
    no stream is refused (never taken silently), the node makes the stream
    again, and publishes go through in a new epoch.
    """
    import treq

    a = node(startNode, jetstream)
    await ready(a)
    publisher = await client(a.url)
    since, epoch = await position(a, "room.8", publisher)
    subscriber = await client(a.url)
    subscriber.sendLHTTP(subscribeMessage("room.8"))
    await barrier(subscriber)
    await deleteStream(jetstream)

    async def post(body):
        response = await treq.post(
            a.publishURL, data=f"LHTTP/1.0 chat\r\npublish:room.8\r\n\r\n{body}".encode())
        await response.content()
        return response.code

    assert await post("finds no stream") == 503
    await untilHealth(a, 200, timeout=30)
    assert await post("again") == 200
    [delivered], _ = await receiveBodies(subscriber, 1)
    assert delivered.body == b"again"
    assert delivered.getHeader("epoch") != epoch
    c, chats, [recovery] = await recover(a, "room.8", since, epoch, 1)
    assert recovery.getHeader("recovered") == "false"
    checkExact(chats, ["again"])


@pytest_twisted.ensureDeferred
async def test_samePublishIdStoredOnce(jetstream, startNode):
    """
    The stream the node makes deduplicates by Nats-Msg-Id (what the node's
    retry of an unacknowledged publish relies on): the same id twice is
    stored and delivered once.
    """
    a = node(startNode, jetstream)
    await ready(a)
    c = await client(a.url)
    c.sendLHTTP(subscribeMessage("room.9"))
    await barrier(c)
    nc = NATS()
    await future(nc.connect(jetstream.url))
    js = nc.jetstream()
    for body in (b"once", b"once", b"marker"):
        await future(js.publish("room.9", b"LHTTP/1.0 chat\r\n\r\n" + body,
                                headers={"Nats-Msg-Id": "lhttp-test-" + body.decode()}))
    await future(nc.close())
    chats, _ = await receiveBodies(c, 2)
    assert [m.body for m in chats] == [b"once", b"marker"]
