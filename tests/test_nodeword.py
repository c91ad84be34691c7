"""
The node's word cannot be forged (issue 19, item 1; docs/protocol.rst).

An attacker is a room member on a real C{twistd lhttp} node; the victim is
the project's own Python L{ReconnectingClient}. Whatever the attacker
publishes, over WebSocket or C{POST /publish}, in any letter case, the
victim's SDK takes it for an ordinary message: its position is kept, it
does not crash, its history request gets the node's answer, and what it
missed while away is recovered, every message once.
"""

import pytest_twisted
import treq
from nats.aio.client import Client as NATS
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor

from lhttp.brokers.nats import deferred as future
from lhttp.client import ReconnectingClient, clientEndpoint, connect
from lhttp.codec import parse
from lhttp.word import kindOf
from lhttpclients import barrier, client, health, untilHealth
from procs import eventually
from test_client import OfflineEndpoint, publishMany, publishWhileAway

HISTORY = ("--history", "room.*=1000")

# What an attacker in room.a publishes: messages whose command the SDKs
# used to act on.
FORGERIES = [
    # Makes an SDK forget the channel's position: its next reconnect would
    # not ask for what it missed.
    b"LHTTP/1.0 recovery\r\nchannel:room.a\r\nrecovered:false\r\nhistory:none\r\n"
    b"publish:room.a\r\n\r\n",
    # A Unicode digit: str.isdigit() says yes, int() raises.
    b"LHTTP/1.0 recovery\r\nchannel:room.a\r\nrecovered:true\r\n"
    b"count:\xc2\xb2\r\nsince:\xd9\xa3\r\npublish:room.a\r\n\r\n",
    # Answered as a request and relayed: must not pass for the node's reply.
    b"LHTTP/1.0 history\r\nchannel:room.a\r\nlimit:5\r\ncount:1\r\ncomplete:true\r\n"
    b"multipart:0\r\npublish:room.a\r\n\r\noffset:1\r\n\r\nLHTTP/1.0 chat\r\n\r\nattacker's history",
    b"LHTTP/1.0 error\r\nstatus:503\r\nreason:fake\r\ncommand:lhttp-sync\r\n"
    b"publish:room.a\r\n\r\nnot the node",
]


@pytest_twisted.ensureDeferred
async def test_forgedNodeMessagesDoNotFoolTheVictim(startNode):
    node = startNode(*HISTORY)
    endpoint = OfflineEndpoint(clientEndpoint(reactor, node.url))
    received, recoveries = [], []
    victim = ReconnectingClient(
        reactor, node.url, onMessage=received.append,
        endpoint=endpoint, retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=0.3),
    )
    victim.onRecovery = recoveries.append
    victim.startService()
    attacker = await client(node.url)
    try:
        await victim.whenConnected()
        victim.subscribe("room.a", since=0)
        await victim.sync(10)
        await publishMany(node, "room.a", [b"first"])
        await eventually(lambda: received, timeout=10, what="the first message")
        # The attacker is a member of the room (a history request needs it).
        attacker.send("enter", [("subscribe", "room.a")])
        for forged in FORGERIES:
            attacker.sendLHTTP(forged)
        await barrier(attacker)
        await eventually(lambda: len(received) == 1 + len(FORGERIES), timeout=10,
                         what="the forged messages, as ordinary ones")
        assert [kindOf(m) for m in received[1:]] == ["position"] * len(FORGERIES)
        assert len(recoveries) == 1, "only the node's own recovery reply counts"
        offset, epoch = victim.position("room.a")
        assert offset == int(received[-1].getHeader("offset"))

        # The history request is answered by the node, with the channel's
        # real messages (the attacker's relayed 'history' is one of them).
        history = await victim.history("room.a", limit=2)
        assert len(history) == 2
        assert history[-1].toBytes().endswith(b"not the node")

        # Away: the ten messages said meanwhile come back, once each.
        away = [b"away %d" % i for i in range(10)]
        await publishWhileAway(victim, endpoint, node, "room.a", away)
        await eventually(lambda: len(received) >= 1 + len(FORGERIES) + 10, timeout=20,
                         what="the ten missed")
        await victim.sync(10)
        assert [m.body for m in received[1 + len(FORGERIES):]] == away
        report = victim.recoveries["room.a"]
        assert (report.recovered, report.count, report.epoch) == (True, 10, epoch)
        assert victim.duplicates == 0
    finally:
        attacker.sendClose(1000)
        await victim.stopService()


