"""
A node's one NATS connection (issue 20, item 5,
L{lhttp.brokers.connection.NATSConnection}): the broker, its JetStream
history and the presence engine share it; C{/health} shows it once, with
each one's readiness. Real C{twistd lhttp} nodes on a real
C{nats-server -js}, and L{lhttp.testing.FakeNATS} for what a real server
cannot be made to do on cue.
"""

import json
import signal

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent

from lhttp.brokers.connection import NATSConnection
from lhttp.errors import BrokerUnavailable
from lhttp.brokers.nats import NATSBroker
from lhttp.history import HistoryPolicy
from lhttp.history.jetstream import JetStreamHistory
from lhttp.presence.engine import Member
from lhttp.presence.jetstream import JetStreamPresence
from lhttp.testing import FakeNATS
from lhttpclients import eventually, health, subscribed, untilHealth

SECRET_URL = "nats://alice:s3cret@127.0.0.1:4222"
OPTIONS = ("--history", "room.*=100", "--presence", "room.*", "--presence-events", "room.*")


async def nodeConnections(nats, pid):
    """
    The connections nats-server holds for one node, found by their name,
    which carries the node's process id.
    """
    response = await treq.get(nats.monitorURL + "/connz?limit=1000")
    document = json.loads(await response.content())
    return [c for c in document["connections"] if c.get("name", "").endswith(f"pid={pid}")]


@pytest_twisted.ensureDeferred
async def test_aNodeWithHistoryAndPresenceHoldsOneConnection(jetstream, startNode):
    """
    C{--nats --history --presence}: one NATS connection for the node (two
    before: the broker's and presence's), used by all three, and one
    C{nats} section in C{/health} saying each is ready.
    """
    node = startNode("--nats", jetstream.url, *OPTIONS)
    await untilHealth(node, 200)

    async def presenceReady():
        return (await health(node))[1].get("presence", {}).get("ready") is True

    await eventually(presenceReady, timeout=20, what="presence ready")
    # All three at work: a subscriber (presence entry, history channel),
    # a publish stored in the stream, a presence list read back.
    ann = await subscribed(node.url, "room.1")
    ann.publish("room.1", "chat", body="hi")
    while (message := await ann.nextMessage(10)).command != "chat":
        pass
    assert message.getHeader("offset") is not None, message.toBytes()
    ann.send("presence", [("channel", "room.1")])
    while (reply := await ann.nextMessage(10)).command != "presence":
        pass
    assert reply.getHeader("count") == "1", reply.toBytes()

    connections = await nodeConnections(jetstream, node.popen.pid)
    assert len(connections) == 1, [c.get("name") for c in connections]
    code, document = await health(node)
    assert code == 200
    nats = document["nats"]
    assert nats["connected"] == jetstream.url
    assert nats["ready"] == {"broker": True, "history": True, "presence": True, "control": True}
    assert nats["reconnects"] == 0
    assert "problem" not in nats


@pytest_twisted.ensureDeferred
async def test_oneConnectionThroughANATSRestart(jetstream, startNode):
    """
    NATS restarted: the node's one connection comes back (one, not one
    per engine), counted in C{/health}'s reconnects, and broker, history
    and presence are each ready again on it.
    """
    node = startNode("--nats", jetstream.url, *OPTIONS)
    await untilHealth(node, 200)
    jetstream.restart()

    async def allReadyAgain():
        code, document = await health(node)
        nats = document.get("nats", {})
        return code == 200 and nats.get("reconnects", 0) >= 1 and all(nats["ready"].values())

    await eventually(allReadyAgain, timeout=30, what="everything ready after the restart")
    assert len(await nodeConnections(jetstream, node.popen.pid)) == 1
    assert set((await health(node))[1]["nats"]["ready"]) == {"broker", "history", "presence", "control"}


