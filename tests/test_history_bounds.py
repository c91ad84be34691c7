"""
History stays bounded and readable (issue 19, item 4), on one node in
memory: malformed values are 400 naming their header, a history reply
fits the message limit and pages, only subscribers read a channel's
history, position headers are refused only on history channels, and the
memory budget counts each message's bookkeeping.

Recovery paced by the client's reading, and the node's real memory, are
measured on real twistd nodes in tests/test_history_pacing.py.
"""

from twisted.trial.unittest import SynchronousTestCase

from lhttp.codec import parse, parseMultipart
from lhttp.history import HistoryPolicy, MemoryHistory, recoveryPlan
from lhttp.errors import BadHeader
from lhttp.testing import FakeClient, memoryServer
from test_history import subscribe


def publish(channel, body, extra=""):
    return f"LHTTP/1.0 chat\r\npublish:{channel}\r\n{extra}\r\n{body}".encode()


def historyRequest(channel, **headers):
    head = f"LHTTP/1.0 history\r\nchannel:{channel}\r\n"
    for name, value in headers.items():
        head += f"{name}:{value}\r\n"
    return (head + "\r\n").encode()


def only(client):
    client.flush()
    messages = client.messages()
    client.clear()
    assert len(messages) == 1, messages
    return messages[0]


class MalformedValueTests(SynchronousTestCase):
    """
    Every malformed since, epoch, limit and before is a 400 error reply
    whose reason names the header; nothing is logged as a failure.
    """

    def setUp(self):
        self.server = memoryServer(history=("room.*=100",))
        self.client = FakeClient(self.server)
        self.client.receive(subscribe("room.1"))
        self.client.clear()

    def assertRefused(self, request, header):
        self.client.receive(request)
        reply = only(self.client)
        self.assertEqual(reply.command, "error", request[:80])
        self.assertEqual(reply.getHeader("status"), "400", request[:80])
        self.assertEqual(reply.getHeader("reason"), f"bad {header} header", request[:80])
        self.assertIn(header, reply.body.decode())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_since(self):
        for since in ["\u00b2", "\u0663", "9" * 5000, "1" + "0" * 19, "-1", "1.5", "room.1=\u00b2",
                      "room.1=1 room.2=2", " ".join(["1"] * 50)]:
            self.assertRefused(subscribe("room.2", since), "since")

    def test_epoch(self):
        for epoch in ["e" * 5000, "\u00e9poque", "a/b"]:
            self.assertRefused(subscribe("room.2", 0, epoch), "epoch")

    def test_limit(self):
        for limit in ["\u00b2", "9" * 5000, "0", "1001", "x"]:
            self.assertRefused(historyRequest("room.1", limit=limit), "limit")

    def test_channel(self):
        self.assertRefused(b"LHTTP/1.0 history\r\n\r\n", "channel")
        self.assertRefused(historyRequest("room.1 room.2"), "channel")

    def test_before(self):
        for before in ["\u00b2", "9" * 5000, "x"]:
            self.assertRefused(historyRequest("room.1", before=before), "before")

    def test_recoveryPlanNamesTheHeader(self):
        error = self.assertRaises(BadHeader, recoveryPlan, ["a"], "\u00b2", None)
        self.assertEqual(error.reason, "bad since header")
        self.assertEqual(recoveryPlan(["a"], str(2 ** 63 - 1), None), {"a": (2 ** 63 - 1, None)})


class HistoryRightTests(SynchronousTestCase):
    def test_onlyASubscriberReadsHistory(self):
        server = memoryServer(history=("room.*=100",))
        publisher = FakeClient(server)
        publisher.receive(publish("room.1", "secret"))
        stranger = FakeClient(server)
        stranger.receive(historyRequest("room.1"))
        reply = only(stranger)
        self.assertEqual(reply.command, "error")
        self.assertEqual(reply.getHeader("status"), "403")
        self.assertNotIn(b"secret", reply.body)
        stranger.receive(subscribe("room.1"))
        stranger.clear()
        stranger.receive(historyRequest("room.1"))
        reply = only(stranger)
        self.assertEqual(reply.command, "history")
        self.assertEqual(reply.getHeader("count"), "1")


