"""
Presence across a cluster: three real C{twistd lhttp --nats} nodes on a
real C{nats-server -js} with a file store; users named by a real
authentication filter (C{examples/lhttp_examples/auth.py}); a node killed
with SIGKILL.
"""

import signal
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from lhttpclients import barrier, client, eventually, untilHealth
from procs import ROOT, NATSServer

sys.path.insert(0, str(ROOT / "examples"))

from lhttp_examples.auth import issueToken  # noqa: E402

SECRET = "presence-test-secret"
TTL = 3.0


@pytest.fixture
def cluster(jetstream, startNode):
    return [
        startNode(
            "--nats", jetstream.url, "--presence", "room.*", "--presence-events", "room.*",
            "--presence-ttl", str(TTL), "--filter", "lhttp_examples.auth.TokenAuthFilter",
            env={"LHTTP_AUTH_SECRET": SECRET}, pythonPath=[ROOT / "examples"],
        )
        for _ in range(3)
    ]


async def user(node, name):
    return await client(f"{node.url}?token={issueToken(SECRET, name)}")


async def request(c, command, channel, others=None, timeout=10):
    """
    Send a presence request; return its reply, keeping what arrived
    before it in C{others}.
    """
    reply = await answer(c, command, channel, others, timeout)
    assert reply.command == command, reply.toBytes()
    return reply


async def answer(c, command, channel, others=None, timeout=10):
    """
    Send a presence request; return its reply or error reply.
    """
    c.send(command, [("channel", channel)])
    while True:
        message = await c.nextMessage(timeout)
        if message.command == command or (
            message.command == "error" and message.getHeader("command") == command
        ):
            return message
        if others is not None:
            others.append(message)


def listing(reply):
    rows = set()
    for line in reply.body.decode().split("\r\n")[:-1]:
        clientId, _, name = line.partition(" ")
        rows.add((clientId, name or None))
    assert len(rows) == int(reply.getHeader("count"))
    return rows


async def untilEvents(c, count, got, timeout=10):
    while len([m for m in got if m.command in ("join", "leave")]) < count:
        got.append(await c.nextMessage(timeout))
    return [(m.command, m.getHeader("client"), m.getHeader("user"))
            for m in got if m.command in ("join", "leave")]


@pytest_twisted.ensureDeferred
async def test_presenceAcrossNodesAndACrashedNode(cluster):
    for node in cluster:
        await untilHealth(node, 200)
    # A watcher on node 2 hears every join and leave.
    watcher = await user(cluster[2], "wendy")
    watcher.subscribe("room.1")
    seen = await barrier(watcher)
    wendy = (await request(watcher, "presence", "room.1", seen)).getHeader("self")

    # (node, user, client id) of each client.
    placement = [(0, "ann"), (0, "bob"), (1, "carl"), (1, "dana"), (2, "dana")]
    clients, members = [], [(2, "wendy", wendy)]
    for index, name in placement:
        c = await user(cluster[index], name)
        c.subscribe("room.1")
        await barrier(c)
        clients.append(c)
        members.append((index, name, (await request(c, "presence", "room.1")).getHeader("self")))
    expected = {(clientId, name) for _, name, clientId in members}
    assert len(expected) == 6
    # Client ids carry their node's id: three nodes, three prefixes.
    assert len({clientId.rpartition("-")[0] for _, _, clientId in members}) == 3

    # Every node lists all six, with their users.
    for c in [clients[0], clients[2], watcher]:
        reply = await request(c, "presence", "room.1", seen if c is watcher else None)
        assert listing(reply) == expected
        assert reply.getHeader("users") == "5"
        stats = await request(c, "presence-stats", "room.1", seen if c is watcher else None)
        assert (stats.getHeader("clients"), stats.getHeader("users")) == ("6", "5")

    # The joins of the clients on nodes 0 and 1 reached node 2's watcher.
    joins = await untilEvents(watcher, 6, seen)
    assert sorted(joins, key=str) == sorted(
        [("join", clientId, name) for _, name, clientId in members], key=str
    )

    # Entries outlive the TTL while their clients are connected: each node
    # writes its own again.
    until = time.monotonic() + 2 * TTL
    while time.monotonic() < until:
        assert listing(await request(clients[4], "presence", "room.1")) == expected
        await deferLater(reactor, 0.5)

    # An unsubscribe on node 0 is a leave everywhere.
    bob = members[2]
    clients[1].unsubscribe("room.1")
    await barrier(clients[1])
    leaves = await untilEvents(watcher, 7, seen)
    assert leaves[-1] == ("leave", bob[2], "bob")
    expected.discard((bob[2], "bob"))
    assert listing(await request(clients[4], "presence", "room.1")) == expected

    # A node that crashes deletes nothing: its clients' entries expire.
    crashed = {(clientId, name) for index, name, clientId in members if index == 1}
    assert {name for _, name in crashed} == {"carl", "dana"}
    cluster[1].signal(signal.SIGKILL)
    killed = time.monotonic()
    survivors = expected - crashed
    assert len(survivors) == 3

    async def gone():
        return listing(await request(watcher, "presence", "room.1", seen)) == survivors

    await eventually(gone, timeout=TTL + 5, what="the crashed node's clients to leave the list")
    elapsed = time.monotonic() - killed
    assert elapsed <= TTL + 2, elapsed
    assert listing(await request(clients[0], "presence", "room.1")) == survivors

    # A disconnect on a live node is a leave seen on another node.
    ann = members[1]
    clients[0].transport.loseConnection()
    leaves = await untilEvents(watcher, 8, seen)
    assert leaves[-1] == ("leave", ann[2], "ann")


@pytest_twisted.ensureDeferred
async def test_presenceOutlivesANATSRestartThatLostTheBucket(tmp_path, startNode):
    """
    While NATS is away a presence request gets a 503; when a nats-server
    that lost its store comes back, the node makes the bucket again and
    writes its entries again, and keeps them there.
    """
    nats = NATSServer(args=["-js", "-sd", str(tmp_path / "first")]).waitReady()
    try:
        node = startNode("--nats", nats.url, "--presence", "room.*", "--presence-ttl", str(TTL))
        await untilHealth(node, 200)
        ann = await client(node.url)
        ann.subscribe("room.1")
        await barrier(ann)
        expected = {((await request(ann, "presence", "room.1")).getHeader("self"), None)}
        assert listing(await request(ann, "presence", "room.1")) == expected

        nats.kill()
        refused = await answer(ann, "presence", "room.1")
        assert (refused.command, refused.getHeader("status")) == ("error", "503")

        nats = NATSServer(nats.port, nats.monitorPort,
                          ["-js", "-sd", str(tmp_path / "second")]).waitReady()

        async def listed():
            reply = await answer(ann, "presence", "room.1")
            return reply.command == "presence" and listing(reply) == expected

        await eventually(listed, timeout=TTL + 10, what="the entry written again")
        until = time.monotonic() + 2 * TTL
        while time.monotonic() < until:
            assert listing(await request(ann, "presence", "room.1")) == expected
            await deferLater(reactor, 0.5)
    finally:
        nats.stop()
