"""
The upstream header in memory (SPEC section 5): the allow-list, the guarded
agent, the treq client against L{treq.testing.StubTreq}, and the filter's
order, error replies, relaying and back-pressure with L{lhttp.testing}'s
fakes.
"""

import json

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lhttp import Processor
from lhttp.codec import parse
from lhttp.errors import BadGateway, BadUpstream, Forbidden, GatewayTimeout
from lhttp.interfaces import IHeaderFilter, IUpstream
from lhttp.tap import Options, makeService
from lhttp.config import Config
from lhttp.metrics import Metrics
from lhttp.testing import FakeClient, FakeUpstream, RecordingBroker, memoryServer
from lhttp.upstream import AllowList, HTTPUpstream, NoUpstream, UpstreamFilter, UpstreamResponse, makeUpstream
from lhttp.upstream.agent import GuardedAgent

BACKEND = "http://127.0.0.1:8080"
PEER = IPv4Address("TCP", "10.1.2.3", 5555)


class InterfaceTests(SynchronousTestCase):
    def test_implementations(self):
        allow = AllowList([BACKEND + "/"])
        verifyObject(IUpstream, HTTPUpstream(allow, StubTreq(Resource()), Clock()))
        verifyObject(IUpstream, NoUpstream())
        verifyObject(IUpstream, FakeUpstream())
        verifyObject(IHeaderFilter, UpstreamFilter(NoUpstream(), Clock(), Metrics()))
        verifyObject(IAgent, GuardedAgent(RecordingAgent(), allow.origins))

    def test_makeUpstreamIsOffWithoutAllowList(self):
        self.assertIsInstance(makeUpstream(MemoryReactorClock(), Config()), NoUpstream)
        upstream = makeUpstream(MemoryReactorClock(), Config(upstreamAllow=[BACKEND + "/"], upstreamTimeout=3))
        self.assertIsInstance(upstream, HTTPUpstream)
        self.assertEqual(upstream.timeout, 3)


class AllowListTests(SynchronousTestCase):
    def setUp(self):
        self.allow = AllowList(
            [BACKEND + "/api/", "https://backend.example/"],
            [("record", BACKEND + "/record")],
        )

    def test_allowed(self):
        cases = {
            "POST http://127.0.0.1:8080/api/x": ("POST", BACKEND + "/api/x"),
            "POST http://127.0.0.1:8080/api": ("POST", BACKEND + "/api"),
            "get http://127.0.0.1:08080/api/q?user=a&age=26": ("GET", BACKEND + "/api/q?user=a&age=26"),
            "PUT https://BACKEND.example./deep/er": ("PUT", "https://backend.example/deep/er"),
            "PUT https://backend.example:443/": ("PUT", "https://backend.example/"),
            "POST record": ("POST", BACKEND + "/record"),
            "POST record/today?x=1": ("POST", BACKEND + "/record/today?x=1"),
            "POST record?x=1": ("POST", BACKEND + "/record?x=1"),
            "POST http://127.0.0.1:8080/api/rec%6Frd": ("POST", BACKEND + "/api/rec%6Frd"),
            "POST http://127.0.0.1:8080/api/@evil.example": ("POST", BACKEND + "/api/@evil.example"),
        }
        for value, (method, url) in cases.items():
            request = self.allow.check(value)
            self.assertEqual((request.method, request.url, request.value), (method, url, value))

    def test_refused(self):
        refused = [
            "POST http://127.0.0.1:8080/apix",  # not on a segment boundary
            "POST http://127.0.0.1:8080/",  # above the prefix
            "POST http://127.0.0.1:8081/api/",  # other port
            "POST https://127.0.0.1:8080/api/",  # other scheme
            "POST http://localhost:8080/api/",  # same host, other name: never resolved
            "POST http://2130706433:8080/api/",
            "POST http://127.0.0.1:8080@evil.example/api/",  # userinfo tricks
            "POST http://user:pw@127.0.0.1:8080/api/",
            "POST http://127.0.0.1:8080%40evil.example/api/",
            "POST http://127.0.0.1:8080\\@evil.example/api/",
            "POST http://127.0.0.1:8080/api/../admin",  # dot segments, plain or encoded
            "POST http://127.0.0.1:8080/api/%2e%2E/admin",
            "POST http://127.0.0.1:8080/api/.%2e/admin",
            "POST http://127.0.0.1:8080/api/./x",
            "POST http://127.0.0.1:8080/api/..;/admin",
            "POST http://127.0.0.1:8080/api/x%2f..%2f..%2fadmin",  # encoded slash
            "POST http://127.0.0.1:8080/api/x%5c..",
            "POST http://127.0.0.1:8080/api//x",
            "POST http://127.0.0.1:8080/api/%zz",
            "POST http://127.0.0.1:8080/api/x#frag",
            "POST http://127.0.0.1:8080/api/\u00e9",
            "POST ftp://127.0.0.1:8080/api/",
            "POST //127.0.0.1:8080/api/",
            "POST unknown",
            "POST record/../admin",
            "POST recordings",
            "POST http://backend.example/",  # the https prefix does not allow http
        ]
        for value in refused:
            error = self.assertRaises(Forbidden, self.allow.check, value)
            self.assertEqual((error.status, error.reason), (403, "upstream not allowed"), value)

    def test_badHeader(self):
        for value in ["", "POST", "CONNECT http://127.0.0.1:8080/api/", "POST a b", "TRACE record"]:
            error = self.assertRaises(BadUpstream, self.allow.check, value)
            self.assertEqual(error.status, 400)

    def test_badConfiguration(self):
        for prefixes, targets in [
            (["http://user@h/"], ()),
            (["h/"], ()),
            (["http://h/?q=1"], ()),
            (["http://h/../x"], ()),
            ((), [("bad name", "http://h/")]),
            ((), [("x", "gopher://h/")]),
        ]:
            self.assertRaises(ValueError, AllowList, prefixes, targets)

    def test_origins(self):
        self.assertEqual(
            self.allow.origins,
            {("http", "127.0.0.1", 8080), ("https", "backend.example", 443)},
        )
        self.assertFalse(AllowList())


