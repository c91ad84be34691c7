"""
lhttp.client: the one-connection client and L{ReconnectingClient}, first in
memory (a real L{LHTTPServer} and real Autobahn protocols joined by
L{twisted.test.iosim}, a L{MemoryReactorClock} for the backoff), then
against a real node that restarts on the same port. History channels:
recovery after a reconnect, duplicates dropped, C{history} requests.
"""

import pytest_twisted
import treq
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from lhttp import LHTTPServer
from lhttp.client import Credential, ErrorReply, NotConnected, ReconnectingClient, Unauthorized, connect
from lhttp.codec import Message
from lhttp.testing import FakeClient, memoryServer
from lhttpclients import eventually


class MemoryNode:
    """
    An in-memory node and a client endpoint that reaches it: each connect
    joins a real server protocol and the client's protocol with iosim.
    """

    def __init__(self, clock, makeServer=None):
        self.clock = clock
        self.makeServer = makeServer or (lambda: LHTTPServer(reactor=self.clock))
        self.up = True
        self.attempts = []
        self.pumps = []
        self.start()

    def start(self):
        self.server = self.makeServer()
        self.up = True

    def stop(self):
        """
        The node goes away: its connections drop, new ones are refused.
        """
        self.cut()
        self.up = False

    def cut(self):
        """
        The clients' connections drop; the node stays (a network fault).
        """
        for pump in self.pumps:
            pump.serverIO.abortConnection()
        self.flush()
        self.pumps = []

    def connect(self, factory):
        self.attempts.append(self.clock.seconds())
        if not self.up:
            return fail(ConnectionRefusedError("node is down"))
        serverProtocol = self.server.factory.buildProtocol(None)
        clientProtocol = factory.buildProtocol(None)
        self.pumps.append(
            iosim.connect(
                serverProtocol, iosim.FakeTransport(serverProtocol, isServer=True),
                clientProtocol, iosim.FakeTransport(clientProtocol, isServer=False),
                greet=False,
            )
        )
        return succeed(clientProtocol)

    def flush(self):
        for pump in list(self.pumps):
            pump.flush()


class ClientOnMemoryNodeCase(SynchronousTestCase):
    """
    A L{ReconnectingClient} as C{self.client} on a L{MemoryNode} as
    C{self.node} (set up by the subclass).
    """

    def connected(self):
        d = self.client.whenConnected()
        self.node.flush()
        return self.successResultOf(d)

    def publishOnNode(self, channel, body):
        FakeClient(self.node.server).receive(
            Message("chat", [("publish", channel)], body).toBytes()
        )
        self.node.flush()


class ReconnectingClientTests(ClientOnMemoryNodeCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        self.node = MemoryNode(self.clock)
        self.client = ReconnectingClient(
            self.clock, "ws://node/", endpoint=self.node,
            retryPolicy=backoffPolicy(initialDelay=1.0, factor=2.0, maxDelay=8.0, jitter=lambda: 0),
        )
        self.events = []
        self.client.onConnect = lambda protocol: self.events.append("connect")
        self.client.onDisconnect = lambda how: self.events.append("disconnect")

    def test_subscriptionsRememberedAndSentAgainAfterRestart(self):
        self.client.subscribe("a b")
        self.client.startService()
        self.connected()
        self.publishOnNode("a", b"one")
        self.assertEqual(self.successResultOf(self.client.nextMessage()).body, b"one")

        self.node.stop()
        self.assertIsNone(self.client.protocol)
        self.assertRaises(NotConnected, self.client.publish, "a", "chat")
        self.failureResultOf(self.client.sync(), NotConnected)
        self.client.unsubscribe("b")
        self.client.subscribe("c")

        # Refused three times: waits of 2, 4, 8 s (capped), then the node is back.
        self.clock.advance(2)
        self.clock.advance(4)
        self.clock.advance(8)
        self.node.start()
        self.clock.advance(8)
        protocol = self.connected()
        down = self.node.attempts[1:]
        self.assertEqual([b - a for a, b in zip(down, down[1:])], [4, 8, 8])
        self.assertEqual(self.events, ["connect", "disconnect", "connect"])
        self.assertEqual(self.client.connections, 2)
        self.assertEqual(self.client.subscriptions, ["a", "c"])

        sync = protocol.sync()
        self.node.flush()
        self.successResultOf(sync)
        self.publishOnNode("b", b"not any more")
        self.publishOnNode("c", b"two")
        self.publishOnNode("a", b"three")
        self.assertEqual(self.successResultOf(self.client.nextMessage()).body, b"two")
        self.assertEqual(self.successResultOf(self.client.nextMessage()).body, b"three")
        self.assertNoResult(self.client.nextMessage())

    def test_callbackAndSend(self):
        received = []
        self.client.onMessage = received.append
        self.client.startService()
        self.connected()
        self.client.send("hello", [("subscribe", "me"), ("publish", "me")], b"x")
        self.node.flush()
        self.assertEqual([(m.command, m.body) for m in received], [("hello", b"x")])

    def test_syncWaitsForTheServer(self):
        self.client.startService()
        protocol = self.connected()
        self.client.subscribe("room")
        sync = self.client.sync(timeout=5)
        self.assertNoResult(sync)
        self.node.flush()
        self.successResultOf(sync)
        self.assertEqual(self.node.server.channels.subscriberCount("room"), 1)
        # The sync's own message never reaches the user.
        self.assertEqual(protocol.pending(), 0)
        self.assertNoResult(self.client.nextMessage())

    def test_syncTimesOut(self):
        self.client.startService()
        self.connected()
        sync = self.client.sync(timeout=5)
        self.clock.advance(5)
        self.failureResultOf(sync)

    def test_stopServiceClosesAndStaysDown(self):
        self.client.startService()
        protocol = self.connected()
        stopped = self.client.stopService()
        self.node.flush()
        self.successResultOf(stopped)
        self.assertEqual(protocol.closeCode, 1000)
        self.clock.advance(60)
        self.assertEqual(len(self.node.attempts), 1)


@pytest_twisted.ensureDeferred
async def test_reconnectsToRestartedNodeAndKeepsReceiving(startNode):
    node = startNode()
    received = []
    client = ReconnectingClient(
        reactor, node.url, onMessage=received.append,
        retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=0.5),
    )
    client.subscribe("news")
    client.startService()
    try:
        await client.whenConnected()
        await client.sync(10)
        body = b"LHTTP/1.0 notice\r\npublish:news\r\n\r\nbefore"
        assert (await treq.post(node.publishURL, data=body)).code == 200
        await eventually(lambda: received, timeout=10, what="the first notice")

        node.stop()
        await eventually(lambda: client.protocol is None, timeout=10, what="the disconnect")
        node = startNode(port=node.port)
        await eventually(lambda: client.connections == 2, timeout=15, what="the reconnect")
        await client.sync(10)
        body = b"LHTTP/1.0 notice\r\npublish:news\r\n\r\nafter"
        assert (await treq.post(node.publishURL, data=body)).code == 200
        await eventually(lambda: len(received) == 2, timeout=10, what="the notice after restart")
        assert [m.body for m in received] == [b"before", b"after"]
    finally:
        await client.stopService()