@pytest_twisted.ensureDeferred
async def test_SIGTERMWritesLeavesBeforeTheSharedConnectionCloses(jetstream, startNode):
    """
    Presence stops before the broker but on the same connection: a node
    stopped with SIGTERM still deletes its clients' entries and publishes
    their leaves (another node hears them), then drains the connection
    once, with nothing in its log about writing after it closed.
    """
    options = ("--nats", jetstream.url, *OPTIONS)
    stopping, staying = startNode(*options), startNode(*options)
    for node in (stopping, staying):
        await untilHealth(node, 200)
    watcher = await subscribed(staying.url, "room.1")
    await subscribed(stopping.url, "room.1")  # the client whose leave is heard
    stopping.signal(signal.SIGTERM)
    heard = []
    while not [m for m in heard if m.command == "leave"]:
        heard.append(await watcher.nextMessage(10))
    assert stopping.popen.wait(15) == -signal.SIGTERM
    log = stopping.log()
    assert "Traceback" not in log, log[-3000:]
    assert "Leaving NATS" not in log, log[-3000:]

    async def listedAlone():
        watcher.send("presence-stats", [("channel", "room.1")])
        while (reply := await watcher.nextMessage(10)).command != "presence-stats":
            pass
        return reply.getHeader("clients") == "1"

    await eventually(listedAlone, timeout=5, what="the leaver's entry deleted")


# With FakeNATS: the connection's own behaviour.


class FailingNATS(FakeNATS):
    """
    A nats-py client whose connect fails, as against a server not there.
    """

    made = []

    def __init__(self):
        FakeNATS.__init__(self)
        FailingNATS.made.append(self)

    async def connect(self, servers, **options):
        self.options = options
        raise ConnectionRefusedError(f"cannot reach {servers[0]}")


async def sharedEngines(fake):
    made = []

    def factory():
        made.append(fake)
        return fake

    connection = NATSConnection([SECRET_URL], reactor, clientFactory=factory)
    broker = NATSBroker([SECRET_URL], reactor, settle=0, connection=connection,
                        history=JetStreamHistory(HistoryPolicy(["room.*=10"])))
    broker.attach(lambda channels, payload: None)
    presence = JetStreamPresence([SECRET_URL], reactor, connection=connection)
    broker.start()
    presence.startService()
    await eventually(lambda: fake.is_connected, timeout=5, what="connected")
    return connection, broker, presence, made


@pytest_twisted.ensureDeferred
async def test_engineSharingOneConnectionMakeOneClient():
    """
    Broker, history and presence given one L{NATSConnection}: one client
    made; C{describe()} names all three, with the URL redacted; presence
    stopping leaves the connection open for the broker, whose stop drains
    it.
    """
    fake = FakeNATS()
    connection, broker, presence, made = await sharedEngines(fake)
    assert len(made) == 1
    assert broker._client is fake and presence._client is fake

    async def allReady():
        return connection.describe()["ready"] == {"broker": True, "history": True,
                                                  "presence": True}

    await eventually(allReady, timeout=5, what="broker, history and presence ready")
    described = connection.describe()
    assert described["connected"] == "nats://alice:***@127.0.0.1:4222"
    # Each writes on it: a presence entry, a stored history message.
    await presence.join("room.1", Member("n-1", "ann"))
    assert await presence.members("room.1") == [Member("n-1", "ann")]
    broker.publish(["room.1"], b"LHTTP/1.0 chat\r\n\r\nhi")
    await broker.confirm()
    assert sorted(fake.js.streams) == ["KV_LHTTP_PRESENCE", "LHTTP_HISTORY"]
    assert len(fake.js.streams["LHTTP_HISTORY"].messages) == 1
    assert fake.connects == 1
    assert "s3cret" not in json.dumps(described)
    await presence.stopService()
    assert fake.is_connected and not fake.is_closed
    await broker.stop()
    assert fake.is_closed


