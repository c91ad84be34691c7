"""
lhttp.client: the one-connection client and L{ReconnectingClient}, first in
memory (a real L{LHTTPServer} and real Autobahn protocols joined by
L{twisted.test.iosim}, a L{MemoryReactorClock} for the backoff), then
against a real node that restarts on the same port.
"""

import pytest_twisted
import treq
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from lhttp import LHTTPServer
from lhttp.client import NotConnected, ReconnectingClient
from lhttp.codec import Message
from lhttp.testing import FakeClient
from lhttpclients import eventually


class MemoryNode:
    """
    An in-memory node and a client endpoint that reaches it: each connect
    joins a real server protocol and the client's protocol with iosim.
    """

    def __init__(self, clock):
        self.clock = clock
        self.up = True
        self.attempts = []
        self.pumps = []
        self.start()

    def start(self):
        self.server = LHTTPServer(reactor=self.clock)
        self.up = True

    def stop(self):
        """
        The node goes away: its connections drop, new ones are refused.
        """
        self.up = False
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


class ReconnectingClientTests(SynchronousTestCase):
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

    def connected(self):
        d = self.client.whenConnected()
        self.node.flush()
        return self.successResultOf(d)

    def publishOnNode(self, channel, body):
        FakeClient(self.node.server).receive(
            Message("chat", [("publish", channel)], body).toBytes()
        )
        self.node.flush()

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