@implementer(IAgent)
class RecordingAgent:
    def __init__(self):
        self.requests = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.requests.append((method, uri))
        return succeed("response")


class GuardedAgentTests(SynchronousTestCase):
    def setUp(self):
        self.agent = RecordingAgent()
        self.guarded = GuardedAgent(self.agent, AllowList([BACKEND + "/"]).origins)

    def test_allowedOriginPasses(self):
        d = self.guarded.request(b"POST", b"http://127.0.0.1:8080/record")
        self.assertEqual(self.successResultOf(d), "response")
        self.assertEqual(self.agent.requests, [(b"POST", b"http://127.0.0.1:8080/record")])

    def test_otherHostsNeverReachTheAgent(self):
        """
        Whatever slips past the allow-list's parser (or a redirect), the
        agent's own parser decides where the connection goes, and it goes
        nowhere off the list.
        """
        for uri in [b"http://127.0.0.1:8080@evil/", b"http://evil:8080/", b"http://127.0.0.1:8081/",
                    b"https://127.0.0.1:8080/", b"http://localhost:8080/"]:
            self.failureResultOf(self.guarded.request(b"GET", uri), Forbidden)
        self.assertEqual(self.agent.requests, [])


class Backend(Resource):
    """
    An HTTP backend for StubTreq: records requests, answers per path.
    """

    isLeaf = True

    def __init__(self):
        Resource.__init__(self)
        self.requests = []
        self.waiting = []

    def render(self, request):
        self.requests.append(
            {
                "method": request.method,
                "uri": request.uri,
                "host": request.getHeader(b"host"),
                "headers": request.requestHeaders,
                "body": request.content.read(),
            }
        )
        path = b"/" + request.path.rsplit(b"/", 1)[-1]
        if path == b"/slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        if path == b"/fail":
            request.setResponseCode(503)
            return b"down"
        if path == b"/moved":
            request.redirect(b"http://evil.example/")
            return b""
        if path == b"/big":
            return b"x" * 100
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"stored": True}).encode()


MESSAGE = parse(
    b"LHTTP/1.0 chat\r\nupstream:POST record\r\npublish:channel_mike\r\n"
    b"x-odd:\xc3\xa9 \"q\"\r\n\r\nhello mike, I am jack"
)


