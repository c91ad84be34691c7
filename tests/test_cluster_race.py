"""
A busy cluster's subscription churn, against a real C{nats-server} and real
C{twistd lhttp --nats} nodes (issue 12, item 1).

Many channels subscribed at once, clients that leave while others
subscribe, and a large publish just before new subscriptions: NATS must
end up holding exactly one subscription per channel with local
subscribers, and every publish must reach every subscriber exactly once.

Run with C{-s} to see the figures (NATS's subscription count against the
channels with local subscribers, deliveries expected and seen).
"""

import json
import time
from collections import Counter

import pytest_twisted
import treq

from lhttpclients import client, eventually, health, untilHealth

# Three clients' worth of distinct channels, 1,000 each.
CHANNELS = [[f"race.{i}.c{k}" for k in range(1000)] for i in range(3)]
EVERY = [channel for channels in CHANNELS for channel in channels]


async def natsSubjects(natsServer, pid):
    """
    Every channel subject NATS holds for one node's connection (a list, so
    a subject held twice shows twice; the node's own, C{_lhttp.control},
    left out).
    """
    response = await treq.get(natsServer.monitorURL + "/connz?subs=1&limit=1000")
    document = json.loads(await response.content())
    [connection] = [c for c in document["connections"] if c.get("name", "").endswith(f"pid={pid}")]
    return [subject for subject in connection.get("subscriptions_list", [])
            if not subject.startswith("_lhttp.")]


def collect(c):
    """
    Collect the bodies of everything C{c} receives from now on.
    """
    got = []
    c.onLHTTPMessage = lambda message: got.append(message.body)
    return got


async def complete(got, expected, timeout=30.0):
    """
    Wait until C{got} holds C{expected} distinct bodies, then until no more
    arrive for a second, so duplicates would show.
    """
    await eventually(
        lambda: len(set(got)) >= expected, timeout=timeout,
        what=f"{expected} distinct messages (got {len(set(got))})",
    )
    seen = [len(got), time.monotonic()]

    def quiet():
        if len(got) != seen[0]:
            seen[:] = [len(got), time.monotonic()]
        return time.monotonic() - seen[1] >= 1.0

    await eventually(quiet, timeout=timeout, what="deliveries to stop")
    return got


async def publishEach(publisher, channels, tag):
    """
    Publish one message per channel, its body naming the channel, then
    wait until the node has handled them all.
    """
    for channel in channels:
        publisher.send("chat", [("publish", channel)], f"{tag} {channel}".encode())
    await publisher.sync(timeout=30)


async def twoNodes(natsServer, startNode):
    nodes = [startNode("--nats", natsServer.url) for _ in range(2)]
    for node in nodes:
        await untilHealth(node, 200)
    return nodes


async def settledSubscriptions(natsServer, node, expected, what, timeout=20):
    """
    Wait until NATS holds exactly the node's channels with local
    subscribers, each once, or C{timeout}; print the figures.

    @return: the subjects NATS holds for the node, as a L{Counter}.
    """
    pid = node.popen.pid
    last = []

    async def matches():
        last[:] = await natsSubjects(natsServer, pid)
        return sorted(last) == sorted(expected)

    try:
        await eventually(matches, timeout=timeout, what=what)
    except AssertionError:
        pass
    counts = Counter(last)
    print(
        f"\n{what}: NATS holds {len(last)} subscription(s) for the node, "
        f"{len(counts)} distinct subject(s), the node has local subscribers "
        f"on {len(expected)} channel(s); most copies of one subject: "
        f"{max(counts.values(), default=0)}"
    )
    return counts


