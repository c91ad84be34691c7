"""
History channels on a cluster, served per channel (issue 20, items 1-4):
real C{twistd lhttp --nats --history} nodes on a real C{nats-server -js},
real WebSocket clients, NATS's own counts (C{/connz}) as the measure.

  - A node receives a history channel's messages from NATS only while it
    has a local subscriber on it.
  - Every message carries C{prev}; a node whose NATS link is cut fills the
    gap from the stream: its subscriber gets every message once, in order,
    without reconnecting.
  - Reads are batched: a recovery of 1,000 messages and C{history limit:1}
    cost a request or two.
  - The stream has one owner: a node with other limits refuses to start,
    unless told to change the stream.
"""

import json
import time

import pytest_twisted
import treq
from nats.aio.client import Client as NATS
from twisted.internet import reactor
from twisted.internet.task import deferLater

from lhttp.brokers.nats import deferred as future
from lhttpclients import barrier, client, health, subscribed, untilHealth
from procs import LHTTPNode, eventually
from test_ack_cluster import StallingProxy

HISTORY = "hist.*=20000"


def startNodes(startNode, url, count, *options):
    return [startNode("--nats", url, "--history", HISTORY, *options) for _ in range(count)]


async def connz(natsServer):
    """
    nats-server's connections, by the process id in their name.
    """
    response = await treq.get(natsServer.monitorURL + "/connz?limit=1000")
    document = json.loads(await response.content())
    return {int(c["name"].rpartition("pid=")[2]): c for c in document["connections"]
            if "pid=" in c.get("name", "")}


async def fromNATS(natsServer, node):
    """
    The messages nats-server sent to a node's connection, and those it took
    from it.
    """
    connection = (await connz(natsServer))[node.popen.pid]
    return connection["out_msgs"], connection["in_msgs"]


async def chats(c, count, timeout=30):
    """
    The next C{count} C{chat} messages; anything else is a failure.
    """
    got = []
    while len(got) < count:
        message = await c.nextMessage(timeout)
        assert message.command == "chat", message.toBytes()[:300]
        got.append(message)
    return got


def assertContinuous(messages, channel):
    """
    Each message's C{prev} is the offset of the one before it: nothing
    missing, nothing twice, in order.
    """
    offsets = [int(m.getHeader("offset")) for m in messages]
    prevs = [int(m.getHeader("prev")) for m in messages]
    assert offsets == sorted(set(offsets)), f"{channel}: out of order or twice"
    assert prevs[1:] == offsets[:-1], f"{channel}: a gap in prev"


@pytest_twisted.ensureDeferred
async def test_onlyServingNodesReceive(startNode, jetstream):
    """
    Three nodes; every subscriber on A, the publisher on C: B, which serves
    none of the channels, gets (almost) nothing from NATS, where it used
    to get every history message through its ordered consumer.
    """
    a, b, c = startNodes(startNode, jetstream.url, 3)
    for node in (a, b, c):
        await untilHealth(node, 200, timeout=30)
    channels = [f"hist.{i}" for i in range(10)]
    subscriber = await subscribed(a.url, " ".join(channels))
    publisher = await client(c.url)
    before = {n: await fromNATS(jetstream, n) for n in (a, b, c)}
    perChannel = 100
    for i in range(perChannel):
        for channel in channels:
            publisher.send("chat", [("publish", channel)], b"%d" % i)
    await barrier(publisher, timeout=60)
    got = await chats(subscriber, perChannel * len(channels))
    for channel in channels:
        mine = [m for m in got if m.getHeader("channel") == channel]
        assert [m.body for m in mine] == [b"%d" % i for i in range(perChannel)]
        assertContinuous(mine, channel)
    after = {n: await fromNATS(jetstream, n) for n in (a, b, c)}
    out = {name: after[n][0] - before[n][0] for name, n in zip("ABC", (a, b, c))}
    print(f"\nfrom NATS during {perChannel * len(channels)} history messages on "
          f"{len(channels)} channels served by A, published on C: A {out['A']}, B {out['B']}, "
          f"C {out['C']} (C: its publish acknowledgements) -> B/A = {out['B'] / out['A']:.3%}")
    assert out["A"] >= perChannel * len(channels)
    assert out["B"] <= 0.01 * out["A"]


