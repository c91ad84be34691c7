"""
Observability: C{GET /metrics} counts what flows (in memory and on a real
node), C{/health} follows the broker, and the JSON log observer works under
a real C{twistd}.
"""

import json
import sys

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lhttp import LHTTPServer
from lhttp.metrics import MAX_COMMANDS, OTHER, UNPARSED, Metrics
from lhttp.errors import GatewayTimeout
from lhttp.testing import FakeClient, RecordingBroker
from lhttp.upstream import AllowList, UpstreamResponse
from lhttpclients import barrier, client, eventually
from procs import Process, freePort, portAccepts


def makeServer(**kwargs):
    return LHTTPServer(reactor=MemoryReactorClock(), **kwargs)


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

        self.assertEqual(value(self.server, "lhttp_messages_received_total", command="join"), 2)
        self.assertEqual(value(self.server, "lhttp_messages_received_total", command="chat"), 2)
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

    def test_commandLabelsAreBounded(self):
        alice = FakeClient(self.server)
        for i in range(MAX_COMMANDS + 5):
            alice.receive(f"LHTTP/1.0 c{i}\r\n\r\n".encode())
        alice.receive(b"LHTTP/1.0 c0\r\n\r\n")
        received = self.server.metrics.received
        self.assertEqual(len(received), MAX_COMMANDS + 1)
        self.assertEqual(received[OTHER], 5)
        self.assertEqual(received["c0"], 2)

    def test_serversShareNothing(self):
        other = makeServer()
        FakeClient(self.server).receive(b"LHTTP/1.0 x\r\n\r\n")
        self.assertEqual(value(self.server, "lhttp_messages_received_total", command="x"), 1)
        self.assertEqual(value(other, "lhttp_messages_received_total", command="x"), 0)
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
        server = LHTTPServer(reactor=clock, upstream=upstream)
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


async def scrape(node):
    response = await treq.get(node.httpURL + "metrics")
    assert response.code == 200
    return samples((await response.content()).decode())


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
    assert moved("lhttp_messages_received_total", command="chat") == 2
    # Two barriers, each subscribing, publishing and unsubscribing once.
    assert moved("lhttp_messages_received_total", command="barrier") == 2
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
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
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

        started = [r for r in records() if r["namespace"] == "lhttp.tap"]
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
