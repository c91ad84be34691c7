"""
The fast paths of the hot path (bench/ and docs/performance.rst say why
they exist) behave exactly like the slow ones they stand for.
"""

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from lhttp import HeaderFilter, LHTTPServer
from lhttp.channels import channelList
from lhttp.errors import BadChannel
from lhttp.protocol import LHTTPServerProtocol
from lhttp.testing import FakeClient


class ChannelListTests(SynchronousTestCase):
    """
    Header values are checked through a small cache; every answer is the
    one the uncached check gives.
    """

    def test_sameAnswerTwice(self):
        self.assertEqual(channelList("a b a c"), ["a", "b", "c"])
        self.assertEqual(channelList("a b a c"), ["a", "b", "c"])
        self.assertEqual(channelList(["a", "b", "a"]), ["a", "b"])

    def test_freshList(self):
        """
        A caller may change the list it gets; the next caller does not see
        that.
        """
        first = channelList("x y")
        first.append("z")
        self.assertEqual(channelList("x y"), ["x", "y"])

    def test_badNameRefusedEveryTime(self):
        for _ in range(2):
            self.assertRaises(BadChannel, channelList, "ok bad*name")
            self.assertRaises(BadChannel, channelList, "   ")

    def test_maxLengthIsPartOfTheAnswer(self):
        self.assertEqual(channelList("abcdef", 10), ["abcdef"])
        self.assertRaises(BadChannel, channelList, "abcdef", 3)
        self.assertEqual(channelList("abcdef", 10), ["abcdef"])

    def test_longValueNotCached(self):
        names = [f"channel{i}" for i in range(300)]
        value = " ".join(names)
        self.assertGreater(len(value), 1024)
        self.assertEqual(channelList(value, 256), names)
        self.assertRaises(BadChannel, channelList, value + " bad>", 256)


class _ReturnsTrue(HeaderFilter):
    def beforeRequest(self, connection, message):
        return True


class DispatchResultTests(SynchronousTestCase):
    def test_nonDeferredResultIgnored(self):
        """
        A step that returns something other than a L{Deferred} (or
        L{None}) does not pause the pipeline.
        """
        server = LHTTPServer(reactor=Clock())
        server.addFilter(_ReturnsTrue())
        subscriber = FakeClient(server)
        subscriber.receive(b"LHTTP/1.0 chat\r\nsubscribe:room\r\n\r\n")
        publisher = FakeClient(server)
        publisher.receive(b"LHTTP/1.0 chat\r\npublish:room\r\n\r\nhi")
        publisher.receive(b"LHTTP/1.0 chat\r\npublish:room\r\n\r\nagain")
        self.assertEqual(
            [m.body for m in subscriber.messages()], [b"hi", b"again"]
        )


class DirectWriteTests(SynchronousTestCase):
    """
    The protocol writes frames straight to its transport when Autobahn's
    C{sendData} would have, and leaves the other cases to Autobahn.
    """

    def protocol(self):
        server = LHTTPServer(reactor=Clock())
        protocol = LHTTPServerProtocol()
        protocol.factory = server.factory
        protocol.transport = StringTransport()
        protocol.state = WebSocketProtocol.STATE_OPEN
        protocol.send_queue = []
        protocol.logOctets = False
        protocol._perMessageCompress = None
        return server, protocol

    def test_preparedFrameWrittenAsIs(self):
        server, protocol = self.protocol()
        prepared = server.factory.prepareMessage(b"LHTTP/1.0 x\r\n\r\nhello", False)
        protocol.sendPreparedMessage(prepared)
        protocol.sendPreparedMessage(prepared)
        self.assertEqual(protocol.transport.value(), prepared.payloadHybi * 2)

    def test_queueKeepsOrder(self):
        """
        While Autobahn has frames queued (sync or chopped sends), a frame
        joins the queue behind them instead of overtaking them.
        """
        server, protocol = self.protocol()
        protocol.send_queue.append((b"queued", False))
        triggered = []
        protocol._trigger = lambda: triggered.append(True)
        protocol.sendData(b"next")
        self.assertEqual(protocol.transport.value(), b"")
        self.assertEqual(protocol.send_queue, [(b"queued", False), (b"next", False)])
        self.assertEqual(triggered, [True])

    def test_backPressureTakesTheSendBufferPath(self):
        """
        While the transport has paused the protocol, a prepared frame is
        counted against the send buffer like any other write.
        """
        server, protocol = self.protocol()
        prepared = server.factory.prepareMessage(b"LHTTP/1.0 x\r\n\r\nhello", False)
        protocol._paused = True
        protocol.sendPreparedMessage(prepared)
        self.assertEqual(protocol._unsent, len(prepared.payloadHybi))
        self.assertEqual(protocol.transport.value(), prepared.payloadHybi)

    def test_droppedConsumerGetsNothing(self):
        server, protocol = self.protocol()
        prepared = server.factory.prepareMessage(b"LHTTP/1.0 x\r\n\r\nhello", False)
        protocol._dropping = True
        protocol.sendPreparedMessage(prepared)
        self.assertEqual(protocol.transport.value(), b"")
