"""
The server's behaviour in memory: dispatch, processors, filters, pub/sub,
error replies (SPEC sections 2, 3 and 7), with lhttp.testing's fakes.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from lhttp import HeaderFilter, Processor
from lhttp.brokers.embedded import EmbeddedBroker
from lhttp.errors import Forbidden
from lhttp.interfaces import IBroker, IConnection, IHeaderFilter, IProcessor, IProcessorPlugin, ISubscriber
from lhttp.plugin import ProcessorPlugin
from lhttp.testing import FakeClient, RecordingBroker, memoryServer


makeServer = memoryServer


class Recorder(Processor):
    def __init__(self):
        self.events = []

    def onOpen(self, connection):
        self.events.append("open")

    def onMessage(self, connection, message):
        self.events.append(message.body)

    def onClose(self, connection):
        self.events.append("close")


class InterfaceTests(SynchronousTestCase):
    def test_implementations(self):
        server = makeServer()
        client = FakeClient(server)
        verifyObject(IConnection, client.connection)
        verifyObject(IProcessor, Processor())
        verifyObject(IHeaderFilter, HeaderFilter())
        verifyObject(IBroker, EmbeddedBroker())
        verifyObject(IBroker, RecordingBroker())
        verifyObject(ISubscriber, client.protocol)
        verifyObject(IProcessorPlugin, ProcessorPlugin("c", "x.Y"))

    def test_addProcessorChecks(self):
        server = makeServer()
        self.assertRaises(TypeError, server.addProcessor, "c", object())
        server.addProcessor("c", Processor())
        self.assertRaises(ValueError, server.addProcessor, "c", Processor())


class PubSubTests(SynchronousTestCase):
    def setUp(self):
        self.broker = RecordingBroker()
        self.server = makeServer(broker=self.broker)

    def test_subscribeSeveralPublishUnsubscribe(self):
        alice, bob = FakeClient(self.server), FakeClient(self.server)
        alice.receive(b"LHTTP/1.0 subscribe\r\nsubscribe:a b c\r\n\r\n")
        message = b"LHTTP/1.0 chat\r\npublish: a c\r\n\r\nhi"
        bob.receive(message)
        self.assertEqual(alice.payloads(), [message, message])
        self.assertEqual(bob.payloads(), [])
        alice.receive(b"LHTTP/1.0 leave\r\nunsubscribe:a\r\n\r\n")
        bob.receive(message)
        self.assertEqual(alice.payloads(), [message] * 3)
        self.assertEqual(alice.connection.subscriptions, {"b", "c"})

    def test_senderReceivesOwnPublishOnce(self):
        alice = FakeClient(self.server)
        message = b"LHTTP/1.0 chat\r\nsubscribe:a\r\npublish:a\r\n\r\nme"
        alice.receive(message)
        self.assertEqual(alice.payloads(), [message])

    def test_framedOncePerPublish(self):
        prepared = []
        original = self.server.channels._prepare
        self.server.channels._prepare = lambda *a: prepared.append(a) or original(*a)
        clients = [FakeClient(self.server) for _ in range(5)]
        for client in clients:
            client.receive(b"LHTTP/1.0 s\r\nsubscribe:a b\r\n\r\n")
        clients[0].receive(b"LHTTP/1.0 p\r\npublish:a b\r\n\r\nx")
        self.assertEqual(len(prepared), 1)
        self.assertEqual([len(c.payloads()) for c in clients], [2] * 5)

    def test_textAndBinaryFrames(self):
        alice = FakeClient(self.server)
        alice.receive(b"LHTTP/1.0 s\r\nsubscribe:a\r\n\r\n")
        alice.receive(b"LHTTP/1.0 p\r\npublish:a\r\n\r\n\xff\x00", isBinary=True)
        alice.receive(b"LHTTP/1.0 p\r\npublish:a\r\n\r\ntext", isBinary=True)
        self.assertEqual([binary for _, binary in alice.sent()], [True, False])

    def test_brokerHoldsOneSubscriptionPerLocalChannel(self):
        alice, bob = FakeClient(self.server), FakeClient(self.server)
        alice.receive(b"LHTTP/1.0 s\r\nsubscribe:a b\r\n\r\n")
        bob.receive(b"LHTTP/1.0 s\r\nsubscribe:a\r\n\r\n")
        self.assertEqual(self.broker.subscribed, {"a", "b"})
        alice.disconnect()
        self.assertEqual(self.broker.subscribed, {"a"})
        bob.receive(b"LHTTP/1.0 s\r\nunsubscribe:a\r\n\r\n")
        self.assertEqual(self.broker.subscribed, set())
        self.assertEqual(len(self.broker.events), 4)

    def test_badChannelRefusedBeforeAnything(self):
        recorder = Recorder()
        self.server.addProcessor("c", recorder)
        alice = FakeClient(self.server)
        for bad in ("*", "a.>", "a..b", "x" * 300):
            alice.clear()
            alice.receive(f"LHTTP/1.0 c\r\nsubscribe:ok\r\npublish:{bad}\r\n\r\n".encode())
            [reply] = alice.messages()
            self.assertEqual((reply.command, reply.getHeader("status")), ("error", "400"))
        self.assertEqual(recorder.events, [])
        self.assertEqual(alice.connection.subscriptions, frozenset())

    def test_brokerNotReady(self):
        alice = FakeClient(self.server)
        self.broker.ready = False
        alice.receive(b"LHTTP/1.0 c\r\npublish:a\r\n\r\nx")
        [reply] = alice.messages()
        self.assertEqual(reply.getHeader("status"), "503")
        self.assertEqual(self.broker.published, [])

    def test_tooManySubscriptions(self):
        server = makeServer(maxSubscriptions=2)
        alice = FakeClient(server)
        alice.receive(b"LHTTP/1.0 s\r\nsubscribe:a b c\r\n\r\n")
        [reply] = alice.messages()
        self.assertEqual(reply.getHeader("status"), "429")
        self.assertEqual(alice.connection.subscriptions, frozenset())


class ProcessorTests(SynchronousTestCase):
    def setUp(self):
        self.server = makeServer()

    def test_openOnceBeforeMessagesCloseAtDisconnect(self):
        recorder, other = Recorder(), Recorder()
        self.server.addProcessor("c", recorder)
        self.server.addProcessor("d", other)
        client = FakeClient(self.server)
        client.receive(b"LHTTP/1.0 c\r\n\r\n1")
        client.receive(b"LHTTP/1.0 c\r\n\r\n2")
        client.disconnect()
        self.assertEqual(recorder.events, ["open", b"1", b"2", "close"])
        self.assertEqual(other.events, [])

    def test_deferredKeepsOrder(self):
        pending = []
        seen = []

        class Slow(Processor):
            def onMessage(self, connection, message):
                seen.append(message.body)
                if message.body == b"1":
                    d = Deferred()
                    pending.append(d)
                    return d
                connection.send(message.body)

        self.server.addProcessor("c", Slow())
        client = FakeClient(self.server)
        for n in (b"1", b"2", b"3"):
            client.receive(b"LHTTP/1.0 c\r\n\r\n" + n)
        self.assertEqual(seen, [b"1"])
        pending[0].callback(None)
        self.assertEqual(seen, [b"1", b"2", b"3"])
        self.assertEqual([m.body for m in client.messages()], [b"2", b"3"])

    def test_queueBoundStopsReading(self):
        """
        Messages that pile up behind a waiting one stop the node reading
        from that client past the queue's bounds (bytes or count), and
        reading resumes once half is handled.
        """
        pending = []

        class Slow(Processor):
            def onMessage(self, connection, message):
                if message.body == b"wait":
                    d = Deferred()
                    pending.append(d)
                    return d

        for kwargs, message, count in (
            ({"maxQueuedBytes": 1000}, b"LHTTP/1.0 c\r\n\r\n" + b"x" * 100, 8),
            ({"maxQueuedMessages": 5}, b"LHTTP/1.0 c\r\n\r\n", 5),
        ):
            server = makeServer(**kwargs)
            server.addProcessor("c", Slow())
            client = FakeClient(server)
            client.receive(b"LHTTP/1.0 c\r\n\r\nwait")
            for _ in range(count):
                client.receive(message)
            self.assertTrue(client.reading)
            client.receive(message)
            self.assertFalse(client.reading)
            pending.pop().callback(None)
            self.assertTrue(client.reading)
            self.assertEqual(client.protocol.pipeline.queuedBytes, 0)

    def test_manyFiredDeferredsDoNotRecurse(self):
        class Quick(Processor):
            def onMessage(self, connection, message):
                return succeed(None)

        self.server.addProcessor("c", Quick())
        client = FakeClient(self.server)
        pipeline = client.protocol.pipeline
        pipeline.busy = True
        for _ in range(5000):
            client.receive(b"LHTTP/1.0 c\r\npublish:a\r\n\r\n")
        pipeline.busy = False
        self.server.dispatcher._drain(pipeline)
        self.assertEqual(len(pipeline.queue), 0)

    def test_raisingProcessorGets500AndConnectionLives(self):
        class Broken(Processor):
            def onMessage(self, connection, message):
                if message.body == b"boom":
                    raise RuntimeError("secret detail")
                connection.send(b"fine")

        self.server.addProcessor("c", Broken())
        client = FakeClient(self.server)
        client.receive(b"LHTTP/1.0 c\r\n\r\nboom")
        client.receive(b"LHTTP/1.0 c\r\n\r\nok")
        error, fine = client.messages()
        self.assertEqual((error.command, error.getHeader("status")), ("error", "500"))
        self.assertNotIn(b"secret", error.toBytes())
        self.assertEqual(fine.body, b"fine")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failedDeferredGets500(self):
        class Failing(Processor):
            def onMessage(self, connection, message):
                d = Deferred()
                d.errback(KeyError("x"))
                return d

        self.server.addProcessor("c", Failing())
        client = FakeClient(self.server)
        client.receive(b"LHTTP/1.0 c\r\n\r\n")
        self.assertEqual(client.messages()[0].getHeader("status"), "500")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_malformedGets400AndConnectionLives(self):
        self.server.addProcessor("echo", _Echo())
        client = FakeClient(self.server)
        client.receive(b"nonsense")
        client.receive(b"LHTTP/1.0 echo\r\n\r\nstill here")
        error, echo = client.messages()
        self.assertEqual(error.getHeader("status"), "400")
        self.assertEqual(echo.body, b"still here")

    def test_publishedAsProcessorLeftIt(self):
        class Stamp(Processor):
            def onMessage(self, connection, message):
                connection.setCommand("stamped")
                connection.setHeader("by", "server")
                connection.setBody(message.body.upper())

        self.server.addProcessor("chat", Stamp())
        alice = FakeClient(self.server)
        alice.receive(b"LHTTP/1.0 s\r\nsubscribe:a\r\n\r\n")
        alice.receive(b"LHTTP/1.0 chat\r\npublish:a\r\nk:v\r\n\r\nhi")
        [delivered] = alice.messages()
        self.assertEqual(delivered.command, "stamped")
        self.assertEqual(delivered.headers, [("publish", "a"), ("k", "v"), ("by", "server")])
        self.assertEqual(delivered.body, b"HI")

    def test_sentReplyLeavesPublishVerbatim(self):
        self.server.addProcessor("chat", _Echo())
        alice = FakeClient(self.server)
        alice.receive(b"LHTTP/1.0 s\r\nsubscribe:a\r\n\r\n")
        message = b"LHTTP/1.0 chat\r\npublish: a\r\n\r\nhi"
        alice.receive(message)
        reply, delivered = alice.payloads()
        self.assertEqual(reply, b"LHTTP/1.0 echoed\r\necho-by:lhttp\r\n\r\nhi")
        self.assertEqual(delivered, message)

    def test_multipartPartsForProcessor(self):
        seen = []

        class Parts(Processor):
            def onMessage(self, connection, message):
                seen.append([(p.headers, p.body) for p in connection.getParts()])

        self.server.addProcessor("upload", Parts())
        client = FakeClient(self.server)
        client.receive(b"LHTTP/1.0 upload\r\nmultipart:0 14\r\n\r\nk1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2")
        client.receive(b"LHTTP/1.0 upload\r\nmultipart:0 99\r\n\r\nk1:v1\r\n\r\nbody1")
        self.assertEqual(seen, [[([("k1", "v1")], b"body1"), ([("k2", "v2")], b"body2")]])
        self.assertEqual(client.messages()[0].getHeader("status"), "400")


class _Echo(Processor):
    def onMessage(self, connection, message):
        connection.setCommand("echoed")
        connection.setHeader("echo-by", "lhttp")
        connection.send(message.body)


class FilterTests(SynchronousTestCase):
    def test_userFilterRunsFirstAndCanRefuse(self):
        server = makeServer()
        order = []

        class Auth(HeaderFilter):
            def onOpen(self, connection):
                order.append("open")

            def beforeRequest(self, connection, message):
                order.append("before")
                if message.getHeader("token") != "good":
                    raise Forbidden("bad token")

            def afterRequest(self, connection, message):
                order.append("after")

            def onClose(self, connection):
                order.append("close")

        server.addFilter(Auth())
        client = FakeClient(server)
        client.receive(b"LHTTP/1.0 c\r\nsubscribe:a\r\n\r\n")
        [reply] = client.messages()
        self.assertEqual(reply.getHeader("status"), "403")
        self.assertEqual(client.connection.subscriptions, frozenset())
        client.receive(b"LHTTP/1.0 c\r\ntoken:good\r\nsubscribe:a\r\n\r\n")
        self.assertEqual(client.connection.subscriptions, {"a"})
        client.disconnect()
        self.assertEqual(order, ["open", "before", "before", "after", "close"])

    def test_builtinOrder(self):
        server = makeServer()
        names = [type(f).__name__ for f in server.dispatcher.filters]
        self.assertEqual(names, ["SubscribeFilter", "PublishFilter", "UnsubscribeFilter", "UpstreamFilter"])

    def test_subscribeThenPublishThenUnsubscribeInOneMessage(self):
        server = makeServer()
        client = FakeClient(server)
        message = b"LHTTP/1.0 c\r\nunsubscribe:a\r\npublish:a\r\nsubscribe:a\r\n\r\nonce"
        client.receive(message)
        self.assertEqual(client.payloads(), [message])
        self.assertEqual(client.connection.subscriptions, frozenset())


class SlowBroker(RecordingBroker):
    """
    A broker whose subscriptions and confirmations take a while, like NATS.
    """

    def __init__(self):
        RecordingBroker.__init__(self)
        self.pendingSubscriptions = []
        self.pendingConfirmations = []

    def subscribe(self, channel):
        RecordingBroker.subscribe(self, channel)
        d = Deferred()
        self.pendingSubscriptions.append(d)
        return d

    def confirm(self):
        d = Deferred()
        self.pendingConfirmations.append(d)
        return d


class ClusterSemanticsTests(SynchronousTestCase):
    def setUp(self):
        self.broker = SlowBroker()
        self.server = makeServer(broker=self.broker)

    def test_subscribeHoldsLaterMessagesUntilBrokerHasIt(self):
        self.server.addProcessor("echo", _Echo())
        alice = FakeClient(self.server)
        alice.receive(b"LHTTP/1.0 s\r\nsubscribe:a\r\n\r\n")
        alice.receive(b"LHTTP/1.0 echo\r\n\r\nafter")
        self.assertEqual(alice.payloads(), [])
        bob = FakeClient(self.server)
        bob.receive(b"LHTTP/1.0 s\r\nsubscribe:a\r\n\r\n")
        self.assertEqual(len(self.broker.pendingSubscriptions), 1)
        self.broker.pendingSubscriptions[0].callback(None)
        self.assertEqual([m.body for m in alice.messages()], [b"after"])

    def test_unconfirmedPublishIsReportedToItsSender(self):
        alice = FakeClient(self.server)
        alice.receive(b"LHTTP/1.0 chat1\r\npublish:a\r\n\r\none")
        alice.receive(b"LHTTP/1.0 chat2\r\npublish:a\r\n\r\ntwo")
        from lhttp.errors import BrokerUnavailable

        self.broker.failPublishes(BrokerUnavailable("lost"))
        errors = alice.messages()
        self.assertEqual(
            [(e.command, e.getHeader("status"), e.getHeader("command")) for e in errors],
            [("error", "503", "chat1"), ("error", "503", "chat2")],
        )

    def test_missedNoticeReachesSubscribers(self):
        from lhttp.codec import missedNotice

        self.broker = RecordingBroker()
        server = makeServer(broker=self.broker)
        alice = FakeClient(server)
        alice.receive(b"LHTTP/1.0 s\r\nsubscribe:a b\r\n\r\n")
        self.broker.deliverFromRemote(["b"], missedNotice("b"))
        [notice] = alice.messages()
        self.assertEqual(
            (notice.command, notice.getHeader("status"), notice.getHeader("channel")),
            ("error", "503", "b"),
        )


class PipelineCacheTests(SynchronousTestCase):
    def test_unregisteredCommandsShareOnePipeline(self):
        server = makeServer()
        server.addProcessor("known", Processor())
        client = FakeClient(server)
        for i in range(500):
            client.receive(f"LHTTP/1.0 cmd{i}\r\n\r\n".encode())
        client.receive(b"LHTTP/1.0 known\r\n\r\n")
        self.assertEqual(len(server.dispatcher._pipelines), 2)


class NoProcessorTests(SynchronousTestCase):
    """
    A command with no processor: the reserved headers still work (SPEC
    section 2); with none of them, the message would do nothing, and the
    sender is told so with a 404 rather than left guessing.
    """

    def test_noProcessorNoHeaderIs404(self):
        server = makeServer()
        client = FakeClient(server)
        client.receive(b"LHTTP/1.0 ehco\r\nx:y\r\n\r\ntypo")
        [reply] = client.messages()
        self.assertEqual(
            (reply.command, reply.getHeader("status"), reply.getHeader("reason"), reply.getHeader("command")),
            ("error", "404", "no processor", "ehco"),
        )

    def test_reservedHeaderIsEnough(self):
        server = makeServer()
        client = FakeClient(server)
        message = b"LHTTP/1.0 chat\r\nsubscribe:a\r\npublish:a\r\n\r\nhi"
        client.receive(message)
        self.assertEqual(client.payloads(), [message])

    def test_userFilterRefusesFirst(self):
        class Deny(HeaderFilter):
            def beforeRequest(self, connection, message):
                raise Forbidden("not logged in")

        server = makeServer()
        server.addFilter(Deny())
        client = FakeClient(server)
        client.receive(b"LHTTP/1.0 ehco\r\n\r\n")
        self.assertEqual([m.getHeader("status") for m in client.messages()], ["403"])
