"""
L{lhttp.web.site} in memory: requests judged by their head before their body
is read, bodies kept in memory and bounded, the polite close after an
early answer (issue 12, item 2).
"""

import json
from io import BytesIO

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from lhttp.errors import Forbidden
from lhttp.interfaces import IBodyLimit
from lhttp.web.resource import ErrorResource
from lhttp.web.site import LINGER_BYTES, LINGER_SECONDS
from lhttp.testing import FakeClient, RecordingBroker, memoryServer

MESSAGE = b"LHTTP/1.0 notice\r\npublish:room\r\n\r\nhello"


class HalfClosingTransport(StringTransport):
    """
    A L{StringTransport} that records a half-close (TCP's, not in
    StringTransport) and an abort.
    """

    halfClosed = False
    aborted = False

    def loseWriteConnection(self):
        self.halfClosed = True

    def abortConnection(self):
        self.aborted = True
        StringTransport.abortConnection(self)


def request(path=b"/publish", *headers, method=b"POST"):
    return b"\r\n".join([method + b" " + path + b" HTTP/1.1", b"Host: localhost", *headers]) + b"\r\n\r\n"


def status(data):
    return int(data.split(b" ", 2)[1])


def document(data):
    return json.loads(data.partition(b"\r\n\r\n")[2])


class SiteTestsMixin:
    maxBodySize = None

    def setUp(self):
        self.build()

    def build(self, **options):
        self.clock = MemoryReactorClock()
        self.broker = RecordingBroker()
        self.server = memoryServer(broker=self.broker, reactor=self.clock, maxMessageSize=1000, **options)
        self.subscriber = FakeClient(self.server)
        self.subscriber.receive(b"LHTTP/1.0 s\r\nsubscribe:room\r\n\r\n")
        self.site = self.server.site(self.root(), maxBodySize=self.maxBodySize)

    def root(self):
        return self.server.resource()

    def connect(self):
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = HalfClosingTransport()
        channel.makeConnection(transport)
        return channel, transport


