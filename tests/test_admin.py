"""
The admin page's figures without sockets (issue 22): rates from the
counters, the sampled busiest channels, recent events, the roster of
nodes heard, the admin port's tree and the broker keeping a node's
announcement from a channel of the heartbeat subject's name.
"""

import json

import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lhttp.brokers.heartbeat import HEARTBEAT, heartbeatSubject
from lhttp.brokers.nats import NATSBroker
from lhttp.roster import Roster
from lhttp.stats import SAMPLES_PER_TICK, ChannelSampler, NodeStats, busiest
from lhttp.testing import FakeClient, FakeNATS, memoryServer
from lhttp.web.admin import adminRoot
from lhttpclients import eventually


def message(command, **headers):
    lines = "".join(f"{name}:{value}\r\n" for name, value in headers.items())
    return f"LHTTP/1.0 {command}\r\n{lines}\r\n".encode()


class NodeStatsTests(SynchronousTestCase):
    def setUp(self):
        self.server = memoryServer()
        self.clock = self.server.factory.reactor
        self.stats = NodeStats(self.server.metrics, self.server.channels, self.clock, keep=5)

    def subscriber(self, *channels):
        client = FakeClient(self.server)
        client.receive(message("sub", subscribe=" ".join(channels)))
        return client

    def test_ratesBetweenTicks(self):
        """
        A point of the series is each counter's increase over the time since
        the last tick, per second: 2 subscribers and 10 publishes on one
        channel in 2 s are 6 messages in per second (the 2 subscribes
        count), 10 deliveries per second and 5 publishes per second.
        """
        self.subscriber("room")
        self.subscriber("room")
        publisher = FakeClient(self.server)
        for i in range(10):
            publisher.receive(message("chat", publish="room"))
        self.clock.advance(2)
        self.stats.tick()
        [point] = self.stats.series
        assert point[1:] == [6.0, 10.0, 10.0, 5.0]
        figures = self.stats.figures()
        assert figures["rates"] == {"in": 6.0, "out": 10.0, "deliveries": 10.0, "publishes": 5.0}
        assert (figures["connections"], figures["subscriptions"], figures["channels"]) == (3, 2, 1)
        # Nothing since: the next point is all zeros, the totals stay.
        self.clock.advance(2)
        self.stats.tick()
        assert self.stats.series[-1][1:] == [0.0, 0.0, 0.0, 0.0]
        assert self.stats.figures()["totals"]["deliveries"] == 20

    def test_seriesIsBounded(self):
        for i in range(20):
            self.clock.advance(1)
            self.stats.tick()
        assert len(self.stats.series) == 5
        assert self.stats.series[-1][0] == 20

    def test_topBySubscribers(self):
        for i in range(3):
            self.subscriber("busy", "quiet" if i == 0 else "busy")
        self.subscriber("middle")
        self.subscriber("middle")
        assert self.stats.topBySubscribers() == [
            {"channel": "busy", "subscribers": 3},
            {"channel": "middle", "subscribers": 2},
            {"channel": "quiet", "subscribers": 1},
        ]
        assert self.stats.topBySubscribers(top=1) == [{"channel": "busy", "subscribers": 3}]

    def test_topByRate(self):
        """
        Channels by messages per second over the rate window: at a low rate
        every fan-out is counted, so the rates are exact.
        """
        self.subscriber("hot", "cold")
        publisher = FakeClient(self.server)
        for i in range(30):
            publisher.receive(message("chat", publish="hot"))
        for i in range(4):
            publisher.receive(message("chat", publish="cold"))
        self.clock.advance(2)
        self.stats.tick()
        assert self.stats.topByRate() == [
            {"channel": "hot", "rate": 15.0}, {"channel": "cold", "rate": 2.0}]
        # Past the window (10 s), a channel that went quiet is gone.
        for i in range(6):
            self.clock.advance(2)
            self.stats.tick()
        assert self.stats.topByRate() == []

    def test_recentEvents(self):
        """
        Slow-consumer closes and error replies over the series' span: they
        count while within it, and leave it.
        """
        metrics = self.server.metrics
        metrics.slowConsumerDisconnected()
        metrics.errorSent(400)
        metrics.errorSent(403)
        self.clock.advance(2)
        self.stats.tick()
        assert self.stats.recent() == {"seconds": 2.0, "slowConsumerCloses": 1, "errors": 2}
        for i in range(6):
            self.clock.advance(2)
            self.stats.tick()
        assert self.stats.recent() == {"seconds": 10.0, "slowConsumerCloses": 0, "errors": 0}


