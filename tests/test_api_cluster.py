"""
Server-side control on real nodes: three C{twistd lhttp --nats} nodes on a
real C{nats-server}, real WebSocket clients, a raw nats-py client forging
commands, and the real C{lhttp} console script.

Users are who the node's own authentication says: each client sends
C{LHTTP/1.0 connect} with an HS256 JWT signed with the nodes' secret, and
C{--channel} rules grant authenticated users the test channels (deny by
default once authentication is on).
"""

import asyncio
import json
import os
import shutil
import time

import pytest
import pytest_twisted
import treq
from nats.aio.client import Client as NATS
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue

from lhttp.testing import makeToken
from lhttpclients import RawWebSocket, barrier, eventually, health, signedIn, untilHealth
from procs import ROOT

TOKEN = "api-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
UNSUBSCRIBED = (b"LHTTP/1.0 unsubscribed\r\nlhttp-node:reply\r\nchannel:room.1\r\n"
                b"reason:unsubscribed by the server\r\n\r\n")
SECRET = "the api tests' JWT secret, 32 bytes or more"
NODE_OPTIONS = (
    "--publish-token", TOKEN,
    # The barriers' channels, lobby; room.1, room.2; the control subject's
    # name as a channel (the forged-messages test watches it).
    "--channel", "*=sub:users,pub:users",
    "--channel", "room.*=sub:users,pub:users",
    "--channel", "_lhttp.>=sub:users,pub:users",
)


def future(coroutine):
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def startAPINode(startNode, *options):
    return startNode(*NODE_OPTIONS, *options, env={"LHTTP_AUTH_JWT_SECRET": SECRET})


async def controlReady(node):
    """
    The node's broker takes publishes and its control subscription is in
    place.
    """
    await untilHealth(node, 200)

    async def subscribed():
        code, document = await health(node)
        return document.get("nats", {}).get("ready", {}).get("control")

    await eventually(subscribed, timeout=20, what=f"the control subscription of {node.url}")


@pytest.fixture
def cluster(natsServer, startNode):
    return [startAPINode(startNode, "--nats", natsServer.url) for _ in range(3)]


async def user(node, name, channels=None):
    c = await signedIn(node.url, makeToken(SECRET, name, expiresIn=3600), name)
    if channels:
        c.subscribe(channels)
    await barrier(c)
    return c


async def post(node, command, document, headers=AUTH):
    response = await treq.post(f"{node.httpURL}api/{command}", data=json.dumps(document).encode(),
                               headers=headers, timeout=10)
    return response.code, json.loads(await response.content())


async def roundTrip(sender, receiver, channel, body):
    sender.publish(channel, "chat", body=body)
    while True:
        message = await receiver.nextMessage(5)
        if message.body == body:
            return message


@pytest_twisted.ensureDeferred
async def test_disconnectAcrossTheCluster(cluster):
    """
    A disconnect taken by node A closes alice's connections on B and C with
    4403 within a second; bob's connections stay open and keep
    round-tripping.
    """
    a, b, c = cluster
    for node in cluster:
        await controlReady(node)
    alices = [await user(b, "alice", "lobby"), await user(c, "alice"), await user(c, "alice")]
    bobs = [await user(b, "bob", "lobby"), await user(c, "bob", "lobby")]
    closedAt = {}
    for alice in alices:
        alice.closed.addCallback(lambda how, alice=alice: closedAt.setdefault(
            id(alice), (how[1], time.monotonic())))

    start = time.monotonic()
    code, document = await post(a, "disconnect", {"user": "alice"})
    assert (code, document) == (200, {"user": "alice", "closed": 0, "cluster": True})
    await eventually(lambda: len(closedAt) == len(alices), timeout=5,
                     what="alice's connections on B and C to close")
    assert [code for code, _ in closedAt.values()] == [4403, 4403, 4403]
    slowest = max(at for _, at in closedAt.values()) - start
    assert slowest < 1.0, f"the slowest connection closed after {slowest:.3f} s"

    # Bob is untouched, on both nodes, both ways.
    assert (await roundTrip(bobs[0], bobs[1], "lobby", b"b to c")).body == b"b to c"
    assert (await roundTrip(bobs[1], bobs[0], "lobby", b"c to b")).body == b"c to b"
    assert all(bob.closeCode is None for bob in bobs)


@pytest_twisted.ensureDeferred
async def test_unsubscribeAcrossTheCluster(cluster):
    """
    An unsubscribe taken by node A takes room.1 from alice's connection on
    B: it is told, hears no more of room.1, still hears room.2; its other
    subscribers hear alice leave.
    """
    a, b, c = cluster
    for node in cluster:
        await controlReady(node)
    alice = await user(b, "alice", "room.1 room.2")
    bob = await user(c, "bob", "room.1")

    code, document = await post(a, "unsubscribe", {"user": "alice", "channel": "room.1"})
    assert (code, document) == (200, {"user": "alice", "channel": "room.1", "unsubscribed": 0,
                                      "cluster": True})
    assert (await alice.nextMessage(5)).toBytes() == UNSUBSCRIBED

    bob.publish("room.1", "chat", body=b"only bob hears this")
    bob.publish("room.2", "chat", body=b"alice hears this")
    # One publisher: its messages reach B in order, so had room.1's come
    # to alice it would come first.
    assert (await alice.nextMessage(5)).body == b"alice hears this"
    assert alice.closeCode is None