def stamped(channel, offset, epoch, body):
    return (f"LHTTP/1.0 chat\r\nlhttp-node:position\r\nchannel:{channel}\r\noffset:{offset}\r\nepoch:{epoch}\r\n"
            f"publish:{channel}\r\n\r\n{body}").encode()


class HistoryClientTests(ClientOnMemoryNodeCase):
    """
    L{ReconnectingClient} on history channels, against a real in-memory
    node with C{--history room.*=100}.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.node = MemoryNode(self.clock, lambda: memoryServer(history=("room.*=100",), reactor=self.clock))
        self.client = ReconnectingClient(
            self.clock, "ws://node/", endpoint=self.node,
            retryPolicy=backoffPolicy(initialDelay=1.0, jitter=lambda: 0),
        )
        self.received = []
        self.client.onMessage = self.received.append
        self.reports = []
        self.client.onRecovery = self.reports.append

    def bodies(self):
        return [m.body.decode() for m in self.received]

    def reconnect(self):
        self.clock.advance(10)
        return self.connected()

    def test_recoversWhatWasPublishedWhileAway(self):
        self.client.subscribe("room.a plain")
        self.client.startService()
        self.connected()
        self.publishOnNode("room.a", b"one")
        self.publishOnNode("room.b", b"elsewhere")  # offsets are node-wide: not consecutive
        self.publishOnNode("room.a", b"two")
        offset, epoch = self.client.position("room.a")
        self.assertEqual(offset, 3)
        self.assertIsNone(self.client.position("plain"))

        self.node.cut()
        self.publishOnNode("room.a", b"three")
        self.publishOnNode("plain", b"lost: no history")
        self.publishOnNode("room.a", b"four")
        protocol = self.reconnect()
        self.publishOnNode("room.a", b"five")
        self.assertEqual(self.bodies(), ["one", "two", "three", "four", "five"])
        report = self.client.recoveries["room.a"]
        self.assertEqual(self.reports, [report])
        self.assertEqual(
            (report.recovered, report.history, report.epoch, report.since, report.count),
            (True, True, epoch, 3, 2),
        )
        self.assertEqual(self.client.position("room.a"), (6, epoch))
        self.assertEqual(protocol.pending(), 0)

    def test_newEpochAfterRestart(self):
        self.client.subscribe("room.a")
        self.client.startService()
        self.connected()
        for body in (b"one", b"two", b"three"):
            self.publishOnNode("room.a", body)
        old = self.client.position("room.a")
        self.node.stop()
        self.node.start()
        self.publishOnNode("room.a", b"new one")
        self.reconnect()
        self.assertEqual(self.bodies(), ["one", "two", "three", "new one"])
        report = self.client.recoveries["room.a"]
        self.assertFalse(report.recovered)
        self.assertNotEqual(report.epoch, old[1])
        self.assertEqual(self.client.position("room.a"), (1, report.epoch))

    def test_duplicatesDropped(self):
        self.client.subscribe("room.a")
        self.client.startService()
        protocol = self.connected()
        for raw in [stamped("room.a", 4, "e", "four"), stamped("room.a", 4, "e", "again"),
                    stamped("room.a", 2, "e", "older"), stamped("room.a", 1, "e2", "new epoch"),
                    stamped("room.x", 9, "e", "not subscribed"), stamped("room.x", 9, "e", "not subscribed")]:
            protocol.onMessage(raw, False)
        self.assertEqual(self.bodies(), ["four", "new epoch", "not subscribed", "not subscribed"])
        self.assertEqual(self.client.duplicates, 2)

    def test_subscribeSinceZeroAndUnsubscribe(self):
        self.client.startService()
        self.connected()
        for body in (b"kept 1", b"kept 2"):
            self.publishOnNode("room.a", body)
        self.client.subscribe("room.a", since=0)
        self.node.flush()
        self.assertEqual(self.bodies(), ["kept 1", "kept 2"])
        self.assertTrue(self.client.recoveries["room.a"].recovered)
        self.client.unsubscribe("room.a")
        self.assertIsNone(self.client.position("room.a"))
        self.client.setPosition("room.a", 1, self.client.recoveries["room.a"].epoch)
        self.client.subscribe("room.a")
        self.node.flush()
        self.assertEqual(self.bodies(), ["kept 1", "kept 2", "kept 2"])
        self.assertRaises(ValueError, self.client.setPosition, "room.a", -1)

    def test_quietChannelJoinedWithSinceZeroIsResumed(self):
        """
        A channel joined with since=0 that got no message before the
        connection dropped still recovers what came meanwhile.
        """
        self.client.startService()
        self.connected()
        self.client.subscribe("room.quiet", since=0)
        self.node.flush()
        self.node.cut()
        self.publishOnNode("room.quiet", b"while away")
        self.reconnect()
        self.assertEqual(self.bodies(), ["while away"])
        self.assertTrue(self.client.recoveries["room.quiet"].recovered)

    def test_noHistoryChannel(self):
        self.client.subscribe("plain")
        self.client.setPosition("plain", 5)
        self.client.startService()
        self.connected()
        report = self.client.recoveries["plain"]
        self.assertEqual((report.history, report.recovered, report.epoch), (False, False, None))
        self.assertIsNone(self.client.position("plain"), "not resumed again")
        self.assertEqual(self.received, [])

    def test_history(self):
        # Only a subscriber of a channel reads its history.
        self.client.subscribe("room.a")
        self.client.startService()
        self.connected()
        for body in (b"a", b"b", b"c"):
            self.publishOnNode("room.a", body)
        d = self.client.history("room.a", 2)
        missing = self.client.history("plain")
        other = self.client.history("room.a")
        self.node.flush()
        messages = self.successResultOf(d)
        self.assertEqual([(m.body, m.getHeader("offset")) for m in messages], [(b"b", "2"), (b"c", "3")])
        self.assertEqual((messages.channel, messages.offset, messages.complete), ("room.a", 3, False))
        error = self.failureResultOf(missing, ErrorReply).value
        self.assertEqual(error.status, 404)
        self.assertEqual([m.body for m in self.successResultOf(other)], [b"a", b"b", b"c"])
        self.assertEqual([m.command for m in self.received], ["chat"] * 3,
                         "replies are not messages (the live ones are)")

    def test_historyFailsWhenTheConnectionDrops(self):
        self.client.startService()
        protocol = self.connected()
        d = protocol.history("room.a")
        self.node.cut()
        self.failureResultOf(d)
        self.failureResultOf(self.client.history("room.a"), NotConnected)


def stampedPrev(channel, offset, epoch, prev, body, extra=""):
    """
    A history message as a node that stamps C{prev} sends it: channel,
    offset, epoch, prev, then the publisher's headers.
    """
    prevLine = "" if prev is None else f"prev:{prev}\r\n"
    return (f"LHTTP/1.0 chat\r\nlhttp-node:position\r\nchannel:{channel}\r\noffset:{offset}\r\n"
            f"epoch:{epoch}\r\n{prevLine}publish:{channel}\r\n{extra}\r\n{body}").encode()


def recoveryReply(channel, recovered, epoch, since, count, offset):
    return (f"LHTTP/1.0 recovery\r\nlhttp-node:reply\r\nchannel:{channel}\r\n"
            f"recovered:{'true' if recovered else 'false'}\r\nepoch:{epoch}\r\nsince:{since}\r\n"
            f"count:{count}\r\noffset:{offset}\r\ncommand:subscribe\r\n\r\n").encode()


class GapClientTests(ClientOnMemoryNodeCase):
    """
    Live gaps (issue 20): a history message whose C{prev} is past the last
    offset seen means some were lost on the way; L{ReconnectingClient}
    subscribes to the channel again from the last offset, without
    reconnecting, holds the channel's messages until the node's
    C{recovery} reply, then delivers what the node sends, once and in
    order. Messages are injected at the protocol level, as a node that
    stamps C{prev} sends them.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.node = MemoryNode(self.clock, lambda: memoryServer(history=("room.*=100",), reactor=self.clock))
        self.client = ReconnectingClient(
            self.clock, "ws://node/", endpoint=self.node,
            retryPolicy=backoffPolicy(initialDelay=1.0, jitter=lambda: 0), recoveryTimeout=5,
        )
        self.received = []
        self.client.onMessage = self.received.append
        self.reports = []
        self.client.onRecovery = self.reports.append
        self.sent = []

    def connect(self):
        protocol = self.connected()
        send = protocol.sendLHTTP

        def record(message, isBinary=None):
            self.sent.append(message)
            return send(message, isBinary)

        protocol.sendLHTTP = record
        return protocol

    def bodies(self):
        return [m.body.decode() for m in self.received]

    def inject(self, protocol, *raws):
        for raw in raws:
            protocol.onMessage(raw, False)

    def test_liveGapRecoveredWithoutReconnecting(self):
        self.client.subscribe("room.a plain")
        self.client.startService()
        protocol = self.connect()
        self.inject(protocol, stampedPrev("room.a", 3, "e", 0, "m3"), stampedPrev("room.a", 5, "e", 3, "m5"))
        # 7 and 9 were lost on the way: 11 says its predecessor is 9.
        self.inject(protocol, stampedPrev("room.a", 11, "e", 9, "m11"))
        [resubscribe] = self.sent
        self.assertEqual(
            (resubscribe.command, resubscribe.getHeader("subscribe"), resubscribe.getHeader("since"),
             resubscribe.getHeader("epoch")),
            ("subscribe", "room.a", "room.a=5", "room.a=e"),
        )
        self.assertEqual((self.client.gaps, self.client.position("room.a")), (1, (5, "e")))
        # Before the node's reply: not delivered (the node sends them again).
        self.inject(protocol, stampedPrev("room.a", 13, "e", 11, "m13"),
                    b"LHTTP/1.0 chat\r\npublish:plain\r\n\r\nplain meanwhile")
        self.assertEqual(self.bodies(), ["m3", "m5", "plain meanwhile"])
        self.inject(
            protocol,
            recoveryReply("room.a", True, "e", 5, 4, 13),
            stampedPrev("room.a", 7, "e", 5, "m7"), stampedPrev("room.a", 9, "e", 7, "m9"),
            stampedPrev("room.a", 11, "e", 9, "m11"), stampedPrev("room.a", 13, "e", 11, "m13"),
            stampedPrev("room.a", 13, "e", 11, "m13 live copy"), stampedPrev("room.a", 15, "e", 13, "m15"),
        )
        self.assertEqual(self.bodies(), ["m3", "m5", "plain meanwhile", "m7", "m9", "m11", "m13", "m15"])
        [report] = self.reports
        self.assertEqual((report.gap, report.recovered, report.since, report.timedOut), (True, True, 5, False))
        self.assertEqual((self.client.gaps, self.client.gapsRecovered, self.client.duplicates), (1, 1, 1))
        self.assertEqual((self.client.connections, len(self.sent)), (1, 1))
        self.assertEqual(self.client.position("room.a"), (15, "e"))
        self.clock.advance(60)
        self.assertEqual(len(self.reports), 1, "no timeout after the reply")

    def test_noGap(self):
        """
        No prev (a node older than prev), prev not past the last offset, a
        new epoch, no position yet: delivered, nothing sent.
        """
        self.client.subscribe("room.a")
        self.client.startService()
        protocol = self.connect()
        self.inject(protocol, stampedPrev("room.a", 4, "e", 2, "first"), stampedPrev("room.a", 6, "e", 4, "next"),
                    stampedPrev("room.a", 8, "e", 1, "prev behind"), stampedPrev("room.a", 20, "e", None, "no prev"),
                    stampedPrev("room.a", 3, "e2", 2, "new epoch"))
        self.assertEqual(self.bodies(), ["first", "next", "prev behind", "no prev", "new epoch"])
        self.assertEqual((self.sent, self.client.gaps), ([], 0))

    def test_forgedPrevNotRead(self):
        """
        Only the node's prev counts: a client's message on a plain channel
        has no position at all, and on a history channel the node's
        headers come before the publisher's.
        """
        self.client.subscribe("room.a plain")
        self.client.startService()
        protocol = self.connect()
        self.inject(
            protocol, stampedPrev("room.a", 1, "e", 0, "m1"),
            b"LHTTP/1.0 chat\r\nchannel:room.a\r\noffset:99\r\nepoch:e\r\nprev:98\r\npublish:plain\r\n\r\nforged",
            stampedPrev("room.a", 2, "e", 1, "honest", extra="prev:1000\r\n"),
        )
        self.assertEqual(self.bodies(), ["m1", "forged", "honest"])
        self.assertEqual((self.sent, self.client.gaps, self.client.position("room.a")), ([], 0, (2, "e")))

    def test_malformedPrevIgnoredAndLogged(self):
        self.client.subscribe("room.a")
        self.client.startService()
        protocol = self.connect()
        with capturedLogs() as events:
            self.inject(protocol, stampedPrev("room.a", 1, "e", 0, "one"), stampedPrev("room.a", 5, "e", "-3", "minus"),
                        stampedPrev("room.a", 9, "e", "\u0663", "arabic digit"))
        self.assertEqual(self.bodies(), ["one", "minus", "arabic digit"])
        self.assertEqual(self.sent, [])
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("malformed prev header", lines[0])

    def test_noReplyInTime(self):
        """
        A node that does not answer the re-subscribe (one that does not
        recover a channel already subscribed to): after C{recoveryTimeout}
        the report says timedOut, what was held is delivered in order, and
        the same gap is not asked for again.
        """
        self.client.subscribe("room.a")
        self.client.startService()
        protocol = self.connect()
        self.inject(protocol, stampedPrev("room.a", 1, "e", 0, "m1"), stampedPrev("room.a", 2, "e", 1, "m2"),
                    stampedPrev("room.a", 5, "e", 4, "m5"), stampedPrev("room.a", 6, "e", 5, "m6"),
                    stampedPrev("room.a", 6, "e", 5, "m6 again"))
        self.assertEqual(self.bodies(), ["m1", "m2"])
        self.clock.advance(4.9)
        self.assertEqual(self.reports, [])
        self.clock.advance(0.1)
        [report] = self.reports
        self.assertEqual((report.gap, report.timedOut, report.recovered, report.since), (True, True, False, 2))
        self.assertEqual(self.bodies(), ["m1", "m2", "m5", "m6"])
        self.assertEqual((self.client.gaps, self.client.gapsRecovered, self.client.duplicates), (1, 0, 1))
        self.assertEqual(len(self.sent), 1)
        self.inject(protocol, stampedPrev("room.a", 9, "e", 8, "m9"))
        self.assertEqual((self.client.gaps, self.sent[1].getHeader("since")), (2, "room.a=6"))

    def test_notRecoveredTakesTheNextMessage(self):
        """
        A recovery reply saying recovered:false (the node no longer keeps
        what was lost): the next message is taken whatever its prev, so a
        gap the node cannot fill is not asked for in a loop.
        """
        self.client.subscribe("room.a")
        self.client.startService()
        protocol = self.connect()
        self.inject(protocol, stampedPrev("room.a", 1, "e", 0, "m1"), stampedPrev("room.a", 50, "e", 40, "m50"),
                    recoveryReply("room.a", False, "e", 1, 1, 50), stampedPrev("room.a", 50, "e", 40, "m50"),
                    stampedPrev("room.a", 51, "e", 50, "m51"))
        self.assertEqual(self.bodies(), ["m1", "m50", "m51"])
        [report] = self.reports
        self.assertEqual((report.gap, report.recovered), (True, False))
        self.assertEqual((self.client.gapsRecovered, len(self.sent)), (0, 1))

    def docsSample(self):
        """
        docs/protocol.rst, "Gaps: what a client does": the stamped message
        (its prev past the last offset received, 5) makes the client send
        the re-subscribe shown there, byte for byte.
        """
        from docsnippets import blockWith

        text = blockWith("::", "since:room.1=5", ["docs/protocol.rst"])
        stampedMessage, resubscribe = [line.encode().decode("unicode_escape").encode("latin-1")
                                       for line in text.splitlines()]
        self.client.subscribe("room.1")
        self.client.startService()
        protocol = self.connect()
        self.inject(protocol, stampedPrev("room.1", 5, "5f1c2a", 3, "five"), stampedMessage)
        self.assertEqual([m.toBytes() for m in self.sent], [resubscribe])
        self.assertEqual((self.bodies(), self.client.gaps), (["five"], 1))

    def test_unsubscribeForgetsTheGap(self):
        self.client.subscribe("room.a")
        self.client.startService()
        protocol = self.connect()
        self.inject(protocol, stampedPrev("room.a", 1, "e", 0, "m1"), stampedPrev("room.a", 5, "e", 4, "m5"))
        self.client.unsubscribe("room.a")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def dropFromNode(self, protocol, body):
        """
        Lose the node's first message with that body on its way to the client.
        """
        received = protocol.onLHTTPMessage
        lost = []

        def filtered(message):
            if message.body == body and not lost:
                lost.append(message)
            else:
                received(message)

        protocol.onLHTTPMessage = filtered

    def test_connectionDropsWhileRecovering(self):
        """
        Against the in-memory node: the gap is seen (the injected copy of
        the node's message carries the prev a node stamping it would
        give), the connection drops before any reply, and the reconnect's
        subscribe recovers from the same offset: every message once.
        """
        self.client.subscribe("room.a")
        self.client.startService()
        protocol = self.connect()
        self.dropFromNode(protocol, b"two")
        for body in (b"one", b"two"):
            self.publishOnNode("room.a", body)
        epoch = self.client.position("room.a")[1]
        self.inject(protocol, stampedPrev("room.a", 3, epoch, 2, "three"))
        self.assertEqual((self.client.gaps, self.bodies()), (1, ["one"]))
        self.node.cut()
        for body in (b"three", b"four"):
            self.publishOnNode("room.a", body)
        self.clock.advance(10)
        self.connected()
        self.assertEqual(self.bodies(), ["one", "two", "three", "four"])
        report = self.client.recoveries["room.a"]
        self.assertEqual((report.gap, report.recovered, report.since, report.count), (True, True, 1, 3))
        self.assertEqual(self.client.gapsRecovered, 1)

    def test_gapRecoveredByTheNode(self):
        """
        End to end on the in-memory node: a message lost on the way to the
        client is seen from the next one's prev and recovered by the node
        without reconnecting.
        """
        self.client.subscribe("room.a")
        self.client.startService()
        protocol = self.connect()
        self.dropFromNode(protocol, b"two")
        for body in (b"one", b"two", b"three"):
            self.publishOnNode("room.a", body)
        self.publishOnNode("room.a", b"four")
        self.assertEqual(self.bodies(), ["one", "two", "three", "four"])
        self.assertEqual((self.client.gaps, self.client.gapsRecovered, self.client.connections), (1, 1, 1))
        self.assertTrue(self.client.recoveries["room.a"].gap)