class HTTPUpstreamTests(SynchronousTestCase):
    def setUp(self):
        self.backend = Backend()
        self.clock = Clock()

    def upstream(self, **kwargs):
        allow = AllowList([BACKEND + "/"], [("record", BACKEND + "/record")])
        return HTTPUpstream(allow, StubTreq(self.backend), self.clock, timeout=2, **kwargs)

    def call(self, upstream, value, message=MESSAGE):
        return upstream.call(upstream.check(value), PEER, message)

    def test_postCarriesTheWholeMessage(self):
        upstream = self.upstream(staticHeaders=[("Authorization", "Bearer backend-secret")])
        self.assertIsNone(self.successResultOf(self.call(upstream, "POST record")))
        [seen] = self.backend.requests
        self.assertEqual((seen["method"], seen["uri"]), (b"POST", b"/record"))
        self.assertEqual(seen["body"], MESSAGE.raw)
        self.assertEqual(seen["host"], b"127.0.0.1:8080")
        headers = seen["headers"]
        self.assertEqual(headers.getRawHeaders(b"lhttp-command"), [b"chat"])
        self.assertEqual(headers.getRawHeaders(b"lhttp-peer"), [b"10.1.2.3:5555"])
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer backend-secret"])
        [carried] = headers.getRawHeaders(b"lhttp-headers")
        self.assertEqual(json.loads(carried), [list(h) for h in MESSAGE.headers])

    def test_clientHeadersNeverBecomeHTTPHeaders(self):
        message = parse(b"LHTTP/1.0 chat\r\nHost:evil\r\nAuthorization:Bearer x\r\n\r\n")
        self.successResultOf(self.call(self.upstream(), "POST record", message))
        headers = self.backend.requests[0]["headers"]
        self.assertEqual(headers.getRawHeaders(b"host"), [b"127.0.0.1:8080"])
        self.assertIsNone(headers.getRawHeaders(b"authorization"))

    def test_getSendsNoBody(self):
        self.successResultOf(self.call(self.upstream(), "GET http://127.0.0.1:8080/path?user=a&age=26"))
        [seen] = self.backend.requests
        self.assertEqual((seen["method"], seen["uri"], seen["body"]), (b"GET", b"/path?user=a&age=26", b""))
        self.assertEqual(seen["headers"].getRawHeaders(b"lhttp-command"), [b"chat"])

    def test_serverErrorIsBadGateway(self):
        error = self.failureResultOf(self.call(self.upstream(relay=True), "POST record/fail"), BadGateway).value
        self.assertEqual(error.status, 502)
        self.assertIn("503", error.detail)

    def test_timeoutIsGatewayTimeout(self):
        d = self.call(self.upstream(), "POST record/slow")
        self.assertNoResult(d)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertEqual(self.failureResultOf(d, GatewayTimeout).value.status, 504)

    def test_refusedConnectionIsBadGateway(self):
        class Refusing:
            def request(self, *args, **kwargs):
                return fail(ConnectionRefusedError())

        allow = AllowList([BACKEND + "/"])
        upstream = HTTPUpstream(allow, Refusing(), self.clock)
        d = upstream.call(allow.check("POST http://127.0.0.1:8080/"), PEER, MESSAGE)
        self.assertIn("refused", self.failureResultOf(d, BadGateway).value.detail)

    def test_relay(self):
        response = self.successResultOf(self.call(self.upstream(relay=True), "POST record"))
        self.assertEqual(response, UpstreamResponse(200, "application/json", b'{"stored": true}'))

    def test_redirectIsNotFollowed(self):
        response = self.successResultOf(self.call(self.upstream(relay=True), "GET record/moved"))
        self.assertEqual(response.code, 302)
        self.assertEqual(len(self.backend.requests), 1)

    def test_relayedBodyIsCapped(self):
        self.successResultOf(self.call(self.upstream(relay=True, maxResponse=100), "GET record/big"))
        d = self.call(self.upstream(relay=True, maxResponse=99), "GET record/big")
        self.assertIn("larger than 99", self.failureResultOf(d, BadGateway).value.detail)


class Recorder(Processor):
    def __init__(self):
        self.messages = []

    def onMessage(self, connection, message):
        self.messages.append(message.body)


