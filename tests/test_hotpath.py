"""
The fast paths of the hot path (bench/ and docs/performance.rst say why
they exist) behave exactly like the slow ones they stand for.
"""

from twisted.trial.unittest import SynchronousTestCase

from lhttp import HeaderFilter
from lhttp.channels import channelList
from lhttp.errors import BadChannel
from lhttp.testing import FakeClient, memoryServer
from lhttp.web.websocket import SLOW_CONSUMER_CLOSE


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
        server = memoryServer()
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
    C{sendData} would have, and leaves the other cases to Autobahn: driven
    through the real protocol, in memory (L{lhttp.testing.FakeClient}).
    """

    def setUp(self):
        self.server = memoryServer(maxSendBuffer=100, slowConsumerGrace=1.0)
        self.client = FakeClient(self.server)
        self.protocol = self.client.protocol
        self.message = b"LHTTP/1.0 x\r\n\r\n" + b"y" * 50
        self.prepared = self.server.factory.prepareMessage(self.message, False)

    def test_preparedFrameWrittenAsIs(self):
        self.protocol.sendPreparedMessage(self.prepared)
        self.protocol.sendPreparedMessage(self.prepared)
        self.assertEqual(self.client.payloads(), [self.message] * 2)

    def test_queueKeepsOrder(self):
        """
        While Autobahn has frames queued (a sync send), a frame joins the
        queue behind them instead of overtaking them.
        """
        self.protocol.sendMessage(b"first", sync=True)
        self.protocol.sendPreparedMessage(self.prepared)
        self.assertEqual(self.client.payloads(), [b"first", self.message])

    def test_backPressureCountsAndThenDrops(self):
        """
        While the transport has paused the protocol (the kernel takes no
        more), frames are counted against the send buffer; past it, the
        client is closed as a slow consumer and gets nothing more.
        """
        self.protocol.pauseProducing()
        self.protocol.sendPreparedMessage(self.prepared)
        self.protocol.sendPreparedMessage(self.prepared)
        self.protocol.sendPreparedMessage(self.prepared)
        self.protocol.resumeProducing()
        self.assertEqual(self.client.payloads(), [self.message])
        self.assertEqual(self.client.closedWith[0], SLOW_CONSUMER_CLOSE)
        self.assertEqual(self.server.metrics.slowConsumerDisconnects, 1)

    def test_unpausedWritesAreNotCounted(self):
        for _ in range(10):
            self.protocol.sendPreparedMessage(self.prepared)
        self.assertEqual(self.client.payloads(), [self.message] * 10)
        self.assertIsNone(self.client.closedWith)


class ConnectionOptionsLogTests(SynchronousTestCase):
    """
    Autobahn's debug line listing a new connection's options is formatted
    only if shown: a connection costs no C{pprint} while debug logging is
    off, and the line reads as Autobahn wrote it when it is on.
    """

    def test_noFormattingPerConnection(self):
        import pprint

        calls = []
        real = pprint.PrettyPrinter.pformat
        self.patch(pprint.PrettyPrinter, "pformat",
                   lambda printer, value: calls.append(value) or real(printer, value))
        server = memoryServer()
        FakeClient(server)
        FakeClient(server)
        self.assertEqual(len(server.connections), 2)
        self.assertEqual(calls, [])

    def test_sameTextWhenShown(self):
        import pprint

        import autobahn.websocket.protocol

        options = [("openHandshakeTimeout", 10, "LHTTPServerFactory"), ("autoPingSize", 4, "X")]
        shown = autobahn.websocket.protocol.pformat(options)
        self.assertEqual(str(shown), pprint.pformat(options))
        self.assertEqual(repr(shown), pprint.pformat(options))
