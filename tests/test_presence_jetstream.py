"""
The JetStream presence engine's reads and its connection (issue 19, item
3): a list never misses a subscribed client, whatever order nats-py hands
the values and its markers in; against a nats-server without JetStream it
holds one connection (the node's one, shared with the broker) and says so
once.
"""

import asyncio
import json
import time
from types import SimpleNamespace

import pytest_twisted
from twisted.internet import reactor

from lhttp.presence.engine import Member
from lhttp.presence.jetstream import JetStreamPresence, keyFor
from lhttp.presence.policy import escapeChannel
from twisted.internet.task import deferLater

from lhttpclients import eventually, health, subscribed, untilHealth


class EarlyMarkerBucket:
    """
    What nats-py does in nats-io/nats.py#842: the server has delivered the
    channel's values but the client has not handed them on yet when it
    asks what is pending, so the key-value watcher gives its "current
    values done" marker (L{None}) before them; a consumer's messages come
    a moment after its C{consumer_info} says nothing is pending.

    @ivar values: key -> value, in the bucket.
    """

    def __init__(self, bucket, values):
        self.prefix = f"$KV.{bucket}."
        self.values = values

    def _matching(self, pattern):
        token = pattern.rpartition(".")[0]
        return [(k, v) for k, v in sorted(self.values.items())
                if k.rpartition(".")[0] == token]

    # The key-value watcher (what the engine used to read with).

    async def watch(self, keys, **kwargs):
        matching = self._matching(keys)
        updates = asyncio.Queue()
        updates.put_nowait(None)
        for key, value in matching:
            updates.put_nowait(SimpleNamespace(key=key, value=value))
        updates.put_nowait(None)

        class Watcher:
            async def updates(self, timeout):
                return await asyncio.wait_for(updates.get(), timeout)

            async def stop(self):
                pass

        return Watcher()

    # A consumer (what it reads with now).

    async def subscribe(self, subject, cb=None, **kwargs):
        matching = self._matching(subject[len(self.prefix):])
        messages = [
            SimpleNamespace(subject=self.prefix + key, data=value, headers=None,
                            metadata=SimpleNamespace(num_pending=len(matching) - i - 1))
            for i, (key, value) in enumerate(matching)
        ]

        async def deliverLater():
            await asyncio.sleep(0.01)
            for message in messages:
                await cb(message)

        asyncio.ensure_future(deliverLater())

        class Subscription:
            async def consumer_info(self):
                # Everything was sent already: nothing pending.
                return SimpleNamespace(
                    num_pending=0, delivered=SimpleNamespace(consumer_seq=len(messages)))

            async def unsubscribe(self):
                pass

        return Subscription()


def connectedEngine(values):
    engine = JetStreamPresence(["nats://127.0.0.1:1"], reactor, bucket="B")
    fake = EarlyMarkerBucket("B", values)
    engine._client = SimpleNamespace(is_connected=True)
    engine._kv = fake
    engine._js = fake
    return engine


@pytest_twisted.ensureDeferred
async def test_aListWaitsForTheValuesAnEarlyMarkerWouldSkip():
    values = {
        keyFor("room.1", "n1-1"): json.dumps({"user": "ann"}).encode(),
        keyFor("room.1", "n1-2"): b"{}",
        keyFor("room.2", "n1-3"): json.dumps({"user": "carl"}).encode(),
    }
    engine = connectedEngine(values)
    members = await engine.members("room.1")
    assert members == [Member("n1-1", "ann"), Member("n1-2")]
    assert await engine.members("room.3") == []


def test_keysAreTheEscapedChannel():
    assert keyFor("room.1", "a-1").startswith(escapeChannel("room.1") + ".")


async def _listings(c, count):
    """
    Ask C{count} presence (and presence-stats) questions, a few at a time;
    return every reply's count.
    """
    counts = []
    for start in range(0, count, 10):
        for i in range(10):
            c.send("presence" if i % 2 else "presence-stats", [("channel", "room.1")])
        for i in range(10):
            reply = await c.nextMessage(10)
            assert reply.command in ("presence", "presence-stats"), reply.toBytes()
            counts.append(int(reply.getHeader("count") or reply.getHeader("clients")))
    return counts