def upstreamMessage(body=b"hi", target="POST http://127.0.0.1:8080/record", extra=b""):
    return b"LHTTP/1.0 chat\r\nupstream:" + target.encode() + b"\r\n" + extra + b"\r\n" + body


class UpstreamFilterTests(SynchronousTestCase):
    def setUp(self):
        self.upstream = FakeUpstream()
        self.broker = RecordingBroker()
        self.server = memoryServer(broker=self.broker, upstream=self.upstream)
        self.recorder = Recorder()
        self.server.addProcessor("chat", self.recorder)

    def test_refusedBeforeAnythingHappens(self):
        jack = FakeClient(self.server)
        jack.receive(upstreamMessage(target="POST http://evil.example/", extra=b"subscribe:a\r\npublish:a\r\n"))
        [error] = jack.messages()
        self.assertEqual(error.command, "error")
        self.assertEqual(
            [error.getHeader(h) for h in ("status", "reason", "command")],
            ["403", "upstream not allowed", "chat"],
        )
        self.assertEqual((self.recorder.messages, self.broker.published, self.upstream.calls), ([], [], []))
        self.assertEqual(jack.connection.subscriptions, frozenset())

    def test_offByDefault(self):
        server = memoryServer()
        jack = FakeClient(server)
        jack.receive(upstreamMessage())
        self.assertEqual(jack.messages()[0].getHeader("status"), "403")
        self.assertIn("not enabled", jack.messages()[0].body.decode())

    def test_badHeaderIs400(self):
        jack = FakeClient(self.server)
        jack.receive(upstreamMessage(target="POST"))
        self.assertEqual(jack.messages()[0].getHeader("status"), "400")

    def test_requestAfterUnsubscribe(self):
        """
        processor -> subscribe -> publish -> unsubscribe -> upstream: the
        request starts after the message was published.
        """
        seen = []
        self.upstream.call = lambda request, peer, message: (
            seen.append((list(self.broker.published), message.toBytes(), peer)) or Deferred()
        )
        jack = FakeClient(self.server)
        data = upstreamMessage(extra=b"subscribe:a\r\npublish:a\r\nunsubscribe:a\r\n")
        jack.receive(data)
        [(published, sent, peer)] = seen
        self.assertEqual(published, [(["a"], data)])
        self.assertEqual(sent, data)
        self.assertEqual(peer, jack.connection.getPeer())
        self.assertEqual(jack.payloads(), [data])

    def test_sendsMessageAsProcessorLeftIt(self):
        class Tagger(Processor):
            def onMessage(self, connection, message):
                connection.setHeader("tag", "1")

        self.server.addProcessor("tagged", Tagger())
        jack = FakeClient(self.server)
        jack.receive(b"LHTTP/1.0 tagged\r\nupstream:POST http://127.0.0.1:8080/\r\n\r\nb")
        message = self.upstream.calls[0][2]
        self.assertEqual((message.command, message.getHeader("tag"), message.body), ("tagged", "1", b"b"))

    def test_failureIsErrorReply(self):
        jack = FakeClient(self.server)
        jack.receive(upstreamMessage())
        jack.receive(b"LHTTP/1.0 chat\r\n\r\n")  # the connection moved on
        self.upstream.calls[0][3].errback(GatewayTimeout("the upstream did not answer within 2 s"))
        [error] = jack.messages()
        self.assertEqual(
            error.headers,
            [("lhttp-node", "reply"), ("status", "504"), ("reason", "gateway timeout"), ("command", "chat"),
             ("upstream", "POST http://127.0.0.1:8080/record")],
        )
        self.assertEqual(error.body, b"the upstream did not answer within 2 s")
        self.assertEqual(self.server.metrics.errors.get(504), 1)

    def test_relayedResponse(self):
        jack = FakeClient(self.server)
        jack.receive(upstreamMessage())
        self.upstream.calls[0][3].callback(UpstreamResponse(201, "text/plain", b"stored"))
        [reply] = jack.messages()
        self.assertEqual(reply.command, "upstream")
        self.assertEqual(
            reply.headers,
            [("lhttp-node", "reply"), ("status", "201"), ("command", "chat"), ("upstream", "POST http://127.0.0.1:8080/record"),
             ("content-type", "text/plain")],
        )
        self.assertEqual(reply.body, b"stored")

    def test_noRelayNoReply(self):
        jack = FakeClient(self.server)
        jack.receive(upstreamMessage())
        self.upstream.calls[0][3].callback(None)
        self.assertEqual(jack.payloads(), [])

    def test_concurrentWithBackPressure(self):
        """
        Two requests of a connection run at once; a third waits for a
        slot and holds back that connection's later messages, and only
        that connection's.
        """
        jack, ann = FakeClient(self.server), FakeClient(self.server)
        for body in (b"1", b"2", b"3"):
            jack.receive(upstreamMessage(body))
        jack.receive(b"LHTTP/1.0 chat\r\n\r\nafter")
        self.assertEqual([c[2].body for c in self.upstream.calls], [b"1", b"2"])
        self.assertEqual(self.recorder.messages, [b"1", b"2", b"3"])
        ann.receive(upstreamMessage(b"ann"))
        ann.receive(b"LHTTP/1.0 chat\r\n\r\nann later")
        self.assertEqual(self.recorder.messages, [b"1", b"2", b"3", b"ann", b"ann later"])

        self.upstream.calls[1][3].callback(None)
        self.assertEqual([c[2].body for c in self.upstream.calls], [b"1", b"2", b"ann", b"3"])
        self.assertEqual(self.recorder.messages[-1], b"after")

    def test_closedConnectionGetsNothing(self):
        jack = FakeClient(self.server)
        jack.receive(upstreamMessage())
        jack.disconnect()
        self.upstream.calls[0][3].errback(BadGateway("gone"))
        self.assertEqual(jack.payloads(), [])


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self):
        options = self.parse()
        config = options.config
        self.assertEqual((config.upstreamAllow, config.upstreamTargets), ((), ()))
        self.assertEqual(config.upstreamTimeout, 10.0)
        self.assertFalse(config.upstreamRelay)

    def test_upstreamOptions(self):
        options = self.parse(
            "--upstream-allow", BACKEND + "/", "--upstream-allow", "https://b.example/x/",
            "--upstream-target", "record=" + BACKEND + "/record",
            "--upstream-header", "Authorization: Bearer t", "--upstream-relay",
            "--upstream-timeout", "1.5", "--upstream-max-response", "10", "--upstream-concurrency", "3",
        )
        config = options.config
        self.assertEqual(config.upstreamAllow, (BACKEND + "/", "https://b.example/x/"))
        self.assertEqual(config.upstreamTargets, (("record", BACKEND + "/record"),))
        self.assertEqual(config.upstreamHeaders, (("Authorization", "Bearer t"),))
        self.assertEqual(
            (config.upstreamTimeout, config.upstreamMaxResponse, config.upstreamConcurrency),
            (1.5, 10, 3),
        )

    def test_badUpstreamOptions(self):
        for argv in [
            ("--upstream-allow", "http://u@h/"),
            ("--upstream-target", "record"),
            ("--upstream-target", "r=ftp://h/"),
            ("--upstream-header", "Bad Name: x"),
            ("--upstream-timeout", "0"),
            ("--upstream-concurrency", "0"),
        ]:
            self.assertRaises(usage.UsageError, self.parse, *argv)

    def test_serviceHasTheUpstream(self):
        options = self.parse("--no-plugins", "-l", "tcp:0:interface=127.0.0.1",
                             "--upstream-allow", BACKEND + "/", "--upstream-relay", "--upstream-timeout", "2",
                             "--upstream-concurrency", "3", "--upstream-header", "X-Key: k")
        upstream = makeService(options).lhttpServer.upstream
        self.assertIsInstance(upstream, HTTPUpstream)
        self.assertEqual((upstream.relay, upstream.timeout, upstream.maxPending), (True, 2.0, 3))
        self.assertEqual(upstream.allowList.origins, {("http", "127.0.0.1", 8080)})
        server = makeService(self.parse("--no-plugins", "-l", "tcp:0:interface=127.0.0.1")).lhttpServer
        self.assertIsInstance(server.upstream, NoUpstream)

    def test_helpDocumentsUpstreamOptions(self):
        text = str(Options())
        for name in ("--upstream-allow", "--upstream-target", "--upstream-header", "--upstream-relay",
                     "--upstream-timeout", "--upstream-max-response", "--upstream-concurrency"):
            self.assertIn(name, text)