def test_gapDocsSample():
    """
    docs/protocol.rst's gap sample (L{GapClientTests.docsSample}).
    """
    case = GapClientTests("docsSample")
    case.setUp()
    case.docsSample()


class OfflineEndpoint:
    """
    A client endpoint that refuses to connect while C{offline}: a client
    kept away from a node for as long as a test wants.
    """

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.offline = False

    def connect(self, factory):
        if self.offline:
            return fail(ConnectionRefusedError("offline"))
        return self.endpoint.connect(factory)


async def publishMany(node, channel, bodies):
    """
    Publish from another connection, and wait until the node handled it all.
    """
    publisher = await connect(reactor, node.url)
    try:
        for body in bodies:
            publisher.publish(channel, "chat", (), body)
        await publisher.sync(30)
    finally:
        publisher.sendClose(1000)
        await publisher.closed


async def publishWhileAway(client, endpoint, node, channel, bodies):
    """
    Cut C{client} off (its L{OfflineEndpoint} refuses to reconnect),
    publish C{bodies} on C{channel} from another connection, and let it
    reconnect.
    """
    endpoint.offline = True
    client.protocol.transport.abortConnection()
    await eventually(lambda: client.protocol is None, timeout=10, what="the disconnect")
    await publishMany(node, channel, bodies)
    endpoint.offline = False


