"""
POST /publish (SPEC section 6) in memory, through treq's StubTreq: each
documented status code in its case.
"""

import json

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from twisted.web.resource import Resource
from twisted.web.static import Data

import lhttp
from lhttp.testing import FakeClient, RecordingBroker, memoryServer

MESSAGE = b"LHTTP/1.0 notice\r\npublish:a b\r\n\r\nhello"


class PublishResourceTests(SynchronousTestCase):
    def setUp(self):
        self.build()

    def build(self, **options):
        self.broker = RecordingBroker()
        self.server = memoryServer(broker=self.broker, maxMessageSize=1000, **options)
        self.http = StubTreq(self.server.resource())
        self.subscriber = FakeClient(self.server)
        self.subscriber.receive(b"LHTTP/1.0 s\r\nsubscribe:a b\r\n\r\n")

    def post(self, body, headers=None, path="publish"):
        response = self.successResultOf(
            self.http.post(f"http://localhost/{path}", data=body, headers=headers)
        )
        content = self.successResultOf(response.content())
        return response.code, content

    def test_accepted(self):
        code, content = self.post(MESSAGE)
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(content)["channels"], ["a", "b"])
        self.assertEqual(self.subscriber.payloads(), [MESSAGE, MESSAGE])

    def test_malformed(self):
        code, content = self.post(b"LHTTP/1.0 x\r\npublish:a\r\n")
        self.assertEqual(code, 400)
        self.assertIn("blank line", json.loads(content)["detail"])

    def test_noPublishHeader(self):
        code, content = self.post(b"LHTTP/1.0 x\r\n\r\nbody")
        self.assertEqual((code, json.loads(content)["reason"]), (400, "no publish header"))

    def test_badChannel(self):
        code, _ = self.post(b"LHTTP/1.0 x\r\npublish:a*\r\n\r\n")
        self.assertEqual(code, 400)
        self.assertEqual(self.broker.published, [])

    def test_tooLarge(self):
        code, _ = self.post(MESSAGE + b"x" * 1000)
        self.assertEqual(code, 413)
        self.assertEqual(self.broker.published, [])

    def test_headerLimits(self):
        self.build(maxHeaders=3, maxHeaderLength=40)
        answers = [
            (code, json.loads(content)["reason"])
            for code, content in (
                self.post(b"LHTTP/1.0 n\r\npublish:a\r\n" + b"h:v\r\n" * 3 + b"\r\n"),
                self.post(b"LHTTP/1.0 n\r\npublish:a\r\nh:" + b"v" * 40 + b"\r\n\r\n"),
            )
        ]
        self.assertEqual(answers, [(400, "too many headers"), (400, "header too long")])
        self.assertEqual(self.broker.published, [])
        self.assertEqual(self.post(b"LHTTP/1.0 n\r\npublish:a\r\nh:v\r\nh:v\r\n\r\n")[0], 200)

    def test_brokerUnavailable(self):
        self.broker.ready = False
        code, content = self.post(MESSAGE)
        self.assertEqual((code, json.loads(content)["reason"]), (503, "broker unavailable"))
        self.assertEqual(self.subscriber.payloads(), [])

    def test_token(self):
        self.build(publishToken="s3cret")
        self.assertEqual(self.post(MESSAGE)[0], 401)
        self.assertEqual(self.post(MESSAGE, {"Authorization": "Bearer wrong"})[0], 403)
        self.assertEqual(self.post(MESSAGE, {"Authorization": "Basic s3cret"})[0], 403)
        self.assertEqual(self.subscriber.payloads(), [])
        self.assertEqual(self.post(MESSAGE, {"Authorization": "Bearer s3cret"})[0], 200)
        self.assertEqual(len(self.subscriber.payloads()), 2)

    def test_getNotAllowed(self):
        response = self.successResultOf(self.http.get("http://localhost/publish"))
        self.assertEqual(response.code, 405)

    def test_rootAnswersPlainHTTP(self):
        response = self.successResultOf(self.http.get("http://localhost/"))
        self.assertEqual(response.code, 200)
        self.assertIn(b"WebSocket", self.successResultOf(response.content()))
        response = self.successResultOf(self.http.get("http://localhost/nothing"))
        self.assertEqual(response.code, 404)