class ChannelSamplerTests(SynchronousTestCase):
    def test_everyFanOutWhileQuiet(self):
        sampler = ChannelSampler()
        for i in range(10):
            sampler.sample(["a"])
        assert sampler.take() == {"a": 10}
        assert sampler.every == 1

    def test_samplesFewerWhenBusy(self):
        """
        After a tick with many fan-outs, one in C{every} is counted, and the
        counts are scaled back up.
        """
        server = memoryServer()
        sampler = ChannelSampler()
        server.channels.sampler = sampler
        fanOuts = SAMPLES_PER_TICK * 4
        for i in range(fanOuts):
            server.channels.deliver(["a"], b"x")
        assert sampler.take() == {"a": fanOuts}
        assert sampler.every == 4
        for i in range(fanOuts):
            server.channels.deliver(["a"], b"x")
        assert sampler.samples == SAMPLES_PER_TICK
        assert sampler.take() == {"a": fanOuts}

    def test_boundedChannels(self):
        from lhttp.stats import MAX_SAMPLED_CHANNELS

        sampler = ChannelSampler()
        sampler.sample([f"c{i}" for i in range(MAX_SAMPLED_CHANNELS + 50)])
        assert len(sampler.take()) == MAX_SAMPLED_CHANNELS

    def test_busiestScansABoundedNumber(self):
        counts = [("a", 1), ("b", 5), ("c", 3), ("d", 9)]
        assert busiest(iter(counts), top=2) == [("d", 9), ("b", 5)]
        assert busiest(iter(counts), top=2, scan=3) == [("b", 5), ("c", 3)]


def announcement(node, name, connections=1, rate=2.0):
    return {"v": 1, "node": node, "name": name, "ready": True, "connections": connections,
            "subscriptions": 3, "channels": 2, "rates": {"in": rate, "out": rate, "deliveries": rate,
                                                         "publishes": rate},
            "recent": {"seconds": 10, "slowConsumerCloses": 1, "errors": 0}}


class RosterTests(SynchronousTestCase):
    def setUp(self):
        self.server = memoryServer()
        self.clock = Clock()
        stats = NodeStats(self.server.metrics, self.server.channels, self.clock, keep=10)
        self.roster = Roster(stats, self.clock, self.server.describe, interval=2.0, cluster=True,
                             name="here", wallClock=lambda: 1000.0 + self.clock.seconds())

    def test_lonelyNode(self):
        document = self.roster.document()
        [node] = document["nodes"]
        assert node["self"] and node["name"] == "here" and node["node"] == document["node"]
        assert node["broker"]["kind"] == "embedded" and node["presence"] is None
        assert document["timeout"] == 6.0
        assert document["totals"]["nodes"] == 1

    def test_heardNodesListedAndSummed(self):
        assert self.roster.heard(announcement("n2", "b", connections=4))
        assert self.roster.heard(announcement("n1", "a", connections=2, rate=1.5))
        document = self.roster.document()
        assert [node["name"] for node in document["nodes"]] == ["here", "a", "b"]
        assert document["totals"]["connections"] == 6
        assert document["totals"]["rates"]["deliveries"] == 3.5
        assert document["totals"]["slowConsumerCloses"] == 2
        # The peer's rates are kept as they are heard, on the wall clock.
        self.clock.advance(2)
        self.roster.heard(announcement("n1", "a", rate=7.0))
        a = self.roster.document()["nodes"][1]
        assert a["series"] == [[1000.0, 1.5, 1.5, 1.5, 1.5], [1002.0, 7.0, 7.0, 7.0, 7.0]]
        assert a["age"] == 0

    def test_silentNodeDropsOff(self):
        """
        A node not heard for the timeout (three intervals) is dropped; one
        heard again in time stays.
        """
        self.roster.heard(announcement("n1", "a"))
        self.roster.heard(announcement("n2", "b"))
        self.clock.advance(4)
        self.roster.heard(announcement("n2", "b"))
        self.clock.advance(2.5)
        assert [node["name"] for node in self.roster.nodes()] == ["here", "b"]
        assert self.roster.nodes()[1]["age"] == 2.5

    def test_nonsenseIgnored(self):
        for bad in ({}, {"v": 1, "node": "x"}, {**announcement("x", "x"), "v": 2},
                    {**announcement("x", "x"), "rates": {"in": "many"}},
                    {**announcement("", "x")},
                    {**announcement("x", "x"), "connections": "\x1b[2J"},
                    {**announcement("x", "x"), "rates": {**announcement("x", "x")["rates"],
                                                         "in": float("nan")}},
                    {**announcement("x", "x"), "broker": "kind"},
                    {**announcement("x", "x"), "topByRate": [{"channel": "a", "rate": "fast"}]}):
            assert not self.roster.heard(bad)
        assert self.roster.ignored == 9
        assert len(self.roster.nodes()) == 1

    def test_heardAsOwnAreMade(self):
        """
        What is kept of another node's announcement has the types of this
        node's own: numbers are numbers, names are strings, lists bounded.
        """
        sent = {**announcement("n1", 42), "connections": 3.0, "extra": "dropped",
                "topBySubscribers": [{"channel": f"c{i}", "subscribers": i} for i in range(50)]}
        assert self.roster.heard(sent)
        [here, peer] = self.roster.nodes()
        assert peer["name"] == "42" and peer["connections"] == 3 and "extra" not in peer
        assert len(peer["topBySubscribers"]) == 10
        assert set(peer) == set(here)

    def test_ownAnnouncementNotAPeer(self):
        assert self.roster.heard(self.roster.announcement())
        assert len(self.roster.nodes()) == 1