@pytest_twisted.ensureDeferred
async def test_everyListHasEverySubscriber(jetstream, startNode):
    """
    Four clients on two nodes subscribed; 400 lists and counts asked
    while they stay: every one has all four (the watcher's early marker
    made 4 to 11 in 1,000 say nobody).
    """
    nodes = [startNode("--nats", jetstream.url, "--presence", "room.*") for _ in range(2)]
    for node in nodes:
        await untilHealth(node, 200)
    clients = []
    for i in range(4):
        c = await subscribed(nodes[i % 2].url, "room.1")
        clients.append(c)
    counts = await _listings(clients[0], 200) + await _listings(clients[3], 200)
    wrong = [n for n in counts if n != 4]
    assert wrong == [], f"{len(wrong)} of {len(counts)} lists were short: {wrong[:10]}"


def _connz(nats):
    import urllib.request

    with urllib.request.urlopen(nats.monitorURL + "/varz", timeout=5) as response:
        varz = json.loads(response.read())
    return varz["connections"], varz["total_connections"]


@pytest_twisted.ensureDeferred
async def test_withoutJetStreamOneConnectionAndOneLogLine(natsServer, startNode):
    """
    C{--nats} and C{--presence} against a nats-server without JetStream
    (the README's old cluster block): one NATS connection for the node,
    the problem said once in one line, presence shown not ready in
    C{/health}, and presence requests answered 503 (before: 1,621
    connections and 9,951 log lines in 20 s).
    """
    node = startNode("--nats", natsServer.url, "--presence", "room.*")
    await untilHealth(node, 200)

    async def presenceNotReady():
        code, document = await health(node)
        presence = document.get("presence", {})
        return presence.get("ready") is False and bool(presence.get("problem"))

    await eventually(presenceNotReady, timeout=20, what="/health to show presence not ready")
    c = await subscribed(node.url, "room.1")
    c.send("presence", [("channel", "room.1")])
    refused = await c.nextMessage(10)
    assert (refused.command, refused.getHeader("status")) == ("error", "503"), refused.toBytes()

    _, totalBefore = _connz(natsServer)
    linesBefore = len(node.log().splitlines())
    samples = []
    until = time.monotonic() + 6
    while time.monotonic() < until:
        samples.append(_connz(natsServer)[0])
        await deferLater(reactor, 0.5)
    _, totalAfter = _connz(natsServer)
    log = node.log()
    # The node's one NATS connection, shared by the broker and presence
    # (two before issue 20), none made again.
    assert max(samples) == 1, samples
    assert totalAfter == totalBefore, (totalBefore, totalAfter)
    assert len(log.splitlines()) - linesBefore <= 2, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    said = [line for line in log.splitlines() if "JetStream bucket cannot be opened" in line]
    assert len(said) == 1, said
    assert "-js" in said[0]


@pytest_twisted.ensureDeferred
async def test_aNodeStoppedNormallyTellsItsClientsLeaves(jetstream, startNode):
    """
    SIGTERM on a node: its clients' entries are deleted and their leaves
    published before it exits, so another node's subscriber hears them
    and no longer lists them, at once rather than after the TTL (15 s).
    """
    import signal

    options = ("--nats", jetstream.url, "--presence", "room.*", "--presence-events", "room.*",
               "--presence-ttl", "15")
    stopping, staying = startNode(*options), startNode(*options)
    for node in (stopping, staying):
        await untilHealth(node, 200)
    watcher = await subscribed(staying.url, "room.1")
    leavers = []
    for i in range(3):
        c = await subscribed(stopping.url, "room.1 room.2")
        leavers.append(c)
    heard = []

    async def count():
        watcher.send("presence-stats", [("channel", "room.1")])
        while True:
            message = await watcher.nextMessage(10)
            if message.command == "presence-stats":
                return int(message.getHeader("clients"))
            heard.append(message)

    await eventually(lambda: _eq(count(), 4), timeout=10, what="four listed")
    stopped = time.monotonic()
    stopping.signal(signal.SIGTERM)
    await eventually(lambda: _eq(count(), 1), timeout=10, what="the leavers gone from the list")
    took = time.monotonic() - stopped
    assert took < 5, took
    while len([m for m in heard if m.command == "leave"]) < 3:
        heard.append(await watcher.nextMessage(10))
    leaves = [m.getHeader("client") for m in heard if m.command == "leave"]
    assert len(leaves) == len(set(leaves)) == 3, [m.toBytes() for m in heard]
    # twistd stops cleanly, then exits by the signal it got.
    assert stopping.popen.wait(15) == -signal.SIGTERM
    assert "Traceback" not in stopping.log()


async def _eq(awaitable, value):
    return (await awaitable) == value