@pytest_twisted.ensureDeferred
async def test_recoveryAcrossDisconnectAndRestart(startNode):
    """
    Against real nodes: 1,000 messages published while the client is away
    arrive after it reconnects, in order, once each, then live ones; after
    the node restarts (a new epoch in memory) what the new node kept.
    """
    from lhttp.client import clientEndpoint

    history = ("--history", "room.*=2000")
    node = startNode(*history)
    endpoint = OfflineEndpoint(clientEndpoint(reactor, node.url))
    received = []
    client = ReconnectingClient(
        reactor, node.url, onMessage=received.append, endpoint=endpoint,
        retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=0.3),
    )
    client.subscribe("room.a", since=0)
    client.startService()
    try:
        await client.whenConnected()
        await publishMany(node, "room.a", [b"before"])
        await eventually(lambda: received, timeout=10, what="the first message")

        away = [b"away %d" % i for i in range(1000)]
        await publishWhileAway(client, endpoint, node, "room.a", away)
        await eventually(lambda: len(received) >= 1001, timeout=30, what="the 1000 missed")
        await publishMany(node, "room.a", [b"live"])
        await eventually(lambda: len(received) >= 1002, timeout=10, what="the live one")
        assert [m.body for m in received] == [b"before", *away, b"live"]
        report = client.recoveries["room.a"]
        assert (report.recovered, report.count) == (True, 1000)
        assert client.duplicates == 0

        endpoint.offline = True
        node.stop()
        await eventually(lambda: client.protocol is None, timeout=10, what="the disconnect")
        node = startNode(*history, port=node.port)
        await publishMany(node, "room.a", [b"after 1", b"after 2"])
        endpoint.offline = False
        await eventually(lambda: len(received) >= 1004, timeout=15, what="the kept ones")
        await client.sync(10)
        assert [m.body for m in received[1002:]] == [b"after 1", b"after 2"]
        assert client.recoveries["room.a"].recovered is False
        assert client.recoveries["room.a"].epoch != report.epoch
    finally:
        await client.stopService()