@pytest_twisted.ensureDeferred
async def test_forgedControlMessagesDoNothing(natsServer, startNode):
    """
    Commands on the control subject without the Lhttp-Node: control NATS
    header (what a Go node relaying a client's publish would send) are
    ignored; a channel named like the subject never shows a node's command
    to its subscribers.
    """
    node = startAPINode(startNode, "--nats", natsServer.url)
    await controlReady(node)
    alice = await user(node, "alice", "lobby")
    carol = await user(node, "carol")
    watcher = RawWebSocket(node.port)
    watcher.sendall(RawWebSocket.frame(
        f"LHTTP/1.0 connect\r\ntoken:{makeToken(SECRET, 'watcher', expiresIn=3600)}\r\n\r\n".encode(),
        opcode=1))
    assert b"status:200" in watcher.readFrame()[1]
    watcher.sendall(RawWebSocket.frame(
        b"LHTTP/1.0 s\r\nsubscribe:_lhttp.control\r\npublish:_lhttp.control\r\n\r\nready",
        opcode=1))
    assert watcher.readFrame()[1].endswith(b"ready")
    nats = NATS()
    await future(nats.connect(natsServer.url))
    try:
        forged = json.dumps({"op": "disconnect", "user": "alice", "from": "x"}).encode()
        await future(nats.publish("_lhttp.control", forged))
        await future(nats.publish("_lhttp.control", forged, headers={"Lhttp-Node": "event"}))
        # From the same publisher, in order: once carol is gone, the
        # forged ones were handled (and ignored).
        genuine = json.dumps({"op": "disconnect", "user": "carol", "from": "x"}).encode()
        await future(nats.publish("_lhttp.control", genuine, headers={"Lhttp-Node": "control"}))
        await future(nats.flush())
        _, code, _ = await carol.closed
        assert code == 4403
        assert alice.closeCode is None
        assert (await roundTrip(alice, alice, "lobby", b"still here")).body == b"still here"
        # The channel _lhttp.control got the forged ones (plain publishes
        # to it, to a node), never the node's command.
        watcher.sendall(RawWebSocket.frame(
            b"LHTTP/1.0 marker\r\npublish:_lhttp.control\r\n\r\nend", opcode=1))
        got = [watcher.readFrame()[1] for _ in range(3)]
        assert got == [forged, forged, b"LHTTP/1.0 marker\r\npublish:_lhttp.control\r\n\r\nend"]
    finally:
        watcher.close()
        await future(nats.close())


def lhttpScript():
    program = shutil.which("lhttp")
    assert program, "the lhttp console script is not on PATH"
    return program


async def runLHTTP(*args, env=None):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    environment = {k: v for k, v in os.environ.items() if k != "LHTTP_PUBLISH_TOKEN"}
    environment.update({"PYTHONPATH": path, **(env or {})})
    out, err, code = await getProcessOutputAndValue(lhttpScript(), args, env=environment,
                                                    reactor=reactor)
    return code, out.decode(), err.decode()


@pytest_twisted.ensureDeferred
async def test_cliAgainstARealNode(startNode):
    node = startAPINode(startNode)
    alice = await user(node, "alice", "room.1 room.2")
    bob = await user(node, "bob", "room.1")

    code, out, err = await runLHTTP("unsubscribe", node.httpURL, "alice", "room.1",
                                    env={"LHTTP_PUBLISH_TOKEN": TOKEN})
    assert (code, out) == (0, "unsubscribed 1 connection(s) of alice from room.1 "
                              "(a node on its own)\n"), err
    assert (await alice.nextMessage(5)).toBytes() == UNSUBSCRIBED

    code, out, err = await runLHTTP("disconnect", node.httpURL, "alice", "--token", "wrong")
    assert code == 1 and out == "" and "refused: 403 forbidden" in err
    assert "wrong" not in err.replace("wrong publish token", "")
    code, out, err = await runLHTTP("disconnect", node.httpURL, "alice")
    assert code == 1 and "401" in err

    code, out, err = await runLHTTP("disconnect", node.httpURL, "alice", "--reconnect",
                                    "--token", TOKEN)
    assert (code, out) == (0, "closed 1 connection(s) of alice (a node on its own)\n"), err
    _, closeCode, reason = await alice.closed
    assert (closeCode, reason) == (4000, "reconnect")
    assert bob.closeCode is None

    code, out, err = await runLHTTP("disconnect", f"{node.httpURL}api/disconnect",
                                    "bob", "--token", TOKEN)
    assert code == 0, err
    _, closeCode, _ = await bob.closed
    assert closeCode == 4403


@pytest_twisted.ensureDeferred
async def test_cliNoTokenConfigured(startNode):
    node = startNode()
    code, out, err = await runLHTTP("disconnect", node.httpURL, "alice", "--token", TOKEN)
    assert code == 1 and "LHTTP_PUBLISH_TOKEN" in err