@pytest_twisted.ensureDeferred
async def test_aFailedConnectIsClosedBeforeTheNextAndSaidOnce():
    """
    NATS not there: each failed client is closed before the next one is
    made (never two at once), attempts back off, and the problem is said
    in one line (redacted), not once per attempt.
    """
    FailingNATS.made = []
    connection = NATSConnection([SECRET_URL], reactor, reconnectWait=0.01, maxBackoff=0.05,
                                complainEvery=60, clientFactory=FailingNATS)
    with capturedLogs() as events:
        connection.start()
        await eventually(lambda: len(FailingNATS.made) >= 6, timeout=5, what="six attempts")
        connection.stop()
    for earlier in FailingNATS.made[:-1]:
        assert earlier.is_closed
    lines = [formatEvent(e) for e in events if "Connecting to NATS failed" in formatEvent(e)]
    assert len(lines) == 1, lines
    assert "s3cret" not in lines[0] and "alice:***@" in lines[0]
    assert connection.describe()["problem"]
    count = len(FailingNATS.made)
    await deferLater(reactor, 0.2)
    assert len(FailingNATS.made) == count, "attempts go on after stop"


@pytest_twisted.ensureDeferred
async def test_presenceWithoutJetStreamThenAfterAReconnectThatLostTheBucket():
    """
    On the shared connection: no JetStream yet, presence says so once, is
    not ready and tries again (the broker is ready all along); JetStream
    there, its entries are written; NATS back without the bucket
    (a restart that lost its store), the bucket is made again and the
    entries written again.
    """
    fake = FakeNATS()
    fake.js.available = False
    connection = NATSConnection([SECRET_URL], reactor, clientFactory=lambda: fake)
    broker = NATSBroker([SECRET_URL], reactor, settle=0, connection=connection)
    broker.attach(lambda channels, payload: None)
    presence = JetStreamPresence([SECRET_URL], reactor, connection=connection,
                                 reconnectWait=0.01, maxBackoff=0.05)
    with capturedLogs() as events:
        broker.start()
        presence.startService()
        await eventually(lambda: broker.ready, timeout=5, what="the broker ready")
        # Not connected to the bucket: queued, nobody waits for it.
        assert presence.join("room.1", Member("n-1", "ann")) is None
        await deferLater(reactor, 0.3)
        assert connection.describe()["ready"] == {"broker": True, "presence": False}
        assert presence.describe()["problem"]
        fake.js.available = True
        await eventually(lambda: presence.describe()["ready"], timeout=5, what="presence ready")
    said = [formatEvent(e) for e in events if "bucket cannot be opened" in formatEvent(e)]
    assert len(said) == 1, said

    async def listed():
        try:
            return await presence.members("room.1") == [Member("n-1", "ann")]
        except BrokerUnavailable:
            # The bucket not there yet: a presence request gets a 503.
            return False

    await eventually(listed, timeout=5, what="the entry written")
    # NATS restarted without its store.
    fake.is_connected = False
    await fake.options["disconnected_cb"]()
    fake.js.streams.clear()
    fake.is_connected = True
    fake.stats["reconnects"] += 1
    await fake.options["reconnected_cb"]()
    await eventually(listed, timeout=5, what="the entry written again")
    assert connection.describe()["reconnects"] == 1
    await presence.stopService()
    await broker.stop()
    assert fake.is_closed


@pytest_twisted.ensureDeferred
async def test_historyWithoutJetStreamSaidOnce():
    """
    C{--history} on a NATS without JetStream: the broker is not ready, it
    says why once (it said it every second) and tries again with a
    backoff; once JetStream is there it is ready.
    """
    fake = FakeNATS()
    fake.js.available = False
    broker = NATSBroker([SECRET_URL], reactor, settle=0, reconnectWait=0.01,
                        clientFactory=lambda: fake,
                        history=JetStreamHistory(HistoryPolicy(["room.*=10"])))
    broker.attach(lambda *args: None)
    with capturedLogs() as events:
        broker.start()
        await deferLater(reactor, 2.5)
        assert not broker.ready
        fake.js.available = True
        await eventually(lambda: broker.ready, timeout=10, what="the history ready")
    said = [formatEvent(e) for e in events if "history not ready" in formatEvent(e)]
    assert len(said) == 1, said
    assert "s3cret" not in said[0]
    await broker.stop()