@pytest_twisted.ensureDeferred
async def test_liveGapsRecoveredFromARealNode(startNode):
    """
    Against a real node: one message in ten published by another client is
    lost on its way to the subscriber (dropped in the subscriber's
    protocol, the first time it comes). Each loss is seen from the next
    message's prev and recovered on the same connection: every message
    arrives once, in order.
    """
    node = startNode("--history", "room.*=2000")
    received = []
    client = ReconnectingClient(reactor, node.url, onMessage=received.append,
                                retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=0.3))
    client.subscribe("room.a", since=0)
    client.startService()
    try:
        protocol = await client.whenConnected()
        deliver = protocol.onLHTTPMessage
        lost = set()

        def lossy(message):
            number = int(message.body.split()[-1]) if message.body.startswith(b"n ") else -1
            if number % 10 == 5 and number < 290 and number not in lost:
                lost.add(number)
                return
            deliver(message)

        protocol.onLHTTPMessage = lossy
        bodies = [b"n %d" % i for i in range(300)]
        # In tens, each waited for: one loss, one gap, one recovery each.
        publisher = await connect(reactor, node.url)
        try:
            for start in range(0, 300, 10):
                for body in bodies[start:start + 10]:
                    publisher.publish("room.a", "chat", (), body)
                await eventually(lambda: len(received) >= start + 10, timeout=10,
                                 what=f"messages up to {start + 9}, the lost one recovered")
        finally:
            publisher.sendClose(1000)
            await publisher.closed
        await publishMany(node, "room.a", [b"live"])
        await eventually(lambda: len(received) >= 301, timeout=10, what="the live one")
        assert [m.body for m in received] == [*bodies, b"live"]
        assert len(lost) == 29
        assert (client.gaps, client.gapsRecovered, client.connections, client.duplicates) == (29, 29, 1, 0)
    finally:
        await client.stopService()