class EmbeddingTests(SynchronousTestCase):
    """
    The node's tree mounted in an application's own, as the README shows.
    """

    def test_mountedWithPutChild(self):
        """
        C{putChild} sets the child's C{server} attribute (Twisted's
        L{Resource.putChild} does): the node's tree must not depend on it.
        WebSockets and C{POST /publish} work under the mount point.
        """
        server = memoryServer()
        root = Resource()
        root.putChild(b"", Data(b"my app", "text/plain"))
        root.putChild(b"lhttp", server.resource())
        site = server.site(root)
        subscriber = FakeClient(server, site=site, path="/lhttp")
        subscriber.receive(b"LHTTP/1.0 s\r\nsubscribe:a\r\n\r\n")
        http = StubTreq(root)
        response = self.successResultOf(http.post("http://localhost/lhttp/publish", data=MESSAGE))
        self.assertEqual(response.code, 200)
        self.assertEqual(subscriber.payloads(), [MESSAGE])
        page = self.successResultOf(http.get("http://localhost/"))
        self.assertEqual(self.successResultOf(page.content()), b"my app")

    def test_noResourceFunctionShadowsAModule(self):
        """
        There is one way to get the tree, L{lhttp.LHTTPServer.resource};
        the package has no C{resource} attribute to shadow a submodule.
        """
        self.assertFalse(hasattr(lhttp, "resource"))
        from lhttp.web import resource

        self.assertTrue(hasattr(resource, "LHTTPResource"))


class PublisherTests(SynchronousTestCase):
    def setUp(self):
        self.server = memoryServer(publishToken="t")
        self.http = StubTreq(self.server.resource())
        self.subscriber = FakeClient(self.server)
        self.subscriber.receive(b"LHTTP/1.0 s\r\nsubscribe:room\r\n\r\n")

    def test_publishHelper(self):
        from lhttp.publisher import publish

        answer = self.successResultOf(
            publish(["room"], "notice", [("from", "billing")], "paid", url="http://localhost/publish", token="t", treq=self.http)
        )
        self.assertEqual(answer["channels"], ["room"])
        self.assertEqual(
            self.subscriber.payloads(), [b"LHTTP/1.0 notice\r\npublish:room\r\nfrom:billing\r\n\r\npaid"]
        )

    def test_refused(self):
        from lhttp.publisher import PublishRefused, publish

        failure = self.failureResultOf(publish("room", url="http://localhost/publish", token="bad", treq=self.http))
        failure.trap(PublishRefused)
        self.assertEqual(failure.value.status, 403)
        self.assertEqual(self.subscriber.payloads(), [])


class HealthTests(SynchronousTestCase):
    def test_readinessFollowsBroker(self):
        broker = RecordingBroker()
        http = StubTreq(memoryServer(broker=broker).resource())
        response = self.successResultOf(http.get("http://localhost/health"))
        self.assertEqual(response.code, 200)
        self.assertTrue(json.loads(self.successResultOf(response.content()))["ready"])
        broker.ready = False
        response = self.successResultOf(http.get("http://localhost/health"))
        self.assertEqual(response.code, 503)
        self.assertEqual(json.loads(self.successResultOf(response.content()))["broker"]["kind"], "recording")
        response = self.successResultOf(http.get("http://localhost/health/live"))
        self.assertEqual(response.code, 200)


class ConfirmedPublishTests(SynchronousTestCase):
    def setUp(self):
        from test_server import SlowBroker

        self.broker = SlowBroker()
        self.server = memoryServer(broker=self.broker)
        self.http = StubTreq(self.server.resource())

    def test_answersAfterConfirmation(self):
        d = self.http.post("http://localhost/publish", data=MESSAGE)
        self.assertNoResult(d)
        self.broker.pendingConfirmations[0].callback(None)
        self.http.flush()
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_unconfirmedIs503(self):
        from lhttp.errors import BrokerUnavailable

        d = self.http.post("http://localhost/publish", data=MESSAGE)
        self.broker.pendingConfirmations[0].errback(BrokerUnavailable("lost"))
        self.http.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 503)
        self.assertEqual(json.loads(self.successResultOf(response.content()))["reason"], "broker unavailable")