class PositionHeaderTests(SynchronousTestCase):
    def test_plainChannelRelaysThemAsBefore(self):
        """
        With --history set, a channel matching no pattern relays offset and
        epoch headers byte for byte, as a node without --history does.
        """
        payload = publish("plain", "x", "offset:20\r\nepoch:mine\r\n")
        seen = []
        for options in [{}, {"history": ("room.*=100",)}]:
            server = memoryServer(**options)
            victim = FakeClient(server)
            victim.receive(subscribe("plain"))
            victim.clear()
            sender = FakeClient(server)
            sender.receive(payload)
            self.assertEqual(sender.messages(), [])
            seen.append(victim.payloads())
        self.assertEqual(seen[0], [payload])
        self.assertEqual(seen[1], seen[0])

    def test_historyChannelRefusesThem(self):
        server = memoryServer(history=("room.*=100",))
        victim = FakeClient(server)
        victim.receive(subscribe("plain room.1"))
        victim.clear()
        sender = FakeClient(server)
        sender.receive(publish("plain room.1", "x", "offset:20\r\n"))
        reply = only(sender)
        self.assertEqual(reply.getHeader("reason"), "reserved header")
        self.assertIn("room.1", reply.body.decode())
        self.assertEqual(victim.messages(), [])


class PagingTests(SynchronousTestCase):
    """
    A channel holding more than one message's worth is read page by page:
    each reply fits --max-message-size, says more:true and before:OFFSET,
    and the pages together give every message once.
    """

    size = 64 * 1024

    def setUp(self):
        self.server = memoryServer(history=("room.*=100",), maxMessageSize=4 * self.size)
        self.reader = FakeClient(self.server)
        self.reader.receive(subscribe("room.1"))
        self.publisher = FakeClient(self.server)
        self.reader.flush()
        self.reader.clear()

    def fill(self, count, size=None):
        for i in range(count):
            body = f"{i:04d}" + "x" * ((size or self.size) - 100)
            self.publisher.receive(publish("room.1", body))
        self.assertEqual(self.publisher.messages(), [])
        self.reader.flush()
        self.reader.clear()

    def page(self, **headers):
        self.reader.receive(historyRequest("room.1", **headers))
        reply = only(self.reader)
        self.assertEqual(reply.command, "history", reply.body[:200])
        self.assertLessEqual(len(reply.toBytes()), 4 * self.size)
        parts = parseMultipart(reply.body, reply.getHeader("multipart")) if reply.body else []
        return reply, [parse(p.body) for p in parts]

    def test_pagesGiveEverythingOnce(self):
        self.fill(20)
        reply, messages = self.page()
        self.assertEqual(reply.getHeader("more"), "true")
        self.assertEqual(reply.getHeader("complete"), "false")
        got = [m.body[:4] for m in messages]
        pages = 1
        while reply.getHeader("more") == "true":
            self.assertEqual(reply.getHeader("before"), messages[0].getHeader("offset"))
            reply, messages = self.page(before=reply.getHeader("before"))
            got = [m.body[:4] for m in messages] + got
            pages += 1
        self.assertEqual(got, [b"%04d" % i for i in range(20)])
        self.assertGreater(pages, 5)
        self.assertEqual(reply.getHeader("complete"), "true")
        self.assertIsNone(reply.getHeader("before"))

    def test_limitCutsAndSaysMore(self):
        self.fill(5, 200)
        reply, messages = self.page(limit=2)
        self.assertEqual([m.body[:4] for m in messages], [b"0003", b"0004"])
        self.assertEqual(reply.getHeader("more"), "true")
        reply, messages = self.page(limit=2, before=reply.getHeader("before"))
        self.assertEqual([m.body[:4] for m in messages], [b"0001", b"0002"])

    def test_messageTooLargeForAReplyIsSkipped(self):
        self.fill(2, 200)
        self.fill(1, 4 * self.size - 10)
        reply, messages = self.page()
        self.assertEqual(messages, [])
        self.assertEqual(reply.getHeader("more"), "true")
        self.assertEqual(reply.getHeader("skipped"), reply.getHeader("before"))
        reply, messages = self.page(before=reply.getHeader("before"))
        self.assertEqual([m.body[:4] for m in messages], [b"0000", b"0001"])

    def test_defaultLimitOfLargeMessagesIsReadable(self):
        """
        The issue's case at its own scale: 60 messages of a little under the
        message limit each (there 1,000 KiB under 1 MiB) used to make the
        default history request fail with 500.
        """
        self.fill(6, 4 * self.size - 1024)
        reply, messages = self.page()
        self.assertEqual(len(messages), 1)
        self.assertEqual(reply.getHeader("more"), "true")


