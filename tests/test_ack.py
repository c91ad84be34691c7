"""
Publish acknowledgements and idempotent retries on one node (the embedded
broker), through the real protocol in memory: a publisher asks for an
C{LHTTP/1.0 ack} with C{publish-ack}, and a repeat of an
C{idempotency-key} is stored and delivered once. On NATS and JetStream,
with the link stalled and cut: tests/test_ack_cluster.py.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lhttp.acks import Receipt, RecentKeys, ackReply, checkToken, messageId
from lhttp.errors import BadHeader
from lhttp.testing import FakeClient, RecordingBroker, memoryServer
from lhttp.word import kindOf


def publish(channel, body, *headers, command="chat"):
    lines = "".join(f"{name}:{value}\r\n" for name, value in headers)
    return f"LHTTP/1.0 {command}\r\npublish:{channel}\r\n{lines}\r\n{body}".encode()


def subscribe(channels):
    return f"LHTTP/1.0 chat\r\nsubscribe:{channels}\r\n\r\n".encode()


class Nodes(SynchronousTestCase):
    def node(self, **options):
        server = memoryServer(**options)
        publisher, subscriber = FakeClient(server), FakeClient(server)
        return server, publisher, subscriber

    def acks(self, client):
        return [m for m in client.messages() if m.command == "ack"]

    def chats(self, client):
        return [m for m in client.messages() if m.command == "chat"]


class AckTests(Nodes):
    def test_ackInTheNodesWord(self):
        """
        A publish with C{publish-ack} is answered C{LHTTP/1.0 ack} in the
        node's word, with its id and status 200; subscribers get the
        message without the publisher's private headers.
        """
        _, publisher, subscriber = self.node()
        subscriber.receive(subscribe("room"))
        publisher.receive(publish("room", "hi", ("publish-ack", "a1"), ("nick", "ann")))
        [ack] = self.acks(publisher)
        self.assertEqual(kindOf(ack), "reply")
        self.assertEqual(ack.headers, [("lhttp-node", "reply"), ("publish-ack", "a1"),
                                       ("status", "200")])
        [chat] = self.chats(subscriber)
        self.assertEqual(chat.headers, [("publish", "room"), ("nick", "ann")])

    def test_noAckUnlessAsked(self):
        _, publisher, subscriber = self.node()
        subscriber.receive(subscribe("room"))
        publisher.receive(publish("room", "hi"))
        self.assertEqual(publisher.messages(), [])
        self.assertEqual(len(self.chats(subscriber)), 1)

    def test_ackGivesOffsetsOnHistoryChannels(self):
        server, publisher, subscriber = self.node(history=("room.*=100",))
        subscriber.receive(subscribe("room.1"))
        publisher.receive(publish("room.1 plain", "hi", ("publish-ack", "x")))
        [ack] = self.acks(publisher)
        epoch = server.broker.history.epoch
        self.assertEqual(ack.headers[1:], [("publish-ack", "x"), ("status", "200"),
                                           ("channel", "room.1"), ("offset", "1"),
                                           ("epoch", epoch)])
        [chat] = self.chats(subscriber)
        self.assertEqual(chat.getHeader("offset"), "1")

    def test_errorCarriesTheAckId(self):
        """
        A refused publish gets the usual error reply, with the same
        C{publish-ack} header so the publisher can match it.
        """
        server, publisher, _ = self.node(broker=RecordingBroker(ready=False))
        publisher.receive(publish("room", "hi", ("publish-ack", "p-7")))
        [error] = publisher.messages()
        self.assertEqual(error.command, "error")
        self.assertEqual(kindOf(error), "reply")
        self.assertEqual(error.getHeader("status"), "503")
        self.assertEqual(error.getHeader("publish-ack"), "p-7")

    def test_badChannelErrorCarriesTheAckId(self):
        _, publisher, _ = self.node()
        publisher.receive(publish("bad channel*", "hi", ("publish-ack", "q")))
        [error] = publisher.messages()
        self.assertEqual(error.getHeader("status"), "400")
        self.assertEqual(error.getHeader("publish-ack"), "q")

    def test_badTokensRefused(self):
        """
        An empty, too long or non-printable id or key is refused with a
        400 naming the header; nothing is published.
        """
        _, publisher, subscriber = self.node()
        subscriber.receive(subscribe("room"))
        for name in ("publish-ack", "idempotency-key"):
            for bad in ("", "x" * 65, "a\x7fb", "é"):
                publisher.clear()
                publisher.receive(publish("room", "hi", (name, bad)))
                [error] = publisher.messages()
                self.assertEqual(error.getHeader("status"), "400", (name, bad))
                self.assertIn(name, error.body.decode())
        self.assertEqual(self.chats(subscriber), [])

    def test_ackWithoutPublishRefused(self):
        _, publisher, _ = self.node()
        publisher.receive(b"LHTTP/1.0 chat\r\nsubscribe:room\r\npublish-ack:1\r\n\r\n")
        [error] = publisher.messages()
        self.assertEqual(error.getHeader("status"), "400")
        self.assertIn("publish-ack", error.body.decode())

    def test_ackCannotBeForged(self):
        """
        A client publishing an C{ack} of its own gets it to subscribers
        without the node's mark: the SDKs do not take it for one.
        """
        _, publisher, subscriber = self.node()
        subscriber.receive(subscribe("room"))
        publisher.receive(publish("room", "", ("status", "200"), command="ack"))
        [forged] = [m for m in subscriber.messages() if m.command == "ack"]
        self.assertIsNone(kindOf(forged))


class IdempotencyTests(Nodes):
    def test_retryDeliveredOnce(self):
        """
        The same C{idempotency-key} published three times: stored and
        delivered once, each acknowledged, the repeats with
        C{duplicate:true} and the first offset.
        """
        _, publisher, subscriber = self.node(history=("room.*=100",))
        subscriber.receive(subscribe("room.1 plain"))
        for n in range(3):
            publisher.receive(publish("room.1 plain", "hi", ("publish-ack", str(n)),
                                      ("idempotency-key", "k1")))
        acks = self.acks(publisher)
        self.assertEqual([a.getHeader("publish-ack") for a in acks], ["0", "1", "2"])
        self.assertEqual([a.getHeader("duplicate") for a in acks], [None, "true", "true"])
        self.assertEqual({a.getHeader("offset") for a in acks}, {"1"})
        chats = self.chats(subscriber)
        self.assertEqual(sorted(m.getHeader("channel") or "plain" for m in chats),
                         ["plain", "room.1"])
        for chat in chats:
            self.assertIsNone(chat.getHeader("idempotency-key"))

    def test_otherKeysAndChannelsAreOwn(self):
        _, publisher, subscriber = self.node()
        subscriber.receive(subscribe("a b"))
        publisher.receive(publish("a", "1", ("idempotency-key", "k")))
        publisher.receive(publish("b", "2", ("idempotency-key", "k")))
        publisher.receive(publish("a", "3", ("idempotency-key", "k2")))
        self.assertEqual(sorted(m.body for m in self.chats(subscriber)), [b"1", b"2", b"3"])

    def test_keyWithoutAck(self):
        _, publisher, subscriber = self.node()
        subscriber.receive(subscribe("a"))
        for _ in range(2):
            publisher.receive(publish("a", "1", ("idempotency-key", "k")))
        self.assertEqual(len(self.chats(subscriber)), 1)
        self.assertEqual(publisher.messages(), [])


class WindowTests(SynchronousTestCase):
    def test_countBound(self):
        window = RecentKeys(size=3)
        for n in range(5):
            self.assertFalse(window.seen(n))
        self.assertEqual(len(window), 3)
        self.assertFalse(window.seen(0))
        self.assertTrue(window.seen(4))

    def test_timeBound(self):
        clock = Clock()
        window = RecentKeys(clock.seconds, seconds=120)
        self.assertFalse(window.seen("k"))
        clock.advance(119)
        self.assertTrue(window.seen("k"))
        clock.advance(121)
        self.assertFalse(window.seen("k"))
        self.assertEqual(len(window), 1)

    def test_tokens(self):
        self.assertEqual(checkToken("publish-ack", "a-1_Z~"), "a-1_Z~")
        for bad in ("", " ", "a b", "x" * 65, "\t"):
            self.assertRaises(BadHeader, checkToken, "publish-ack", bad)

    def test_messageIdPerChannel(self):
        self.assertNotEqual(messageId("a", "k"), messageId("b", "k"))
        self.assertEqual(messageId("a", "k"), messageId("a", "k"))
        self.assertLessEqual(len(messageId("a" * 200, "k" * 64)), 42)

    def test_ackReply(self):
        reply = ackReply("i", Receipt([("c", "e", 5)], duplicate=True))
        self.assertEqual(reply.toBytes(), b"LHTTP/1.0 ack\r\nlhttp-node:reply\r\npublish-ack:i\r\n"
                         b"status:200\r\nduplicate:true\r\nchannel:c\r\noffset:5\r\nepoch:e\r\n\r\n")


class HTTPPublishTests(SynchronousTestCase):
    """
    C{POST /publish}: the answer carries the offsets, and a repeated
    C{idempotency-key} is published once.
    """

    def post(self, server, body):
        from treq.testing import StubTreq

        http = StubTreq(server.resource())
        response = self.successResultOf(http.post("http://localhost/publish", data=body))
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_offsetsAndDuplicate(self):
        server = memoryServer(history=("room.*=100",))
        subscriber = FakeClient(server)
        subscriber.receive(subscribe("room.1"))
        message = publish("room.1", "hi", ("idempotency-key", "k9"), ("publish-ack", "x"))
        code, first = self.post(server, message)
        self.assertEqual(code, 200)
        epoch = server.broker.history.epoch
        self.assertEqual(first, {"status": 200, "channels": ["room.1"],
                                 "positions": [{"channel": "room.1", "offset": 1, "epoch": epoch}]})
        code, again = self.post(server, message)
        self.assertEqual(again["duplicate"], True)
        self.assertEqual(again["positions"], first["positions"])
        chats = [m for m in subscriber.messages() if m.command == "chat"]
        self.assertEqual(len(chats), 1)
        self.assertIsNone(chats[0].getHeader("idempotency-key"))
        self.assertIsNone(chats[0].getHeader("publish-ack"))

    def test_badKeyRefused(self):
        server = memoryServer()
        code, answer = self.post(server, publish("room", "hi", ("idempotency-key", "a b")))
        self.assertEqual(code, 400)
        self.assertIn("idempotency-key", answer["detail"])


class PythonClientTests(SynchronousTestCase):
    """
    L{lhttp.client.ReconnectingClient.publish} with C{ack=True}, on a node
    in memory: the Deferred fires on the node's ack only, a 503 is sent
    again with the same key, a dropped connection too.
    """

    def setUp(self):
        from twisted.application.internet import backoffPolicy
        from twisted.internet.testing import MemoryReactorClock

        from lhttp.client import ReconnectingClient
        from test_client import MemoryNode

        self.clock = MemoryReactorClock()
        self.broker = RecordingBroker()
        self.node = MemoryNode(self.clock, lambda: memoryServer(broker=self.broker,
                                                                 reactor=self.clock))
        self.client = ReconnectingClient(
            self.clock, "ws://node/", endpoint=self.node,
            retryPolicy=backoffPolicy(initialDelay=1.0, factor=2.0, maxDelay=8.0, jitter=lambda: 0),
        )
        self.client.startService()
        d = self.client.whenConnected()
        self.node.flush()
        self.successResultOf(d)

    def published(self):
        from lhttp.codec import parse

        return [parse(payload) for _, payload in self.broker.published]

    def test_ackFiresTheDeferred(self):
        d = self.client.publish("room", "chat", [("nick", "ann")], "hi", ack=True, key="k")
        self.node.flush()
        ack = self.successResultOf(d)
        self.assertEqual((ack.duplicate, ack.attempts, ack.positions), (False, 1, {}))
        [message] = self.published()
        self.assertEqual(message.headers, [("publish", "room"), ("nick", "ann")])

    def test_503SentAgainWithTheSameKey(self):
        self.broker.ready = False
        d = self.client.publish("room", "chat", [], "hi", ack=True)
        self.node.flush()
        self.assertNoResult(d)
        self.broker.ready = True
        self.clock.advance(0.25)
        self.node.flush()
        ack = self.successResultOf(d)
        self.assertEqual(ack.attempts, 2)
        self.assertEqual(len(self.published()), 1)

    def test_otherErrorsFailAtOnce(self):
        from lhttp.client import ErrorReply

        d = self.client.publish("bad*", "chat", [], "hi", ack=True)
        self.node.flush()
        self.assertEqual(self.failureResultOf(d, ErrorReply).value.status, 400)

    def test_retriesRunOut(self):
        from lhttp.client import ErrorReply

        self.broker.ready = False
        d = self.client.publish("room", "chat", [], "hi", ack=True, retries=2)
        for _ in range(4):
            self.node.flush()
            self.clock.advance(4)
        self.assertEqual(self.failureResultOf(d, ErrorReply).value.status, 503)

    def test_droppedConnectionSentAgainAfterReconnect(self):
        from lhttp.client import LHTTPClientProtocol

        keys = []
        send = LHTTPClientProtocol.send

        def recording(protocol, command, headers=(), body=b""):
            keys.extend(value for name, value in headers if name == "idempotency-key")
            return send(protocol, command, headers, body)

        self.patch(LHTTPClientProtocol, "send", recording)
        d = self.client.publish("room", "chat", [], "hi", ack=True)
        self.node.cut()
        self.assertNoResult(d)
        for _ in range(4):
            self.clock.advance(1)
            self.node.flush()
        self.assertEqual(self.successResultOf(d).attempts, 2)
        self.assertEqual(len(set(keys)), 1)
        self.assertTrue(keys[0])

    def test_lookAlikeAckNotTaken(self):
        """
        An C{ack} another client published (the node takes any
        C{publish-ack} header off it) is an ordinary message; one carrying
        the pending id without the node's mark is not taken either.
        """
        from lhttp.codec import Message

        self.client.subscribe("room")
        self.node.flush()
        protocol = self.client.protocol
        d = protocol.publish("other", "chat", [], "hi", ack=True)
        [ackId] = list(protocol._acks)
        FakeClient(self.node.server).receive(Message("ack", [
            ("publish", "room"), ("publish-ack", ackId), ("status", "200"), ("duplicate", "true"),
        ]).toBytes())
        protocol.onMessage(Message("ack", [
            ("publish-ack", ackId), ("status", "200"), ("duplicate", "true"),
            ("lhttp-node", "reply"),
        ]).toBytes(), False)
        self.assertNoResult(d)
        self.node.flush()
        self.assertFalse(self.successResultOf(d).duplicate)
        forged = self.successResultOf(self.client.nextMessage())
        self.assertEqual((forged.command, forged.getHeader("publish-ack")), ("ack", ackId))
        relayed = self.successResultOf(self.client.nextMessage())
        self.assertEqual((relayed.command, relayed.getHeader("publish-ack")), ("ack", None))
        for message in (relayed, forged):
            self.assertIsNone(kindOf(message))
