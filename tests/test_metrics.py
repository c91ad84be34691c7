"""
Observability: C{GET /metrics} counts what flows (in memory and on a real
node), C{/health} follows the broker, and the JSON log observer works under
a real C{twistd}.
"""

import json
import shutil

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lhttp import Processor
from lhttp.metrics import UNPARSED, UNREGISTERED, Metrics
from lhttp.errors import GatewayTimeout
from lhttp.testing import FakeClient, RecordingBroker, memoryServer
from lhttp.upstream import AllowList, UpstreamResponse
from lhttpclients import barrier, client, eventually
from procs import ROOT, Process, freePort, portAccepts


makeServer = memoryServer


def samples(text):
    """
    @return: C{{(name, frozenset(labels.items())): value}} of an exposition.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(server, name, **labels):
    return server.metrics.registry.get_sample_value(name, labels) or 0


class MetricsTests(SynchronousTestCase):
    def setUp(self):
        self.broker = RecordingBroker()
        self.server = makeServer(broker=self.broker)

    def test_messagesPublishesDeliveriesErrors(self):
        alice, bob = FakeClient(self.server), FakeClient(self.server)
        self.assertEqual(value(self.server, "lhttp_connections"), 2)
        alice.receive(b"LHTTP/1.0 join\r\nsubscribe:a b\r\n\r\n")
        bob.receive(b"LHTTP/1.0 join\r\nsubscribe:a\r\n\r\n")
        bob.receive(b"LHTTP/1.0 chat\r\npublish:a b\r\n\r\nhi")
        bob.receive(b"LHTTP/1.0 chat\r\nno blank line")
        bob.receive(b"LHTTP/1.0 chat\r\nsubscribe:a*\r\n\r\n")

        # No processors: pub/sub-only commands count under one label.
        self.assertEqual(value(self.server, "lhttp_messages_received_total", command=UNREGISTERED), 4)
        self.assertEqual(value(self.server, "lhttp_messages_received_total", command=UNPARSED), 1)
        self.assertEqual(value(self.server, "lhttp_publishes_total"), 1)
        # alice on a and b, bob on a: three copies of one publish.
        self.assertEqual(value(self.server, "lhttp_deliveries_total"), 3)
        self.assertEqual(value(self.server, "lhttp_error_replies_total", status="400"), 2)
        self.assertEqual(value(self.server, "lhttp_messages_sent_total"), 2)
        self.assertEqual(value(self.server, "lhttp_channels"), 2)

        alice.disconnect()
        self.assertEqual(value(self.server, "lhttp_connections"), 1)
        self.assertEqual(value(self.server, "lhttp_channels"), 1)

    def test_refusedPublishIsNotCounted(self):
        alice = FakeClient(self.server)
        self.broker.ready = False
        alice.receive(b"LHTTP/1.0 chat\r\npublish:a\r\n\r\nhi")
        self.assertEqual(value(self.server, "lhttp_publishes_total"), 0)
        self.assertEqual(value(self.server, "lhttp_error_replies_total", status="503"), 1)

    def test_onlyRegisteredCommandsGetLabels(self):
        """
        Clients choose commands: only those the operator registered a
        processor for get a label of their own, so a client cannot add
        label values (the old bound let one client add a hundred).
        """
        self.server.addProcessor("echo", Processor())
        alice = FakeClient(self.server)
        for i in range(150):
            alice.receive(f"LHTTP/1.0 junk{i}\r\n\r\n".encode())
        alice.receive(b"LHTTP/1.0 chat\r\nsubscribe:a\r\n\r\n")
        alice.receive(b"LHTTP/1.0 echo\r\n\r\nhi")
        alice.receive(b"LHTTP/1.0 echo\r\n\r\nagain")
        alice.receive(b"LHTTP/1.0 echo\r\nno blank line")
        self.assertEqual(
            self.server.metrics.received, {UNREGISTERED: 151, "echo": 2, UNPARSED: 1}
        )

    def test_serversShareNothing(self):
        other = makeServer()
        FakeClient(self.server).receive(b"LHTTP/1.0 x\r\n\r\n")
        self.assertEqual(value(self.server, "lhttp_messages_received_total", command=UNREGISTERED), 1)
        self.assertEqual(value(other, "lhttp_messages_received_total", command=UNREGISTERED), 0)
        self.assertIsNot(self.server.metrics.registry, other.metrics.registry)

    def test_hooksForLaterFeatures(self):
        metrics = self.server.metrics
        metrics.slowConsumerDisconnected()
        metrics.observeUpstream(0.02, 200)
        metrics.observeUpstream(12.0, "timeout")
        self.assertEqual(value(self.server, "lhttp_slow_consumer_disconnects_total"), 1)
        self.assertEqual(value(self.server, "lhttp_upstream_request_seconds_count", status="200"), 1)
        self.assertEqual(
            value(self.server, "lhttp_upstream_request_seconds_bucket", status="200", le="0.025"), 1
        )
        self.assertEqual(
            value(self.server, "lhttp_upstream_request_seconds_bucket", status="timeout", le="10.0"), 0
        )

    def test_metricsWithoutServer(self):
        metrics = Metrics(processMetrics=False)
        metrics.messageReceived("x")
        text = metrics.render().decode()
        self.assertIn('lhttp_messages_received_total{command="x"} 1.0', text)
        self.assertNotIn("lhttp_broker_ready", text)


class AnsweredUpstream:
    """
    An upstream whose calls the test answers, in order.
    """

    maxPending = 10

    def __init__(self):
        self.calls = []

    def check(self, value):
        return AllowList(["http://backend/"]).check(value)

    def call(self, request, peer, message):
        self.calls.append(Deferred())
        return self.calls[-1]


class UpstreamLatencyTests(SynchronousTestCase):
    def test_eachRequestTimedByOutcome(self):
        clock = MemoryReactorClock()
        upstream = AnsweredUpstream()
        server = memoryServer(reactor=clock, upstream=upstream)
        alice = FakeClient(server)
        for _ in range(3):
            alice.receive(b"LHTTP/1.0 rec\r\nupstream:POST http://backend/r\r\n\r\n")
        clock.advance(0.2)
        upstream.calls[0].callback(UpstreamResponse(201, "text/plain", b""))
        clock.advance(0.6)
        upstream.calls[1].callback(None)
        clock.advance(20)
        upstream.calls[2].errback(GatewayTimeout("slow"))

        def count(status, le="+Inf"):
            return value(server, "lhttp_upstream_request_seconds_bucket", status=status, le=le)

        self.assertEqual((count("201", "0.25"), count("201", "0.1")), (1, 0))
        self.assertEqual((count("ok", "1.0"), count("ok", "0.5")), (1, 0))
        self.assertEqual((count("timeout", "30.0"), count("timeout", "10.0")), (1, 0))


class MetricsResourceTests(SynchronousTestCase):
    def setUp(self):
        self.broker = RecordingBroker()
        self.server = makeServer(broker=self.broker, publishToken="t")
        self.http = StubTreq(self.server.resource())

    def scrape(self):
        response = self.successResultOf(self.http.get("http://localhost/metrics"))
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        return samples(self.successResultOf(response.content()).decode())

    def test_brokerStateAndHealthFlipTogether(self):
        found = self.scrape()
        self.assertEqual(found[("lhttp_broker_ready", frozenset())], 1)
        self.assertEqual(found[("lhttp_broker_info", frozenset({("kind", "recording")}))], 1)
        self.broker.ready = False
        self.assertEqual(self.scrape()[("lhttp_broker_ready", frozenset())], 0)
        health = self.successResultOf(self.http.get("http://localhost/health"))
        self.assertEqual(health.code, 503)
        self.assertFalse(json.loads(self.successResultOf(health.content()))["ready"])

    def test_httpPublishAnswersByStatus(self):
        body = b"LHTTP/1.0 n\r\npublish:a\r\n\r\nx"
        for headers in ({"Authorization": "Bearer t"}, {}, {"Authorization": "Bearer t"}):
            self.successResultOf(self.http.post("http://localhost/publish", data=body, headers=headers))
        found = self.scrape()
        self.assertEqual(found[("lhttp_http_publish_requests_total", frozenset({("status", "200")}))], 2)
        self.assertEqual(found[("lhttp_http_publish_requests_total", frozenset({("status", "401")}))], 1)
        self.assertEqual(found[("lhttp_publishes_total", frozenset())], 2)


class MetricsTokenTests(SynchronousTestCase):
    """
    C{--metrics-token}: C{GET /metrics} needs C{Authorization: Bearer}.
    """

    def setUp(self):
        self.server = makeServer(broker=RecordingBroker(), metricsToken="m3trics")
        self.http = StubTreq(self.server.resource())

    def get(self, path="metrics", **headers):
        response = self.successResultOf(self.http.get("http://localhost/" + path, headers=headers))
        return response, self.successResultOf(response.content())

    def test_noTokenIs401WithChallenge(self):
        response, body = self.get()
        self.assertEqual(response.code, 401)
        self.assertEqual(
            response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="lhttp metrics"']
        )
        self.assertNotIn(b"lhttp_", body)

    def test_wrongTokenOrSchemeIs403(self):
        for given in ("Bearer m3tric", "Bearer m3trics2", "Basic m3trics", "m3trics"):
            response, body = self.get(Authorization=given)
            self.assertEqual(response.code, 403, given)
            self.assertNotIn(b"lhttp_", body)

    def test_rightTokenScrapes(self):
        response, body = self.get(Authorization="Bearer m3trics")
        self.assertEqual(response.code, 200)
        self.assertIn(b"lhttp_connections 0.0", body)

    def test_publishTokenIsNotTheMetricsToken(self):
        server = makeServer(broker=RecordingBroker(), publishToken="p")
        response = self.successResultOf(StubTreq(server.resource()).get("http://localhost/metrics"))
        self.assertEqual(response.code, 200)

    def test_treeWithoutMetrics(self):
        """
        With C{--metrics-listen} the clients' port has no C{/metrics}; the
        metrics port has only that, token included.
        """
        clients = StubTreq(self.server.resource(metrics=False))
        self.assertEqual(self.successResultOf(clients.get("http://localhost/metrics")).code, 404)
        self.assertEqual(self.successResultOf(clients.get("http://localhost/health")).code, 200)
        scraper = StubTreq(self.server.metricsResource())
        self.assertEqual(self.successResultOf(scraper.get("http://localhost/metrics")).code, 401)
        self.assertEqual(self.successResultOf(scraper.get("http://localhost/health")).code, 404)
        self.assertEqual(self.successResultOf(scraper.get("http://localhost/")).code, 404)
        ok = self.successResultOf(
            scraper.get("http://localhost/metrics", headers={"Authorization": "Bearer m3trics"})
        )
        self.assertEqual(ok.code, 200)


async def scrape(node, url=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await treq.get(url or node.httpURL + "metrics", headers=headers)
    assert response.code == 200
    return samples((await response.content()).decode())


@pytest_twisted.ensureDeferred
async def test_realNodeLabelsOnlyProcessorCommandsBehindToken(startNode):
    """
    A real node with an example processor, a metrics token and a metrics
    port of its own: junk commands add no label, the processor's command
    has one; scrapes need the token, and the clients' port has no
    C{/metrics}.
    """
    metricsPort = freePort()
    metricsURL = f"http://127.0.0.1:{metricsPort}/metrics"
    node = startNode(
        "--no-plugins", "--processor", "echo=lhttp_examples.echo.EchoProcessor",
        "--metrics-listen", f"tcp:{metricsPort}:interface=127.0.0.1",
        env={"LHTTP_METRICS_TOKEN": "m3trics"}, pythonPath=[ROOT / "examples"],
    )
    await eventually(lambda: portAccepts(metricsPort), what="the metrics port")
    assert (await treq.get(node.httpURL + "metrics")).code == 404
    assert (await treq.get(metricsURL)).code == 401
    wrong = await treq.get(metricsURL, headers={"Authorization": "Bearer m3tric"})
    assert wrong.code == 403
    before = await scrape(node, metricsURL, "m3trics")

    alice = await client(node.url)
    for i in range(120):
        alice.sendLHTTP(f"LHTTP/1.0 junk-{i}\r\n\r\n".encode())
    alice.sendLHTTP(b"LHTTP/1.0 echo\r\n\r\nhi")
    # No processor, no reserved header: each junk command gets a 404.
    for i in range(120):
        error = await alice.nextMessage(10)
        assert (error.getHeader("status"), error.getHeader("command")) == ("404", f"junk-{i}")
    assert (await alice.nextMessage(10)).command == "echoed"
    alice.sendLHTTP(b"LHTTP/1.0 broken")
    assert (await alice.nextMessage(10)).getHeader("status") == "400"
    await barrier(alice)
    after = await scrape(node, metricsURL, "m3trics")

    commands = {
        dict(labels)["command"] for name, labels in after
        if name == "lhttp_messages_received_total"
    }
    assert commands == {"echo", UNREGISTERED, UNPARSED}

    def moved(command):
        key = ("lhttp_messages_received_total", frozenset({("command", command)}))
        return after.get(key, 0) - before.get(key, 0)

    # 120 junk commands and one barrier; the echo; the broken one.
    assert (moved(UNREGISTERED), moved("echo"), moved(UNPARSED)) == (121, 1, 1)


@pytest_twisted.ensureDeferred
async def test_realNodeCountersMove(lhttpNode):
    before = await scrape(lhttpNode)
    alice = await client(lhttpNode.url)
    bob = await client(lhttpNode.url)
    alice.subscribe("room")
    bob.subscribe("room")
    await barrier(alice)
    await barrier(bob)
    bob.publish("room", "chat", body="hi")
    assert (await alice.nextMessage(10)).body == b"hi"
    alice.sendLHTTP(b"LHTTP/1.0 chat\r\nsubscribe:bad*\r\n\r\n")
    assert (await alice.nextMessage(10)).getHeader("status") == "400"
    after = await scrape(lhttpNode)

    def moved(name, **labels):
        key = (name, frozenset(labels.items()))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("lhttp_connections") == 2
    # Two subscribes, two chat messages and two barriers (each subscribing,
    # publishing and unsubscribing once): no processors, so one label.
    assert moved("lhttp_messages_received_total", command=UNREGISTERED) == 6
    assert moved("lhttp_publishes_total") == 3
    assert moved("lhttp_deliveries_total") == 4
    assert moved("lhttp_error_replies_total", status="400") == 1
    assert after[("lhttp_broker_ready", frozenset())] == 1
    assert ("process_resident_memory_bytes", frozenset()) in after


@pytest_twisted.ensureDeferred
async def test_jsonLogsFromRealTwistd():
    port = freePort()
    node = Process(
        [
            shutil.which("twistd"),
            "--logger", "lhttp.logs.jsonObserver", "--nodaemon", "--pidfile=",
            "lhttp", "--listen", f"tcp:{port}:interface=127.0.0.1",
        ],
        name="json-logs",
    )
    try:
        await eventually(lambda: portAccepts(port) or not node.alive(), what="the node")
        assert node.alive(), node.log()

        def records():
            return [json.loads(line) for line in node.log().splitlines()]

        def startedRecords():
            try:
                return [r for r in records() if r["namespace"] == "lhttp.service"]
            except ValueError:
                # A line still being written.
                return []

        # The port can accept before the startup line is in the log.
        await eventually(startedRecords, what="the node's startup log line")
        started = startedRecords()
        assert started[0]["listen"] == [f"tcp:{port}:interface=127.0.0.1"]
        assert started[0]["broker"]["kind"] == "embedded"
        assert started[0]["level"] == "info" and "listening on" in started[0]["text"]
        assert all({"time", "level", "namespace", "text"} <= set(r) for r in records())

        # Nothing is logged per message at the default level.
        before = len(records())
        alice = await client(f"ws://127.0.0.1:{port}/")
        alice.subscribe("room")
        for i in range(20):
            alice.publish("room", "chat", body=str(i))
        await barrier(alice)
        assert len(records()) == before
    finally:
        node.stop()