class AuthClientTests(ClientOnMemoryNodeCase):
    """
    L{ReconnectingClient} with C{token}/C{getToken} against the scripted
    fake node of C{tests/authnode.py} (the wire forms of
    C{docs/protocol.rst}, "Authentication").
    """

    def setUp(self):
        from authnode import AuthNode

        self.clock = MemoryReactorClock()
        self.node = MemoryNode(self.clock, lambda: AuthNode(self.clock))
        self.errors = []
        self.given = []

    def makeClient(self, tokens=None, **options):
        """
        A client whose C{getToken} gives C{tokens} in turn (when given).
        """
        if tokens is not None:
            tokens = list(tokens)

            def getToken():
                self.given.append(tokens[0])
                # A Deferred, as a web call would give.
                return succeed(tokens.pop(0) if len(tokens) > 1 else tokens[0])

            options["getToken"] = getToken
        self.client = ReconnectingClient(
            self.clock, "ws://node/", endpoint=self.node,
            retryPolicy=backoffPolicy(initialDelay=1.0, factor=2.0, maxDelay=60.0, jitter=lambda: 0),
            **options,
        )
        self.client.onAuthError = self.errors.append
        return self.client

    def received(self, index=-1):
        """
        What the node's connection C{index} received, as commands.
        """
        return [m.command for m in self.node.server.connections[index].received]

    def test_connectFirstAndNothingBeforeTheReply(self):
        client = self.makeClient(token="alice-1")
        client.subscribe("room")
        client.startService()
        protocol = self.connected()
        [connection] = self.node.server.connections
        first = connection.received[0]
        self.assertEqual(first.toBytes(), b"LHTTP/1.0 connect\r\ntoken:alice-1\r\n\r\n")
        self.assertEqual(self.received(), ["connect", "subscribe"])
        self.assertEqual((client.user, client.expires), ("alice", 3600))
        self.assertEqual((protocol.user, protocol.expires), ("alice", 3600))
        self.assertEqual(self.errors, [])

    def test_withoutTokenTheBytesAreThoseOfBefore(self):
        client = self.makeClient()
        client.subscribe("room")
        client.startService()
        self.connected()
        [connection] = self.node.server.connections
        self.assertEqual(connection.received[0].toBytes(), b"LHTTP/1.0 subscribe\r\nsubscribe:room\r\n\r\n")

    def test_getTokenAndRefreshBeforeExpires(self):
        client = self.makeClient(["alice-short", "alice-1"])
        client.startService()
        self.connected()
        self.assertEqual((self.given, client.expires), (["alice-short"], 40))
        # 40 s left: refreshed a quarter of that before, at 30 s.
        self.clock.advance(29.9)
        self.node.flush()
        self.assertEqual(self.received(), ["connect"])
        self.clock.advance(0.1)
        self.node.flush()
        self.assertEqual(self.received(), ["connect", "refresh"])
        self.assertEqual(self.node.server.connections[0].received[1].getHeader("token"), "alice-1")
        self.assertEqual(client.expires, 30 + 3600)
        self.assertEqual(self.given, ["alice-short", "alice-1"])

    def test_refreshNoticeGetsAFreshToken(self):
        client = self.makeClient(["notice", "alice-1"])
        client.startService()
        self.connected()
        self.node.flush()
        self.assertEqual(self.received(), ["connect", "refresh"])
        # dave's connection refreshed with alice's token: 403, kept as it was.
        [error] = self.errors
        self.assertIsInstance(error, ErrorReply)
        self.assertEqual((error.status, error.reason), (403, "forbidden"))
        self.assertIsNotNone(client.protocol)

    def test_refreshNoticeWithoutGetTokenIsReported(self):
        self.makeClient(token="notice").startService()
        self.connected()
        [error] = self.errors
        self.assertEqual((error.status, error.reason), (401, "token expired"))

    def test_unauthorizedRetriedOnceWithAFreshTokenThenStops(self):
        client = self.makeClient(["expired", "expired"])
        waiting = client.whenConnected()
        client.startService()
        self.node.flush()
        self.clock.advance(2)
        self.node.flush()
        self.assertEqual(self.given, ["expired", "expired"])
        self.assertEqual(len(self.node.attempts), 2)
        self.clock.advance(60)
        self.node.flush()
        self.assertEqual(len(self.node.attempts), 2, "stopped")
        [error] = self.errors
        self.assertIsInstance(error, Unauthorized)
        self.assertEqual(error.code, 4401)
        self.assertEqual(error.reply.status, 401)
        self.assertIn("token expired", str(error))
        self.assertIs(self.failureResultOf(waiting, Unauthorized).value, error)

    def test_unauthorizedThenAFreshTokenConnects(self):
        client = self.makeClient(["expired", "alice-1"])
        client.startService()
        self.node.flush()
        self.clock.advance(2)
        self.assertEqual(self.connected().user, "alice")
        self.assertEqual(self.errors, [])

    def test_firstFailureFailsWhenConnectedWithTheReply(self):
        client = self.makeClient(token="expired")
        waiting = client.whenConnected(failAfterFailures=1)
        client.startService()
        self.node.flush()
        self.assertEqual(self.failureResultOf(waiting, ErrorReply).value.status, 401)

    def test_disconnectedForGood(self):
        client = self.makeClient(token="kick")
        client.startService()
        self.node.flush()
        self.clock.advance(0)
        self.clock.advance(60)
        self.assertEqual(len(self.node.attempts), 1)
        self.assertEqual([e.code for e in self.errors], [4403])
        self.assertFalse(client.running)

    def test_reconnectCodesGetAFreshToken(self):
        for token, code in (("kick-reconnect", 4000), ("kick-expired", 4419)):
            self.given = []
            self.node = MemoryNode(self.clock, self.node.makeServer)
            client = self.makeClient([token, "alice-1"])
            client.startService()
            self.node.flush()
            self.clock.advance(0.2)
            self.node.flush()
            self.clock.advance(2)
            self.assertEqual(self.connected().user, "alice", code)
            # 4419 came after the notice, whose refresh took one more.
            expected = [token, "alice-1"] + (["alice-1"] if code == 4419 else [])
            self.assertEqual(self.given, expected, code)
            client.stopService()
            self.node.flush()

    def test_unavailableBacksOff(self):
        client = self.makeClient(token="unavailable")
        client.startService()
        for delay in (2, 4, 8, 16):
            self.node.flush()
            self.clock.advance(delay)
        attempts = self.node.attempts
        self.assertEqual([b - a for a, b in zip(attempts, attempts[1:])], [2, 4, 8, 16])
        self.assertIsNone(client.protocol)

    def test_subscriptionTokensSentAgainOrFresh(self):
        asked = []

        def fresh(channel):
            asked.append(channel)
            return None if channel == "gone" else f"sub-{channel}"

        dropped = []
        client = self.makeClient(token="alice-1", getSubscriptionToken=fresh)
        client.onUnsubscribed = lambda channel, reason: dropped.append((channel, reason))
        client.subscribe("private.x", token="sub-private.x")
        client.subscribe(["a", "b"], token={"a": "sub-a", "b": "wrong"})
        client.subscribe("gone plain")
        self.assertRaises(ValueError, client.subscribe, "c d", token="one")
        client.startService()
        self.connected()
        [connection] = self.node.server.connections
        self.assertEqual(
            [(m.getHeader("subscribe"), m.getHeader("channel-token")) for m in connection.received[1:]],
            [("gone plain", None), ("private.x a b", "sub-private.x sub-a wrong")],
        )
        self.assertEqual(connection.channels, {"gone", "plain", "private.x", "a"})
        self.node.cut()
        self.clock.advance(2)
        self.connected()
        self.assertEqual(sorted(asked), ["a", "b", "private.x"])
        connection = self.node.server.connections[-1]
        self.assertEqual(connection.channels, {"gone", "plain", "private.x", "a", "b"})
        self.assertEqual(dropped, [])

    def test_unsubscribedByTheNode(self):
        dropped = []
        client = self.makeClient(token="alice-1")
        client.onUnsubscribed = lambda channel, reason: dropped.append((channel, reason))
        client.subscribe("room drop.me")
        client.startService()
        self.connected()
        self.assertEqual(dropped, [("drop.me", "unsubscribed by the server")])
        self.assertEqual(client.subscriptions, ["room"])
        self.node.cut()
        self.clock.advance(2)
        self.connected()
        self.assertEqual(self.node.server.connections[-1].received[1].getHeader("subscribe"), "room")

    def test_protocolAuthenticate(self):
        client = self.makeClient()
        client.startService()
        protocol = self.connected()
        d = protocol.authenticate("bob-1")
        self.node.flush()
        self.assertEqual(self.successResultOf(d), Credential("bob", 3600))
        refused = protocol.refresh("alice-1")
        self.node.flush()
        self.assertEqual(self.failureResultOf(refused, ErrorReply).value.status, 403)

    def test_getTokenFailureToldAndTriedAgain(self):
        calls = []

        def getToken():
            calls.append(self.clock.seconds())
            if len(calls) == 1:
                raise RuntimeError("token backend down")
            return "alice-1"

        client = self.makeClient(getToken=getToken)
        client.startService()
        self.node.flush()
        [error] = self.errors
        self.assertIsInstance(error, RuntimeError)
        self.clock.advance(2)
        self.assertEqual(self.connected().user, "alice")
        self.assertEqual(calls, [0, 2])