class HeadCheckTests(SiteTestsMixin, SynchronousTestCase):
    def test_announcedTooLargeRefusedAtTheHead(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/publish", b"Content-Length: 1000000000"))
        answer = transport.value()
        self.assertEqual(status(answer), 413)
        self.assertEqual(document(answer)["reason"], "message too large")
        self.assertIn(b"Connection: close", answer)
        self.assertTrue(transport.halfClosed)
        self.assertEqual(self.server.metrics.httpPublishes, {413: 1})

    def test_lingerEndsAfterItsTime(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/publish", b"Content-Length: 1000000000"))
        transport.clear()
        channel.dataReceived(MESSAGE + b"x" * 100000)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.aborted)
        self.clock.advance(LINGER_SECONDS)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.subscriber.payloads(), [])

    def test_lingerEndsAfterItsBytes(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/publish", b"Content-Length: 1000000000"))
        channel.dataReceived(b"x" * LINGER_BYTES)
        self.assertFalse(transport.aborted)
        channel.dataReceived(b"x")
        self.assertTrue(transport.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientClosingEndsTheLinger(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/publish", b"Content-Length: 1000000000"))
        channel.connectionLost(None)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()], [])

    def test_tokenCheckedAtTheHead(self):
        self.build(publishToken="s3cret")
        answers = []
        for headers in (
            (b"Content-Length: 500", b"Expect: 100-continue"),
            (b"Transfer-Encoding: chunked", b"Authorization: Bearer wrong"),
        ):
            channel, transport = self.connect()
            channel.dataReceived(request(b"/publish", *headers))
            answers.append((status(transport.value()), b"100 Continue" in transport.value()))
        self.assertEqual(answers, [(401, False), (403, False)])

    def test_rightTokenGetsContinueThenPublishes(self):
        self.build(publishToken="s3cret")
        channel, transport = self.connect()
        channel.dataReceived(request(
            b"/publish", b"Content-Length: %d" % len(MESSAGE), b"Expect: 100-continue",
            b"Authorization: Bearer s3cret",
        ))
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        channel.dataReceived(MESSAGE)
        self.assertEqual(self.subscriber.payloads(), [MESSAGE])

    def test_chunkedCutOffAtTheLimit(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/publish", b"Transfer-Encoding: chunked"))
        body = MESSAGE + b"x" * 1000
        # The rest of the body, its last chunk included, in one read.
        channel.dataReceived(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        self.assertEqual(status(transport.value()), 413)
        self.assertTrue(transport.halfClosed)
        self.assertEqual(self.subscriber.payloads(), [])

    def test_acceptedBodyInMemory(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/publish", b"Transfer-Encoding: chunked"))
        [pending] = channel.requests
        self.assertIsInstance(pending.content, BytesIO)
        channel.dataReceived(b"%x\r\n%s\r\n0\r\n\r\n" % (len(MESSAGE), MESSAGE))
        self.assertEqual(status(transport.value()), 200)
        self.assertEqual(self.subscriber.payloads(), [MESSAGE])
        self.assertFalse(transport.halfClosed)

    def test_wrongHostRefusedAtTheHead(self):
        channel, transport = self.connect()
        channel.dataReceived(
            request(b"/publish", b"Content-Length: 1000000000").replace(b"localhost", b"evil.example")
        )
        self.assertEqual(document(transport.value())["reason"], "host not allowed")

    def test_interfaces(self):
        verifyObject(IBodyLimit, self.server.resource().children[b"publish"])
        verifyObject(IBodyLimit, ErrorResource(Forbidden("no")))


class _Counting(Resource):
    isLeaf = True

    def __init__(self):
        Resource.__init__(self)
        self.sizes = []

    def render_POST(self, request):
        self.sizes.append((len(request.content.read()), isinstance(request.content, BytesIO)))
        return b"ok"


class _Traversal(Resource):
    def __init__(self, child):
        Resource.__init__(self)
        self.child = child
        self.calls = 0

    def getChild(self, name, request):
        self.calls += 1
        return self.child


class EmbeddedSiteTests(SiteTestsMixin, SynchronousTestCase):
    """
    A user's tree with lhttp mounted at /lhttp/ and their own resources.
    """

    def root(self):
        root = Resource()
        root.putChild(b"lhttp", self.server.resource())
        self.upload = _Counting()
        self.traversal = _Traversal(self.upload)
        root.putChild(b"upload", self.traversal)
        return root

    def test_mountedPublishRefusedAtTheHead(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/lhttp/publish", b"Content-Length: 1000000000"))
        self.assertEqual(status(transport.value()), 413)

    def test_userResourcesKeepTwistedBodies(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/upload/x", b"Content-Length: 200000") + b"x" * 200000)
        # Over Twisted's 100 kB: its temporary file, as with a plain Site.
        self.assertEqual(self.upload.sizes, [(200000, False)])
        self.assertEqual(status(transport.value()), 200)

    def test_traversedOnce(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/upload/x", b"Content-Length: 3") + b"abc")
        self.assertEqual((self.traversal.calls, self.upload.sizes), (1, [(3, True)]))


class NodeSiteTests(SiteTestsMixin, SynchronousTestCase):
    """
    The node's own site: no body in its tree is taken past the message size.
    """

    maxBodySize = 1000

    def test_otherResourcesBounded(self):
        channel, transport = self.connect()
        channel.dataReceived(request(b"/health", b"Content-Length: 1001"))
        self.assertEqual(status(transport.value()), 413)
        channel, transport = self.connect()
        channel.dataReceived(request(b"/health", b"Content-Length: 10", method=b"GET") + b"x" * 10)
        self.assertEqual(status(transport.value()), 200)


class HTTPPhaseTests(SiteTestsMixin, SynchronousTestCase):
    """
    The deadline on a request's arrival, and the pending-connection limits
    (issue 12, item 5).
    """

    def setUp(self):
        SiteTestsMixin.setUp(self)
        self.timeout = self.site.handshakeTimeout

    def test_trickledRequestCutOffAtTheDeadline(self):
        channel, transport = self.connect()
        head = request(b"/", b"Upgrade: websocket")
        for n in range(int(self.timeout) - 1):
            channel.dataReceived(head[n:n + 1])
            self.clock.advance(1)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.server.metrics.httpDropped, {"deadline": 1})
        self.assertEqual(self.site.pendingCount(), 0)
        exposition = self.server.metrics.render()
        self.assertIn(b'lhttp_http_dropped_total{reason="deadline"} 1.0', exposition)
        self.assertIn(b"lhttp_pending_connections 0.0", exposition)

    def test_silentConnectionDroppedWithoutAnswer(self):
        channel, transport = self.connect()
        self.clock.advance(self.timeout)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_unreadAnswerAborted(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET")
        self.clock.advance(self.timeout)
        self.assertFalse(transport.aborted)
        self.clock.advance(2)
        self.assertTrue(transport.aborted)

    def test_deadlineRestartsForEachRequest(self):
        channel, transport = self.connect()
        self.clock.advance(self.timeout - 1)
        channel.dataReceived(request(b"/health/live", method=b"GET"))
        self.assertIn(b"200 OK", transport.value())
        transport.clear()
        # Kept alive; the next request has its own deadline from its first
        # byte.
        self.clock.advance(self.timeout - 1)
        channel.dataReceived(b"GET /health/live HTTP/1.1\r\n")
        self.clock.advance(self.timeout - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))

    def test_upgradeEndsPending(self):
        channel, transport = self.connect()
        self.assertEqual(self.site.pendingCount(), 1)
        self.assertEqual(self.server.metrics.pendingConnections, 1)
        channel.upgrading()
        self.assertEqual(self.site.pendingCount(), 0)
        self.assertEqual(self.server.metrics.pendingConnections, 0)
        self.clock.advance(self.timeout * 10)
        self.assertFalse(transport.disconnecting)

    def test_overThePendingLimitTheOldestGoes(self):
        self.site.maxPendingConnections = 2
        (first, firstTransport), (second, secondTransport) = self.connect(), self.connect()
        first.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(1)
        second.dataReceived(b"GET / HTTP/1.1\r\n")
        third, thirdTransport = self.connect()
        self.assertTrue(firstTransport.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(firstTransport.disconnecting)
        self.assertFalse(secondTransport.disconnecting or thirdTransport.disconnecting)
        self.assertEqual(self.site.pendingCount(), 2)
        self.assertEqual(self.server.metrics.httpDropped, {"evicted": 1})

    def test_idleKeptAliveConnectionGoesQuietly(self):
        self.site.maxPendingConnections = 2
        idle, idleTransport = self.connect()
        idle.dataReceived(request(b"/health/live", method=b"GET"))
        idleTransport.clear()
        busy, busyTransport = self.connect()
        busy.dataReceived(b"GET / HTTP/1.1\r\n")
        self.connect()
        # It was between requests: no answer to a request it did not send.
        self.assertEqual(idleTransport.value(), b"")
        self.assertTrue(idleTransport.disconnecting)
        self.assertFalse(busyTransport.disconnecting)

    def test_connectionAwaitingItsAnswerIsNotDropped(self):
        from test_server import SlowBroker

        broker = SlowBroker()
        self.server = memoryServer(broker=broker, reactor=self.clock)
        self.site = self.server.site()
        self.site.maxPendingConnections = 1
        waiting, waitingTransport = self.connect()
        waiting.dataReceived(request(b"/publish", b"Content-Length: %d" % len(MESSAGE)) + MESSAGE)
        refused, refusedTransport = self.connect()
        self.assertTrue(refusedTransport.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(refusedTransport.disconnecting)
        self.assertFalse(waitingTransport.disconnecting)
        broker.pendingConfirmations[0].callback(None)
        self.assertIn(b"200 OK", waitingTransport.value())

    def test_pendingCountAgainstMaxConnections(self):
        self.build(maxConnections=3)
        self.server.factory.countConnections = 1
        (first, firstTransport), (second, secondTransport) = self.connect(), self.connect()
        third, thirdTransport = self.connect()
        self.assertTrue(firstTransport.disconnecting)
        self.assertFalse(secondTransport.disconnecting or thirdTransport.disconnecting)
        # Every slot a WebSocket: nothing to drop, the newcomer is refused.
        self.server.factory.countConnections = 3
        fourth, fourthTransport = self.connect()
        self.assertTrue(fourthTransport.value().startswith(b"HTTP/1.1 503 "))
        self.assertFalse(secondTransport.disconnecting)
        self.assertEqual(self.server.metrics.httpDropped, {"evicted": 1, "refused": 1})

    def test_closedConnectionLeavesPending(self):
        channel, transport = self.connect()
        channel.connectionLost(None)
        self.assertEqual(self.site.pendingCount(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