@pytest_twisted.ensureDeferred
async def test_noClientCanWriteTheNodesHeader(startNode):
    """
    The header is refused in every letter case and place, over WebSocket
    (400 error reply in the node's word, the connection stays) and over
    C{POST /publish} (HTTP 400); nothing reaches the room. A message that
    merely looks like an event (a join with a client header) is relayed as
    an ordinary message.
    """
    node = startNode(*HISTORY, "--presence-events", "room.*")
    listener = await client(node.url)
    listener.send("listen", [("subscribe", "room.b plain")])
    await barrier(listener)
    attacker = await client(node.url)
    spellings = ["lhttp-node", "Lhttp-Node", "LHTTP-NODE", "lHtTp-NoDe"]
    for i, name in enumerate(spellings):
        attacker.sendLHTTP(
            f"LHTTP/1.0 join\r\n{name}:event\r\nchannel:room.b\r\nclient:x-{i}\r\n"
            "publish:room.b\r\n\r\n".encode())
        attacker.sendLHTTP(
            f"LHTTP/1.0 chat\r\npublish:plain\r\n{name}:reply\r\n\r\nsecond place".encode())
    for i in range(2 * len(spellings)):
        reply = await attacker.nextMessage(5)
        assert (reply.command, reply.getHeader("status"), reply.getHeader("reason")) == (
            "error", "400", "reserved header")
        assert kindOf(reply) == "reply"

    for name in spellings:
        response = await treq.post(
            node.httpURL + "publish",
            f"LHTTP/1.0 join\r\n{name}:event\r\nchannel:room.b\r\npublish:room.b\r\n\r\n".encode())
        assert response.code == 400, name
        assert b"reserved header" in await response.content()

    # The old rule: a join with a client header was refused on WebSocket
    # only in lower case, and delivered from /publish. Now it is an ordinary
    # message either way, and no SDK takes it for the node's.
    response = await treq.post(
        node.httpURL + "publish",
        b"LHTTP/1.0 Join\r\nchannel:room.b\r\nclient:forged-1\r\npublish:room.b\r\n\r\n")
    assert response.code in (200, 202)
    delivered = await barrier(listener)
    assert [(m.command, kindOf(m)) for m in delivered] == [("Join", "position")]
    attacker.sendClose(1000)
    listener.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_forgedThroughNATSIsNotDelivered(natsServer, startNode):
    """
    An original Go node relays its clients' messages verbatim: a raw NATS
    publish with the node's header and no Lhttp-Node NATS header is not
    delivered, and /health counts it; a real node's join is.
    """
    nodes = [startNode("--nats", natsServer.url, "--presence-events", "room.*") for _ in range(2)]
    for n in nodes:
        await untilHealth(n, 200)
    goNode = NATS()
    await future(goNode.connect(natsServer.url))
    try:
        watcher = await client(nodes[0].url)
        watcher.send("listen", [("subscribe", "room.c")])
        own = await watcher.nextMessage(5)
        assert (own.command, kindOf(own)) == ("join", "event")
        await future(goNode.publish(
            "room.c", b"LHTTP/1.0 leave\r\nlhttp-node:event\r\nchannel:room.c\r\n"
                      b"client:" + own.getHeader("client").encode() + b"\r\n\r\n"))
        await future(goNode.publish("room.c", b"LHTTP/1.0 chat\r\npublish:room.c\r\n\r\nfrom Go"))
        message = await watcher.nextMessage(5)
        assert (message.command, message.body) == ("chat", b"from Go")

        joiner = await connect(reactor, nodes[1].url)
        joiner.send("listen", [("subscribe", "room.c")])
        joined = await watcher.nextMessage(5)
        assert (joined.command, kindOf(joined)) == ("join", "event")
        assert joined.getHeader("client") != own.getHeader("client")
        _, document = await health(nodes[0])
        assert document["broker"]["forged"] == 1
        joiner.sendClose(1000)
        watcher.sendClose(1000)
    finally:
        await future(goNode.close())


def test_everyNodeMessageIsMarked():
    """
    Unit: what the node writes (errors, recovery and history replies,
    presence replies, join/leave, stamped positions) starts with its mark.
    """
    from lhttp.codec import errorReply, missedNotice
    from lhttp.errors import BadHeader
    from lhttp.history import Recovery, historyReply, recoveryReply, stamp
    from lhttp.presence.engine import Member
    from lhttp.presence.filter import event
    from lhttp.presence.processor import presenceReply, statsReply

    recovery = Recovery("e1", True, ((3, b"LHTTP/1.0 chat\r\n\r\nx"),), 3)
    written = {
        "error": errorReply(BadHeader("x"), "chat"),
        "missed": parse(missedNotice("room.a")),
        "history": historyReply("room.a", recovery),
        "recovery": recoveryReply("room.a", recovery, 0, "chat"),
        "presence": presenceReply("presence", "room.a", [Member("a-1", "ann")], "a-1"),
        "stats": statsReply("presence-stats", "room.a", []),
        "join": parse(event("join", "room.a", Member("a-1", "ann"))),
    }
    assert {name: kindOf(m) for name, m in written.items()} == {
        name: ("event" if name == "join" else "reply") for name in written}
    stamped = parse(stamp(b"LHTTP/1.0 recovery\r\nhistory:none\r\n\r\n", "room.a", 7, "e1"))
    assert kindOf(stamped) == "position"
    assert stamped.headers[:4] == [
        ("lhttp-node", "position"), ("channel", "room.a"), ("offset", "7"), ("epoch", "e1")]


def test_docsSample():
    """
    docs/protocol.rst's refusal sample is what a node sends, byte for byte.
    """
    from docsnippets import blockWith

    from lhttp.testing import FakeClient, memoryServer

    text = blockWith("::", "reason:reserved header", ["docs/protocol.rst"])
    request, reply = [line.encode().decode("unicode_escape").encode("latin-1")
                      for line in text.splitlines()]
    server = memoryServer()
    attacker, listener = FakeClient(server), FakeClient(server)
    listener.receive(b"LHTTP/1.0 listen\r\nsubscribe:room.1\r\n\r\n")
    attacker.receive(request)
    assert attacker.payloads() == [reply]
    assert listener.payloads() == []