@pytest_twisted.ensureDeferred
async def test_subscribeStormLeavesOneNATSSubscriptionPerChannel(natsServer, startNode):
    """
    Three clients subscribe 1,000 channels each and leave, while steady
    clients subscribe to parts of the same channels; then a publish to
    every channel from the other node reaches each steady subscriber once.
    """
    nodeA, nodeB = await twoNodes(natsServer, startNode)
    steady = [await client(nodeA.url) for _ in range(4)]
    wanted = [EVERY[i::8] for i in range(4)]  # 375 channels each, disjoint
    for round_ in range(3):
        churn = [await client(nodeA.url) for _ in range(3)]
        for c, channels in zip(churn, CHANNELS):
            c.subscribe(channels)
        for c in churn:
            await c.sync(timeout=30)
        # The churners leave at once, while the steady clients subscribe
        # (and, after the first round, unsubscribe and subscribe again).
        for c in churn:
            c.transport.abortConnection()
        for c, channels in zip(steady, wanted):
            if round_:
                c.unsubscribe(channels)
            c.subscribe(channels)
    for c in steady:
        await c.sync(timeout=30)

    expected = [channel for channels in wanted for channel in channels]
    held = await settledSubscriptions(natsServer, nodeA, expected, "after the subscribe storm")

    publisher = await client(nodeB.url)
    collected = [collect(c) for c in steady]
    await publishEach(publisher, EVERY, "once")
    counts = []
    for got, channels in zip(collected, wanted):
        await complete(got, len(channels))
        counts.append(len(got))
    received = (await health(nodeA))[1]["broker"]["received"]
    print(f"deliveries: expected {len(expected)}, seen {sum(counts)}; NATS messages "
          f"the node received: {received}")
    assert held == Counter(expected)
    for got, channels in zip(collected, wanted):
        assert sorted(got) == sorted(f"once {ch}".encode() for ch in channels)
    assert received == len(expected)

    for c in steady:
        c.transport.abortConnection()
    left = await settledSubscriptions(natsServer, nodeA, [], "after the steady clients left")
    assert left == Counter()


@pytest_twisted.ensureDeferred
async def test_subscribesRightAfterALargePublish(natsServer, startNode):
    """
    No attacker needed: a large publish, then a few clients subscribing to
    new channels milliseconds later.
    """
    nodeA, nodeB = await twoNodes(natsServer, startNode)
    big = await client(nodeA.url)
    subscribers = [await client(nodeA.url) for _ in range(4)]
    channels = [[f"fresh.{i}.{k}" for k in range(900)] for i in range(4)]
    for round_ in range(3):
        # Three copies of 900 kB: more than nats-py's 2 MiB pending buffer.
        big.send("big", [("publish", f"nobody.{round_}.a nobody.{round_}.b nobody.{round_}.c")],
                 b"x" * 900_000)
        for c, names in zip(subscribers, channels):
            c.subscribe(names[round_ * 300:(round_ + 1) * 300])
    for c in subscribers:
        await c.sync(timeout=30)

    expected = [name for names in channels for name in names]
    held = await settledSubscriptions(natsServer, nodeA, expected, "after the large publishes")
    assert held == Counter(expected)

    publisher = await client(nodeB.url)
    collected = [collect(c) for c in subscribers]
    await publishEach(publisher, expected, "fresh")
    for got, names in zip(collected, channels):
        await complete(got, len(names))
        assert sorted(got) == sorted(f"fresh {name}".encode() for name in names)


@pytest_twisted.ensureDeferred
async def test_leavingClientsLeaveNoNATSSubscription(natsServer, startNode):
    """
    Clients that subscribe 1,000 channels and leave at once leave nothing
    behind in NATS.
    """
    nodeA, _ = await twoNodes(natsServer, startNode)
    for _ in range(3):
        churn = [await client(nodeA.url) for _ in range(3)]
        for c, channels in zip(churn, CHANNELS):
            c.subscribe(channels)
        for c in churn[:2]:
            c.transport.abortConnection()
        churn[2].unsubscribe(CHANNELS[2])
        await churn[2].sync(timeout=30)
        churn[2].transport.abortConnection()
    left = await settledSubscriptions(natsServer, nodeA, [], "after every client left")
    assert left == Counter()
    await eventually(lambda: _channelsGauge(nodeA, 0), what="the node to have no channels")


async def _channelsGauge(node, value):
    response = await treq.get(node.httpURL + "metrics")
    text = (await response.content()).decode()
    return f"lhttp_channels {value:.1f}" in text