class AdminTreeTests(SynchronousTestCase):
    def setUp(self):
        server = memoryServer()
        stats = NodeStats(server.metrics, server.channels, server.factory.reactor)
        roster = Roster(stats, server.factory.reactor, server.describe)
        self.treq = StubTreq(adminRoot(roster, server.hostPolicy, token="t0ken"))

    def get(self, path, **kwargs):
        d = self.treq.get("http://localhost" + path, **kwargs)
        self.treq.flush()
        response = self.successResultOf(d)
        content = response.content()
        self.treq.flush()
        return response, self.successResultOf(content)

    def test_JSON(self):
        # The page's files are fetched from a real node (test_admin_cluster).
        response, body = self.get("/admin/api/cluster", headers={"Authorization": "Bearer t0ken"})
        assert response.code == 200
        assert json.loads(body)["totals"]["nodes"] == 1

    def test_tokenNeededForTheJSON(self):
        assert self.get("/admin/api/cluster")[0].code == 401
        assert self.get("/admin/api/cluster", headers={"Authorization": "Bearer no"})[0].code == 403

    def test_otherNamesRefused(self):
        """
        A page elsewhere cannot read the JSON through DNS rebinding.
        """
        response = self.successResultOf(self.treq.get(
            "http://evil.example/admin/api/cluster", headers={"Authorization": "Bearer t0ken"}))
        assert response.code == 403

    def test_nothingElse(self):
        assert self.get("/metrics")[0].code == 404
        assert self.get("/publish")[0].code == 404
        response, body = self.get("/", allow_redirects=False)
        assert response.code == 302 and response.headers.getRawHeaders("location") == ["/admin/"]


@pytest_twisted.ensureDeferred
async def test_announcementNotDeliveredToAChannelOfThatName():
    """
    Without --nats-prefix a channel may be called C{_lhttp.nodes}: the
    nodes' announcements on that subject never reach its subscribers.
    """
    fake = FakeNATS()
    delivered = []
    broker = NATSBroker(["nats://127.0.0.1:4222"], reactor, settle=0, clientFactory=lambda: fake)
    broker.attach(lambda channels, payload: delivered.append(payload))
    broker.start()
    try:
        await eventually(lambda: broker.ready, timeout=5, what="the broker to be ready")
        subject = heartbeatSubject()
        d = broker.subscribe(subject)
        await eventually(lambda: d.called, timeout=5, what="the subscription")
        await fake.deliver(subject, b'{"v": 1}', headers={"Lhttp-Node": HEARTBEAT})
        await fake.deliver(subject, b"LHTTP/1.0 chat\r\n\r\nhi")
        assert delivered == [b"LHTTP/1.0 chat\r\n\r\nhi"]
    finally:
        await broker.stop()


def keyShape(document):
    """
    The keys of a document, nested (lists by their first item), without
    the C{describe()}s of the broker and presence, whose keys vary.
    """
    if isinstance(document, dict):
        return {key: (None if key in ("broker", "presence") else keyShape(value))
                for key, value in document.items()}
    if isinstance(document, list) and document and isinstance(document[0], (dict, list)):
        return [keyShape(document[0])]
    return None


def test_docsSampleHasTheRealShape():
    """
    The JSON sample in docs/operations.rst has exactly the keys of a real
    document, a node with a subscriber and a point of its series.
    """
    from docsnippets import blockWith

    sample = json.loads(blockWith("json", '"topBySubscribers"'))
    server = memoryServer()
    clock = server.factory.reactor
    stats = NodeStats(server.metrics, server.channels, clock)
    client = FakeClient(server)
    client.receive(message("sub", subscribe="room", publish="room"))
    clock.advance(2)
    stats.tick()
    clock.advance(2)
    stats.tick()
    real = Roster(stats, clock, server.describe).document()
    assert real["nodes"][0]["topByRate"] and real["nodes"][0]["series"]
    assert keyShape(sample) == keyShape(real)


def test_topSnapshotIsTerminalSafe():
    """
    Whatever the JSON holds, C{lhttp top} prints no control character: a
    channel named to clear the screen is shown escaped.
    """
    from lhttp.cli import terminalSafe
    from lhttp.top import clusterURL, snapshot

    server = memoryServer()
    clock = server.factory.reactor
    stats = NodeStats(server.metrics, server.channels, clock)
    document = Roster(stats, clock, server.describe, name="web1:1").document()
    # A node refuses such channel names; the JSON may come from anywhere.
    document["nodes"][0]["topBySubscribers"] = [{"channel": "\x1b[2Jroom", "subscribers": 1}]
    document["totals"]["connections"] = "\x1b]0;owned\x07"
    lines = snapshot(document, "http://x/", terminalSafe)
    text = "\n".join(lines)
    assert "\x1b" not in text and "\x07" not in text
    assert "most subscribers: \\x1b[2Jroom 1" in lines
    assert any(line.startswith("web1:1 *") and " yes " in line for line in lines)
    assert clusterURL("127.0.0.1:9101") == "http://127.0.0.1:9101/admin/api/cluster"
    assert clusterURL("http://h:9101/admin/") == "http://h:9101/admin/api/cluster"
    assert clusterURL("https://h/x/admin/api/cluster") == "https://h/x/admin/api/cluster"
