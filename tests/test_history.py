"""
History, offsets and recovery on one node (the embedded broker's
L{lhttp.history.MemoryHistory}), through the real protocol in memory.
The same on NATS JetStream: tests/test_history_cluster.py.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from lhttp.codec import parse, parseMultipart
from lhttp.errors import BadHeader
from lhttp.history import (
    HistoryPolicy, MemoryHistory, Retention, matches, parseDuration, parseRetention, recoveryPlan,
    stamp,
)
from lhttp.testing import FakeClient, memoryServer


def subscribe(channels, since=None, epoch=None):
    head = f"LHTTP/1.0 chat\r\nsubscribe:{channels}\r\n"
    if since is not None:
        head += f"since:{since}\r\n"
    if epoch is not None:
        head += f"epoch:{epoch}\r\n"
    return (head + "\r\n").encode()


def publish(channel, body):
    return f"LHTTP/1.0 chat\r\npublish:{channel}\r\n\r\n{body}".encode()


def bodies(messages, channel=None):
    return [m.body.decode() for m in messages
            if m.command == "chat" and (channel is None or m.getHeader("channel") == channel)]


class RetentionTests(SynchronousTestCase):
    def test_parse(self):
        self.assertEqual(parseRetention("room.*=100,1h"), Retention("room.*", 100, 3600.0))
        self.assertEqual(parseRetention("news.>=50"), Retention("news.>", 50, None))
        self.assertEqual(parseRetention("a=15m"), Retention("a", 1000, 900.0))
        self.assertEqual(parseDuration("90"), 90.0)

    def test_refused(self):
        for bad in ["room.*", "=10", "room.*=", "ro*m=1", "a.>.b=1", "a=0", "a=1,0s", "a=1,soon"]:
            self.assertRaises(ValueError, parseRetention, bad)

    def test_matches(self):
        self.assertTrue(matches("room.*", "room.42"))
        self.assertFalse(matches("room.*", "room.42.x"))
        self.assertFalse(matches("room.*", "room"))
        self.assertTrue(matches("news.>", "news.a.b"))
        self.assertFalse(matches("news.>", "news"))
        self.assertTrue(matches("exact", "exact"))

    def test_policyFirstMatchWins(self):
        policy = HistoryPolicy(["room.vip=5", "room.*=100"])
        self.assertEqual(policy.retentionFor("room.vip").messages, 5)
        self.assertEqual(policy.retentionFor("room.1").messages, 100)
        self.assertIsNone(policy.retentionFor("other"))

    def test_stampPutsPositionFirst(self):
        stamped = stamp(b"LHTTP/1.0 chat\r\noffset:999\r\n\r\nhi", "r", 7, "e1")
        message = parse(stamped)
        self.assertEqual(message.getHeader("offset"), "7")
        self.assertEqual(message.getHeader("epoch"), "e1")
        self.assertEqual(message.getHeader("channel"), "r")
        self.assertEqual(message.body, b"hi")

    def test_recoveryPlan(self):
        self.assertEqual(recoveryPlan(["a", "b"], "4", "e"), {"a": (4, "e"), "b": (4, "e")})
        self.assertEqual(recoveryPlan(["a", "b"], "a=4 b=9", "a=x"), {"a": (4, "x"), "b": (9, None)})
        self.assertEqual(recoveryPlan(["a"], None, "e"), {})
        for since in ["-1", "x", "c=4", "a=", "4 5"]:
            self.assertRaises(BadHeader, recoveryPlan, ["a", "b"], since, None)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def seconds(self):
        return self.now


class MemoryHistoryTests(SynchronousTestCase):
    def history(self, *patterns, **kwargs):
        self.clock = Clock()
        return MemoryHistory(HistoryPolicy(patterns or ["r.*=3"]), self.clock, **kwargs)

    def read(self, history, channel, since, epoch=None):
        return self.successResultOf(history.read(channel, since, epoch))

    def test_offsetsIncreasePerChannel(self):
        history = self.history()
        retention = history.policy.retentionFor("r.a")
        offsets = [history.append("r.a" if i % 2 else "r.b", retention, b"m") for i in range(6)]
        self.assertEqual(offsets, sorted(offsets))
        self.assertEqual(len(set(offsets)), 6)

    def test_countLimit(self):
        history = self.history()
        retention = history.policy.retentionFor("r.a")
        offsets = [history.append("r.a", retention, b"%d" % i) for i in range(5)]
        recovery = self.read(history, "r.a", offsets[3])
        self.assertTrue(recovery.complete)
        self.assertEqual([p for _, p in recovery.messages], [b"4"])
        recovery = self.read(history, "r.a", offsets[0])
        self.assertFalse(recovery.complete)
        self.assertEqual([p for _, p in recovery.messages], [b"2", b"3", b"4"])
        self.assertEqual(history.count, 3)
        self.assertEqual(history.bytes, 3)

    def test_ageLimit(self):
        history = self.history("r.*=100,10s")
        retention = history.policy.retentionFor("r.a")
        first = history.append("r.a", retention, b"old")
        self.clock.now += 11
        second = history.append("r.a", retention, b"new")
        recovery = self.read(history, "r.a", 0)
        self.assertFalse(recovery.complete)
        self.assertEqual(recovery.messages, ((second, b"new"),))
        self.assertFalse(self.read(history, "r.a", first - 1).complete)
        self.assertTrue(self.read(history, "r.a", first).complete)

    def test_otherEpoch(self):
        history = self.history()
        retention = history.policy.retentionFor("r.a")
        offset = history.append("r.a", retention, b"x")
        recovery = self.read(history, "r.a", offset, "some-old-epoch")
        self.assertFalse(recovery.complete)
        self.assertEqual(recovery.messages, ((offset, b"x"),))
        self.assertTrue(self.read(history, "r.a", offset, history.epoch).complete)

    def test_byteBudgetAcrossChannels(self):
        """
        Over the byte budget the oldest message of all goes, whatever its
        channel; what lost messages says so when recovered.
        """
        history = self.history("r.*=1000", maxBytes=100 * (10 + MemoryHistory.overhead))
        retention = history.policy.retentionFor("r.a")
        for i in range(300):
            history.append("r.%d" % (i % 7), retention, b"x" * 10)
        self.assertLessEqual(history.bytes + history.count * history.overhead, history.maxBytes)
        self.assertEqual(history.bytes, history.count * 10)
        self.assertEqual(history.count, 100)
        self.assertFalse(self.read(history, "r.0", 0).complete)
        self.assertLessEqual(len(history._order), 2 * history.count + 1000)

    def test_forgottenChannelKeepsItsFloor(self):
        """
        A channel whose messages all went is forgotten, but a recovery from
        before what it lost is still told it is incomplete, and offsets go
        on increasing.
        """
        history = self.history("r.*=1000", maxBytes=10)
        retention = history.policy.retentionFor("r.a")
        first = history.append("r.a", retention, b"x" * 10)
        history.append("r.b", retention, b"y" * 10)
        self.assertNotIn("r.a", history._channels)
        self.assertFalse(self.read(history, "r.a", 0).complete)
        self.assertTrue(self.read(history, "r.a", first).complete)
        self.assertGreater(history.append("r.a", retention, b"z"), first)

    def test_last(self):
        history = self.history("r.*=5")
        retention = history.policy.retentionFor("r.a")
        for i in range(3):
            history.append("r.a", retention, b"%d" % i)
        recovery = self.successResultOf(history.last("r.a", 2))
        self.assertEqual([p for _, p in recovery.messages], [b"1", b"2"])
        self.assertFalse(recovery.complete)
        self.assertTrue(self.successResultOf(history.last("r.a", 10)).complete)


class NodeTests(SynchronousTestCase):
    """
    Through a node, its protocol and its filters.
    """

    def setUp(self):
        self.server = memoryServer(history=("room.*=100",))

    def client(self):
        return FakeClient(self.server)

    def test_positionHeaders(self):
        client = self.client()
        client.receive(subscribe("room.1 plain"))
        publisher = self.client()
        publisher.receive(publish("room.1 plain", "hello"))
        received = client.messages()
        stamped = [m for m in received if m.getHeader("offset")]
        self.assertEqual(len(stamped), 1)
        self.assertEqual(stamped[0].getHeader("channel"), "room.1")
        self.assertEqual(stamped[0].getHeader("epoch"), self.server.broker.history.epoch)
        plain = [m for m in received if m.command == "chat" and not m.getHeader("offset")]
        self.assertEqual(len(plain), 1, "a channel without history is delivered as before")
        self.assertIsNone(plain[0].getHeader("epoch"))

    def test_recoverAfterReconnect(self):
        client = self.client()
        client.receive(subscribe("room.1"))
        publisher = self.client()
        for i in range(5):
            publisher.receive(publish("room.1", f"m{i}"))
        last = client.messages()[-1]
        offset, epoch = last.getHeader("offset"), last.getHeader("epoch")
        client.disconnect()
        for i in range(5, 15):
            publisher.receive(publish("room.1", f"m{i}"))
        again = self.client()
        again.receive(subscribe("room.1", offset, epoch))
        publisher.receive(publish("room.1", "live"))
        messages = again.messages()
        self.assertEqual(messages[0].command, "recovery")
        self.assertEqual(messages[0].getHeader("recovered"), "true")
        self.assertEqual(messages[0].getHeader("count"), "10")
        self.assertEqual(bodies(messages), [f"m{i}" for i in range(5, 15)] + ["live"])
        offsets = [int(m.getHeader("offset")) for m in messages if m.command == "chat"]
        self.assertEqual(offsets, sorted(set(offsets)))

    def test_seamWhileTheHistoryIsRead(self):
        """
        Messages published while the history is being read are held, then
        written after it, those it already had not twice.
        """
        history = self.server.broker.history
        publisher = self.client()
        for i in range(3):
            publisher.receive(publish("room.1", f"old{i}"))
        pending = []
        read = history.read

        def slowRead(channel, since, epoch):
            d = Deferred()
            pending.append((d, channel, since, epoch))
            return d

        history.read = slowRead
        client = self.client()
        client.receive(subscribe("room.1", 0, history.epoch))
        for i in range(3):
            publisher.receive(publish("room.1", f"new{i}"))
        self.assertEqual(bodies(client.messages()), [], "nothing before the history")
        # The read saw the first new message too (it raced the publish).
        history.read = read
        d, channel, since, epoch = pending[0]
        recovery = self.successResultOf(read(channel, since, epoch))
        from lhttp.history import Recovery
        cut = Recovery(recovery.epoch, True, recovery.messages[:4], recovery.messages[3][0])
        d.callback(cut)
        client.flush()
        publisher.receive(publish("room.1", "after"))
        self.assertEqual(
            bodies(client.messages()),
            ["old0", "old1", "old2", "new0", "new1", "new2", "after"],
        )

    def test_olderThanRetention(self):
        server = self.server = memoryServer(history=("room.*=3",))
        publisher = self.client()
        for i in range(10):
            publisher.receive(publish("room.1", f"m{i}"))
        client = self.client()
        client.receive(subscribe("room.1", 1, server.broker.history.epoch))
        messages = client.messages()
        self.assertEqual(messages[0].getHeader("recovered"), "false")
        self.assertEqual(bodies(messages), ["m7", "m8", "m9"])

    def test_epochChanged(self):
        publisher = self.client()
        publisher.receive(publish("room.1", "a"))
        client = self.client()
        client.receive(subscribe("room.1", 1, "epoch-of-a-stream-gone"))
        messages = client.messages()
        self.assertEqual(messages[0].getHeader("recovered"), "false")
        self.assertEqual(messages[0].getHeader("epoch"), self.server.broker.history.epoch)
        self.assertEqual(bodies(messages), ["a"])

    def test_noHistoryChannel(self):
        client = self.client()
        client.receive(subscribe("plain", 3))
        publisher = self.client()
        publisher.receive(publish("plain", "x"))
        messages = client.messages()
        self.assertEqual(messages[0].command, "recovery")
        self.assertEqual(messages[0].getHeader("recovered"), "false")
        self.assertEqual(messages[0].getHeader("history"), "none")
        self.assertEqual(bodies(messages), ["x"])

    def test_badSinceRefusedWhole(self):
        client = self.client()
        client.receive(subscribe("room.1", "soon"))
        publisher = self.client()
        publisher.receive(publish("room.1", "x"))
        messages = client.messages()
        self.assertEqual(messages[0].command, "error")
        self.assertIn("400", messages[0].getHeader("status") or messages[0].body.decode())
        self.assertEqual(bodies(messages), [], "not subscribed")

    def test_perChannelSince(self):
        publisher = self.client()
        publisher.receive(publish("room.a", "a1"))
        publisher.receive(publish("room.b", "b1"))
        publisher.receive(publish("room.a", "a2"))
        epoch = self.server.broker.history.epoch
        client = self.client()
        client.receive(subscribe("room.a room.b", "room.a=1 room.b=0", epoch))
        messages = client.messages()
        self.assertEqual(bodies(messages, "room.a"), ["a2"])
        self.assertEqual(bodies(messages, "room.b"), ["b1"])
        self.assertEqual(sorted(m.getHeader("channel") for m in messages if m.command == "recovery"),
                         ["room.a", "room.b"])

    def test_unsubscribedWhileRecovering(self):
        history = self.server.broker.history
        publisher = self.client()
        publisher.receive(publish("room.1", "x"))
        pending = []
        read = history.read
        history.read = lambda *args: pending.append((args, Deferred())) or pending[-1][1]
        client = self.client()
        client.receive(subscribe("room.1", 0))
        client.disconnect()
        args, d = pending[0]
        d.callback(self.successResultOf(read(*args)))
        self.assertNotIn((client.protocol, "room.1"), self.server.channels._recovering)

    def test_historyRequest(self):
        publisher = self.client()
        for i in range(5):
            publisher.receive(publish("room.1", f"m{i}"))
        client = self.client()
        client.receive(subscribe("room.1"))
        client.receive(b"LHTTP/1.0 history\r\nchannel:room.1\r\nlimit:2\r\n\r\n")
        [reply] = client.messages()
        self.assertEqual(reply.command, "history")
        self.assertEqual(reply.getHeader("count"), "2")
        self.assertEqual(reply.getHeader("complete"), "false")
        parts = parseMultipart(reply.body, reply.getHeader("multipart"))
        self.assertEqual([parse(p.body).body for p in parts], [b"m3", b"m4"])
        self.assertEqual([p.getHeader("offset") for p in parts],
                         [parse(p.body).getHeader("offset") for p in parts])

    def test_historyRequestErrors(self):
        client = self.client()
        for request, status in [
            (b"LHTTP/1.0 history\r\nchannel:plain\r\n\r\n", "404"),
            (b"LHTTP/1.0 history\r\n\r\n", "400"),
            (b"LHTTP/1.0 history\r\nchannel:room.1\r\nlimit:0\r\n\r\n", "400"),
            (b"LHTTP/1.0 history\r\nchannel:room.1 room.2\r\n\r\n", "400"),
        ]:
            client.clear()
            client.receive(request)
            [reply] = client.messages()
            self.assertEqual(reply.command, "error", request)
            self.assertIn(status, repr(reply.headers) + reply.body.decode(), request)

    def test_healthShowsHistory(self):
        publisher = self.client()
        publisher.receive(publish("room.1", "abc"))
        described = self.server.broker.describe()["history"]
        self.assertEqual(described["messages"], 1)
        self.assertEqual(described["bytes"], len(publish("room.1", "abc")))


class ForgedPositionTests(SynchronousTestCase):
    """
    On a node with history, a publish cannot carry offset or epoch: a
    subscriber's SDK would take a forged position for a history channel and
    drop its real messages.
    """

    def test_webSocketPublishRefused(self):
        server = memoryServer(history=("room.*=100",))
        victim = FakeClient(server)
        victim.receive(subscribe("plain room.1"))
        attacker = FakeClient(server)
        attacker.receive(
            b"LHTTP/1.0 chat\r\npublish:room.1\r\nchannel:room.1\r\noffset:999999\r\n"
            b"epoch:" + server.broker.history.epoch.encode() + b"\r\n\r\nforged")
        [reply] = attacker.messages()
        self.assertEqual(reply.command, "error")
        self.assertIn("reserved header", repr(reply.headers))
        self.assertEqual(bodies(victim.messages()), [])

    def test_httpPublishRefused(self):
        from twisted.web.test.requesthelper import DummyRequest
        from io import BytesIO

        server = memoryServer(history=("room.*=100",))
        victim = FakeClient(server)
        victim.receive(subscribe("room.1"))
        victim.clear()
        request = DummyRequest([b""])
        request.method = b"POST"
        request.content = BytesIO(b"LHTTP/1.0 chat\r\npublish:room.1\r\noffset:9\r\n\r\nforged")
        resource = server.resource().children[b"publish"]
        from twisted.web.server import NOT_DONE_YET
        result = resource.render(request)
        written = b"".join(request.written) if result is NOT_DONE_YET else result
        self.assertIn(b"reserved header", written)
        self.assertEqual(bodies(victim.messages()), [])

    def test_withoutHistoryTheHeadersAreTheApplications(self):
        server = memoryServer()
        victim = FakeClient(server)
        victim.receive(subscribe("plain"))
        FakeClient(server).receive(b"LHTTP/1.0 page\r\npublish:plain\r\noffset:20\r\n\r\n")
        [message] = victim.messages()
        self.assertEqual(message.getHeader("offset"), "20")


class UnreadableHistoryTests(SynchronousTestCase):
    def test_failedReadSaysUnavailableAndGoesLive(self):
        """
        When the engine cannot read, the reply says the history is
        unavailable (not that the channel keeps none), and what was held
        meanwhile is delivered.
        """
        server = memoryServer(history=("room.*=100",))
        history = server.broker.history
        pending = []
        history.read = lambda *args: pending.append(Deferred()) or pending[-1]
        client = FakeClient(server)
        client.receive(subscribe("room.1", 5, history.epoch))
        FakeClient(server).receive(publish("room.1", "meanwhile"))
        pending[0].errback(RuntimeError("JetStream is not ready"))
        self.flushLoggedErrors(RuntimeError)
        messages = client.messages()
        self.assertEqual(messages[0].command, "recovery")
        self.assertEqual(messages[0].getHeader("recovered"), "false")
        self.assertEqual(messages[0].getHeader("history"), "unavailable")
        self.assertEqual(bodies(messages), ["meanwhile"])