class CuttableProxy(StallingProxy):
    """
    A node's link to nats-server that can be cut: its connections are
    dropped, and new ones get nothing until it is resumed.
    """

    def cut(self):
        self.stall()
        transports, self.transports = self.transports, []
        for transport in transports:
            transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_cutLinkFilledByNode(startNode, jetstream):
    """
    B's NATS link is cut for 2 s while A's publisher goes on: B's
    subscriber gets every message once, in order, each with the previous
    one's offset as C{prev}, on the same connection, with no notice; B read
    what it missed from the stream.
    """
    proxy = CuttableProxy(jetstream.url)
    try:
        [a] = startNodes(startNode, jetstream.url, 1)
        [b] = startNodes(startNode, proxy.url, 1)
        for node in (a, b):
            await untilHealth(node, 200, timeout=30)
        subscriber = await subscribed(b.url, "hist.cut")
        publisher = await client(a.url)
        total = 400
        sent = 0
        cutAt = restoreAt = None
        start = time.monotonic()
        while sent < total:
            for _ in range(10):
                publisher.send("chat", [("publish", "hist.cut")], b"%d" % sent)
                sent += 1
            await deferLater(reactor, 0.05)
            if cutAt is None and sent >= 60:
                proxy.cut()
                cutAt = time.monotonic()
            if restoreAt is None and cutAt is not None and time.monotonic() - cutAt >= 2.0:
                proxy.resume()
                restoreAt = time.monotonic()
        if restoreAt is None:
            await deferLater(reactor, max(0, 2.0 - (time.monotonic() - cutAt)))
            proxy.resume()
        await barrier(publisher, timeout=30)
        got = await chats(subscriber, total, timeout=30)
        assert [m.body for m in got] == [b"%d" % i for i in range(total)]
        assertContinuous(got, "hist.cut")
        assert subscriber.transport.connected
        described = (await health(b))[1]["broker"]
        print(f"\nB cut from NATS for 2 s during {total} messages over "
              f"{time.monotonic() - start:.1f} s: reconnects {described['reconnects']}, "
              f"history {described['history']}")
        assert described["reconnects"] >= 1
        assert described["history"]["filled"] >= 1
        # Nothing more, no notice (once B takes publishes again, for the
        # barrier's).
        await untilHealth(b, 200, timeout=30)
        assert await barrier(subscriber) == []
    finally:
        await proxy.close()


@pytest_twisted.ensureDeferred
async def test_readsAreBatched(startNode, jetstream):
    """
    A recovery of 1,000 messages, and C{history limit:1}, cost a request
    or two each, C{history limit:1000} a few (counted by nats-server: the
    messages the node sent it), where they cost one a message.
    """
    # No announcement to the cluster (docs/operations.rst) in the counts.
    [node] = startNodes(startNode, jetstream.url, 1, "--heartbeat-interval", "3600")
    await untilHealth(node, 200, timeout=30)
    publisher = await client(node.url)
    first = await subscribed(node.url, "hist.r")
    publisher.send("chat", [("publish", "hist.r")], b"seen")
    [seen] = await chats(first, 1)
    since, epoch = seen.getHeader("offset"), seen.getHeader("epoch")
    first.sendClose(1000)
    count = 1000
    for i in range(count):
        publisher.send("chat", [("publish", "hist.r")], b"%d" % i)
    await barrier(publisher, timeout=60)
    await deferLater(reactor, 0.5)

    before = (await fromNATS(jetstream, node))[1]
    started = time.monotonic()
    again = await client(node.url)
    again.sendLHTTP(
        f"LHTTP/1.0 chat\r\nsubscribe:hist.r\r\nsince:{since}\r\nepoch:{epoch}\r\n\r\n".encode())
    recovery = await again.nextMessage(30)
    assert recovery.command == "recovery", recovery.toBytes()
    assert (recovery.getHeader("recovered"), recovery.getHeader("count")) == ("true", str(count))
    got = await chats(again, count)
    took = time.monotonic() - started
    assert [m.body for m in got] == [b"%d" % i for i in range(count)]
    assert int(got[0].getHeader("prev")) == int(since)
    assertContinuous(got, "hist.r")
    recoveryRequests = (await fromNATS(jetstream, node))[1] - before

    before = (await fromNATS(jetstream, node))[1]
    again.sendLHTTP(b"LHTTP/1.0 history\r\nchannel:hist.r\r\nlimit:1\r\n\r\n")
    reply = await again.nextMessage(10)
    assert (reply.command, reply.getHeader("count")) == ("history", "1")
    historyRequests = (await fromNATS(jetstream, node))[1] - before

    before = (await fromNATS(jetstream, node))[1]
    again.sendLHTTP(b"LHTTP/1.0 history\r\nchannel:hist.r\r\nlimit:1000\r\n\r\n")
    reply = await again.nextMessage(10)
    assert (reply.command, reply.getHeader("count")) == ("history", "1000")
    pageRequests = (await fromNATS(jetstream, node))[1] - before
    print(f"\nrequests to NATS: recovery of {count} messages {recoveryRequests} "
          f"(subscribe, read; {took * 1000:.0f} ms to the client), history limit:1 "
          f"{historyRequests}, history limit:1000 {pageRequests}")
    # Where the last 1,000 start, by bisection, then one read.
    assert pageRequests <= 20
    # The subscription's check of where the channel stands, and one read.
    assert recoveryRequests <= 3
    assert historyRequests <= 2