class MemoryBudgetTests(SynchronousTestCase):
    def test_overheadIsCounted(self):
        """
        --history-max-bytes counts each message's bookkeeping: 1 MiB of
        31-byte messages is not 33,000 of them.
        """
        history = MemoryHistory(HistoryPolicy(["r.*=1000000"]), maxBytes=1024 * 1024)
        retention = history.policy.retentionFor("r.a")
        for i in range(40000):
            history.append("r.a", retention, b"x" * 31)
        self.assertLessEqual(history.count * (31 + history.overhead), 1024 * 1024)
        self.assertGreater(history.count, 1024 * 1024 // (31 + history.overhead) - 2)


class SinceBeforeConnectingTests(SynchronousTestCase):
    def test_sinceZeroBeforeTheFirstConnection(self):
        """
        ReconnectingClient.subscribe(ch, since=0) made before the first
        connection sends since:0 when it opens: what was kept comes first.
        """
        from test_client import HistoryClientTests

        case = HistoryClientTests("test_history")
        case.setUp()
        for body in (b"kept 1", b"kept 2"):
            case.publishOnNode("room.a", body)
        case.client.subscribe("room.a", since=0)
        case.client.startService()
        case.connected()
        case.node.flush()
        self.assertEqual(case.bodies(), ["kept 1", "kept 2"])
        self.assertTrue(case.client.recoveries["room.a"].recovered)


class PacedSubscriber:
    """
    A subscriber whose transport takes C{room} messages, then asks to pause
    until the test says it drained.
    """

    def __init__(self, room, limit=10 ** 9):
        self.room = room
        self.sent = []
        self.waiting = None
        self.limit = limit
        self.held = 0
        self.closed = False

    def hold(self, size):
        self.held += size
        if self.held > self.limit and not self.closed:
            self.closed = True
            waiting, self.waiting = self.waiting, None
            if waiting is not None:
                waiting.callback(False)
        return not self.closed

    @property
    def writable(self):
        return len(self.sent) < self.room

    def whenWritable(self):
        from twisted.internet.defer import Deferred

        self.waiting = Deferred()
        return self.waiting

    def drain(self, room):
        self.room += room
        waiting, self.waiting = self.waiting, None
        waiting.callback(True)

    def sendPreparedMessage(self, prepared):
        # Once closed as a slow consumer nothing more is written (the
        # protocol's exhausted send budget).
        if not self.closed:
            self.sent.append(prepared)


class PacingTests(SynchronousTestCase):
    """
    L{lhttp.channels.Channels.recovered} writes only while the subscriber
    takes bytes, then what was held live, then goes live.
    """

    def setUp(self):
        from lhttp.brokers.embedded import EmbeddedBroker
        from lhttp.channels import Channels
        from lhttp.history import Recovery

        self.channels = Channels(EmbeddedBroker(), lambda payload, isBinary: payload)
        self.subscriber = PacedSubscriber(3)
        self.channels.add(self.subscriber, ["r"])
        self.channels.holdLive(self.subscriber, "r")
        messages = tuple((i, b"LHTTP/1.0 c\r\n\r\n%d" % i) for i in range(1, 11))
        self.recovery = Recovery("e", True, messages, 10)

    def bodies(self):
        return [parse(p).body for p in self.subscriber.sent]

    def test_pausedThenResumed(self):
        d = self.channels.recovered(self.subscriber, "r", self.recovery)
        self.assertEqual(self.bodies(), [b"1", b"2", b"3"])
        # Live messages meanwhile are held: one already recovered, two new.
        for offset in (9, 11, 12):
            self.channels.deliver(("r",), b"LHTTP/1.0 c\r\n\r\n%d" % offset, ("e", offset))
        self.assertEqual(len(self.subscriber.sent), 3)
        self.subscriber.drain(4)
        self.assertEqual(len(self.subscriber.sent), 7)
        self.assertNoResult(d)
        self.subscriber.drain(100)
        self.successResultOf(d)
        self.assertEqual(self.bodies(), [b"%d" % i for i in range(1, 13)])
        self.channels.deliver(("r",), b"LHTTP/1.0 c\r\n\r\n13", ("e", 13))
        self.assertEqual(self.bodies()[-1], b"13")

    def test_heldCountsAndIsReleased(self):
        d = self.channels.recovered(self.subscriber, "r", self.recovery)
        live = b"LHTTP/1.0 c\r\n\r\n11"
        self.channels.deliver(("r",), live, ("e", 11))
        self.assertEqual(self.subscriber.held, len(live))
        self.subscriber.drain(100)
        self.successResultOf(d)
        self.assertEqual(self.subscriber.held, 0)

    def test_tooMuchHeldIsASlowConsumer(self):
        """
        A client that reads too slowly for the live messages piling up
        behind its recovery is a slow consumer: nothing is held for it
        beyond the limit.
        """
        self.subscriber.limit = 100
        d = self.channels.recovered(self.subscriber, "r", self.recovery)
        for offset in range(11, 30):
            self.channels.deliver(("r",), b"LHTTP/1.0 c\r\n\r\n%d" % offset, ("e", offset))
        self.successResultOf(d)
        self.assertTrue(self.subscriber.closed)
        self.assertEqual(self.channels._recovering, {})
        self.assertEqual(len(self.subscriber.sent), 3)

    def test_leftWhileWaiting(self):
        d = self.channels.recovered(self.subscriber, "r", self.recovery)
        self.channels.deliver(("r",), b"LHTTP/1.0 c\r\n\r\n11", ("e", 11))
        self.channels.remove(self.subscriber, ["r"])
        self.assertEqual(self.subscriber.held, 0)
        self.subscriber.drain(100)
        self.successResultOf(d)
        self.assertEqual(len(self.subscriber.sent), 3)
        self.assertEqual(self.channels._recovering, {})

    def test_closedWhileWaiting(self):
        d = self.channels.recovered(self.subscriber, "r", self.recovery)
        waiting, self.subscriber.waiting = self.subscriber.waiting, None
        waiting.callback(False)
        self.successResultOf(d)
        self.assertEqual(len(self.subscriber.sent), 3)
        self.assertNotIn((self.subscriber, "r"), self.channels._recovering)

    def test_restIsReadOnlyOnceWritten(self):
        """
        A recovery larger than one read: its next messages are asked for
        only when those before are written and the client takes more, and
        live messages wait behind all of them (those up to its offset are
        its own, not sent twice).
        """
        from lhttp.history import Recovery
        from lhttp.history.recovery import RestOfRecovery

        rest = FakeRest()
        messages = tuple((i, b"LHTTP/1.0 c\r\n\r\n%d" % i) for i in range(1, 4))
        recovery = Recovery("e", True, messages, 7, count=7, rest=rest)
        self.subscriber.room = 2
        d = self.channels.recovered(self.subscriber, "r", recovery)
        for offset in (6, 8):
            self.channels.deliver(("r",), b"LHTTP/1.0 c\r\n\r\n%d" % offset, ("e", offset))
        self.subscriber.drain(1)
        # Three written; not writable any more: nothing more read.
        self.assertEqual(self.bodies(), [b"1", b"2", b"3"])
        self.assertEqual(rest.asked, [])
        self.subscriber.drain(100)
        self.assertEqual(len(rest.asked), 1)
        rest.asked[0].callback(RestOfRecovery(((4, b"LHTTP/1.0 c\r\n\r\n4"),
                                                (5, b"LHTTP/1.0 c\r\n\r\n5"))))
        self.assertEqual(len(rest.asked), 2)
        self.assertNoResult(d)
        rest.asked[1].callback(RestOfRecovery(((7, b"LHTTP/1.0 c\r\n\r\n7"),), done=True))
        self.successResultOf(d)
        self.assertEqual(self.bodies(), [b"1", b"2", b"3", b"4", b"5", b"7", b"8"])
        self.assertEqual([parse(p).getHeader("prev") for p in self.subscriber.sent[:6]],
                         ["0", "1", "2", "3", "4", "5"])

    def test_restMissingIsTold(self):
        """
        A read of a recovery's rest that says messages may be missing
        (removed before they were read): the client gets the channel's
        notice there, and the next message's predecessor is not known.
        """
        from lhttp.history import Recovery
        from lhttp.history.recovery import RestOfRecovery

        rest = FakeRest()
        messages = ((1, b"LHTTP/1.0 c\r\n\r\n1"),)
        recovery = Recovery("e", True, messages, 9, count=5, rest=rest)
        self.subscriber.room = 100
        d = self.channels.recovered(self.subscriber, "r", recovery)
        rest.asked[0].callback(RestOfRecovery(((8, b"LHTTP/1.0 c\r\n\r\n8"),
                                                (9, b"LHTTP/1.0 c\r\n\r\n9")),
                                               missed=True, done=True))
        self.successResultOf(d)
        sent = [parse(p) for p in self.subscriber.sent]
        self.assertEqual([m.command for m in sent], ["c", "error", "c", "c"])
        self.assertEqual(sent[1].getHeader("status"), "503")
        self.assertEqual(sent[1].getHeader("channel"), "r")
        # docs/history.rst's sample, byte for byte (its channel room.1).
        [sample] = docsSample("some may be missing here")
        self.assertEqual(self.subscriber.sent[1], sample.replace(b"channel:room.1", b"channel:r"))
        self.assertEqual([m.getHeader("prev") for m in (sent[2], sent[3])], ["0", "8"])

    def test_restFailingIsTold(self):
        """
        A read of the rest that fails outright ends the recovery with the
        notice; what was held goes out (one the history could not give
        included) and the subscriber goes live.
        """
        from lhttp.history import Recovery

        rest = FakeRest()
        recovery = Recovery("e", True, ((1, b"LHTTP/1.0 c\r\n\r\n1"),), 5, count=5, rest=rest)
        self.subscriber.room = 100
        d = self.channels.recovered(self.subscriber, "r", recovery)
        for offset in (3, 6):
            self.channels.deliver(("r",), b"LHTTP/1.0 c\r\n\r\n%d" % offset, ("e", offset))
        rest.asked[0].errback(RuntimeError("gone"))
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([parse(p).command for p in self.subscriber.sent], ["c", "error", "c", "c"])
        self.assertEqual([parse(p).body for p in self.subscriber.sent[2:]], [b"3", b"6"])


class FakeRest:
    """
    The rest of a recovery, answered by the test: C{asked} holds a
    L{Deferred} per read asked for.
    """

    def __init__(self):
        self.asked = []

    def next(self):
        from twisted.internet.defer import Deferred

        self.asked.append(Deferred())
        return self.asked[-1]


def docsSample(words):
    """
    The messages of the docs/history.rst sample block containing C{words},
    as bytes (its lines, C{\\r\\n} written as escapes).
    """
    from docsnippets import blockWith

    text = blockWith("::", words, ["docs/history.rst"])
    return [line.encode().decode("unicode_escape").encode("latin-1") for line in text.splitlines()]


def test_docsSamples():
    """
    docs/history.rst's samples are what a node sends, byte for byte (the
    page sample up to its first part, its epoch the node's).
    """
    server = memoryServer(history=("room.*=100",), maxMessageSize=4096)
    member, stranger = FakeClient(server), FakeClient(server)
    member.receive(subscribe("room.1"))
    pairs = docsSample("offset:3\\r\\n\\r\\nhi") + [
        line for line in docsSample("reason:bad since header") if line]
    assert len(pairs) == 6
    for request, reply in zip(pairs[::2], pairs[1::2]):
        member.flush()
        member.clear()
        member.receive(request)
        assert member.payloads() == [reply], request
    limitReply, forbiddenReply = docsSample("reason:bad limit header\\r\\n")
    member.clear()
    member.receive(historyRequest("room.1", limit=0))
    assert member.payloads() == [limitReply]
    stranger.receive(historyRequest("room.1"))
    assert stranger.payloads() == [forbiddenReply]

    for i in range(5):
        FakeClient(server).receive(publish("room.1", "%d" % i * 1500))
    request, reply, following = docsSample("before:4\\r\\n\\r\\n")
    member.flush()
    member.clear()
    member.receive(request)
    [got] = member.payloads()
    epoch = server.broker.history.epoch.encode()
    assert got.startswith(reply.replace(b"6b1123cee6ad1c", epoch).rstrip(b"."))
    member.clear()
    member.receive(following)
    [older] = member.messages()
    assert older.getHeader("count") == "2"
    assert [parse(p.body).getHeader("offset")
            for p in parseMultipart(older.body, older.getHeader("multipart"))] == ["2", "3"]

    [asked] = docsSample("limit:50")

    member.receive(subscribe("room.42"))
    member.clear()
    member.receive(asked)
    [answer] = member.messages()
    assert (answer.command, answer.getHeader("channel"), answer.getHeader("count")) == (
        "history", "room.42", "0")