class CredentialReplyTests(SynchronousTestCase):
    """
    The node's replies to C{connect} on the low-level protocol.
    """

    def test_connectSentByHandIsAnswered(self):
        """
        Regression: a C{connect} sent with C{send} (docs/authentication.rst's
        example) gets its reply from C{nextMessage}; the reply to
        C{authenticate} is taken by its L{Deferred} instead.
        """
        from lhttp.client import LHTTPClientProtocol

        reply = (b"LHTTP/1.0 connect\r\nlhttp-node:reply\r\nstatus:200\r\nuser:alice\r\n"
                 b"expires:1767225600\r\n\r\n")
        protocol = LHTTPClientProtocol()
        protocol.sendMessage = lambda payload, isBinary=False: None
        protocol.factory = type("Factory", (), {"reactor": MemoryReactorClock()})()
        protocol.onMessage(reply, False)
        delivered = self.successResultOf(protocol.nextMessage())
        self.assertEqual(delivered.toBytes(), reply)
        self.assertEqual((protocol.user, protocol.expires), ("alice", 1767225600))

        asked = protocol.authenticate("a token")
        protocol.onMessage(reply.replace(b"alice", b"bob"), False)
        self.assertEqual(self.successResultOf(asked).user, "bob")
        self.assertNoResult(protocol.nextMessage())