async def streamLimit(jetstream):
    nc = NATS()
    await future(nc.connect(jetstream.url))
    try:
        info = await future(nc.jsm().stream_info("LHTTP_HISTORY"))
        return info.config.max_msgs_per_subject
    finally:
        await future(nc.close())


@pytest_twisted.ensureDeferred
async def test_streamHasOneOwner(startNode, jetstream):
    """
    A node whose --history differs from the stream's says so in one line
    and exits 1, leaving the stream as it was; with
    --history-update-stream it changes it.
    """
    from docsnippets import blockWith

    first = startNode("--nats", jetstream.url, "--history", "hist.*=100")
    await untilHealth(first, 200, timeout=30)
    # (Not startNode: it may exit before it accepts a connection.)
    other = LHTTPNode("--nats", jetstream.url, "--history", "hist.*=200")
    try:
        await eventually(lambda: not other.alive(), timeout=30, what="the other node to exit")
    finally:
        other.stop()
    assert other.popen.returncode == 1, other.log()
    lines = [line for line in other.log().splitlines() if line.startswith("lhttp: ")]
    documented = blockWith("::", "lhttp: The JetStream stream", ["docs/history.rst"]).strip()
    assert lines == [documented]
    assert await streamLimit(jetstream) == 100
    assert (await health(first))[0] == 200

    owner = startNode("--nats", jetstream.url, "--history", "hist.*=200",
                      "--history-update-stream")
    await untilHealth(owner, 200, timeout=30)
    assert await streamLimit(jetstream) == 200
    assert "changing it (--history-update-stream)" in owner.log()


@pytest_twisted.ensureDeferred
async def test_prefixedLiveSubject(startNode, jetstream):
    """
    With --nats-prefix, a history channel's live subject is under the
    prefix too, and only the serving node holds it.
    """
    a, b = startNodes(startNode, jetstream.url, 2, "--nats-prefix", "app")
    for node in (a, b):
        await untilHealth(node, 200, timeout=30)
    subscriber = await subscribed(b.url, "hist.p")
    publisher = await client(a.url)
    for i in range(20):
        publisher.send("chat", [("publish", "hist.p")], b"%d" % i)
    await barrier(publisher)
    got = await chats(subscriber, 20)
    assert [m.body for m in got] == [b"%d" % i for i in range(20)]
    assertContinuous(got, "hist.p")
    response = await treq.get(jetstream.monitorURL + "/connz?subs=1")
    document = json.loads(await response.content())
    subjects = {int(c["name"].rpartition("pid=")[2]): c.get("subscriptions_list", [])
                for c in document["connections"] if "pid=" in c.get("name", "")}
    assert "_lhttp_live.app.hist.p" in subjects[b.popen.pid]
    assert not any(s.startswith("_lhttp_live.") for s in subjects[a.popen.pid])
