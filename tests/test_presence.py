"""
Presence in memory (the embedded broker's engine): C{presence} and
C{presence-stats} requests, users set by a filter, C{join}/C{leave}
messages, and the errors, through lhttp.testing's FakeClient.
"""

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lhttp import HeaderFilter, Processor
from lhttp.codec import parse
from lhttp.config import Config
from lhttp.presence import IPresence, Member, MemoryPresence
from lhttp.presence.jetstream import JetStreamPresence, keyFor
from lhttp.history import checkPattern
from lhttp.presence.policy import ClientIds, PresencePolicy, escapeChannel, unescapeChannel
from lhttp.presence.processor import presenceReply
from lhttp.server import LHTTPServer
from lhttp.testing import FakeClient, memoryServer


class UserFromPath(HeaderFilter):
    """
    What an authentication filter does: names the connection's user
    (here from the WebSocket path, C{/as/NAME}).
    """

    def onOpen(self, connection):
        parts = connection.handshake.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "as":
            connection.data["user"] = parts[1]


def node(**options):
    options.setdefault("presence", ("room.*",))
    server = memoryServer(**options)
    server.addFilter(UserFromPath())
    return server


def send(client, text):
    client.receive(text.replace("\n", "\r\n").encode())


def subscribed(server, channel, user=None):
    client = FakeClient(server, path=f"/as/{user}" if user else "/")
    send(client, f"LHTTP/1.0 enter\nsubscribe:{channel}\n\n")
    return client


def last(client):
    return client.messages()[-1]


def listing(message):
    """
    The presence reply's body as C{[(client, user or None)]}.
    """
    rows = []
    for line in message.body.decode().split("\r\n")[:-1]:
        client, _, user = line.partition(" ")
        rows.append((client, user or None))
    return rows


class PolicyTests(SynchronousTestCase):
    def test_patterns(self):
        policy = PresencePolicy(["room.*"], ["news.>"])
        self.assertTrue(policy.tracks("room.1"))
        self.assertFalse(policy.tracks("room.1.x"))
        self.assertFalse(policy.tracks("room"))
        self.assertTrue(policy.announces("news.a.b"))
        self.assertFalse(policy.announces("news"))
        self.assertFalse(policy.tracks("news.a"))
        self.assertTrue(policy.concerns("news.a"))
        self.assertFalse(policy.concerns("other"))

    def test_badPatterns(self):
        for bad in ["", "a..b", "a.>.b", "a*", ">x", "a b"]:
            self.assertRaises(ValueError, checkPattern, bad, "--presence")
        self.assertEqual(checkPattern(" room.* ", "--presence"), "room.*")
        with pytest.raises(ValueError, match="--presence"):
            Config(presence=("a..b",))
        with pytest.raises(ValueError, match="--presence-bucket"):
            Config(presenceBucket="no.dots")
        with pytest.raises(ValueError, match="--presence-ttl"):
            Config(presenceTTL=0)

    def test_escapedChannelsAreKeyTokens(self):
        for channel in ["room.42", "a=b", "ünï-cödé_1", "x/y", "--"]:
            token = escapeChannel(channel)
            self.assertRegex(token, r"^[A-Za-z0-9_=-]+$")
            self.assertEqual(unescapeChannel(token), channel)
        self.assertEqual(escapeChannel("room.42"), "room=2E42")
        self.assertEqual(keyFor("room.42", "ab-1"), "room=2E42.ab-1")
        # Distinct channels, distinct tokens.
        self.assertNotEqual(escapeChannel("a.b"), escapeChannel("a=2Eb"))

    def test_clientIds(self):
        ids = ClientIds("n1")
        self.assertEqual([ids.next(), ids.next()], ["n1-1", "n1-2"])
        self.assertNotEqual(ClientIds().node, ClientIds().node)

    def test_engines(self):
        verifyObject(IPresence, MemoryPresence())
        verifyObject(IPresence, JetStreamPresence(["nats://127.0.0.1:1"], None))

    def test_replyFormat(self):
        reply = presenceReply("presence", "room.1", [Member("a-1", "ann"), Member("a-2")], "a-2")
        self.assertEqual(
            reply.toBytes(),
            b"LHTTP/1.0 presence\r\nlhttp-node:reply\r\nchannel:room.1\r\ncount:2\r\nusers:1\r\nself:a-2\r\n\r\n"
            b"a-1 ann\r\na-2\r\n",
        )


class PresenceTests(SynchronousTestCase):
    def test_listsEverySubscriberWithItsUser(self):
        server = node()
        ann = subscribed(server, "room.1", "ann")
        bob = subscribed(server, "room.1", "bob")
        anon = subscribed(server, "room.1")
        subscribed(server, "room.2", "carl")
        send(bob, "LHTTP/1.0 presence\nchannel:room.1\n\n")
        reply = last(bob)
        self.assertEqual(reply.command, "presence")
        self.assertEqual(reply.getHeader("channel"), "room.1")
        self.assertEqual(reply.getHeader("count"), "3")
        self.assertEqual(reply.getHeader("users"), "2")
        clientOf = server.presence.clientOf
        self.assertEqual(reply.getHeader("self"), clientOf(bob.connection))
        self.assertEqual(sorted(listing(reply)), sorted([
            (clientOf(ann.connection), "ann"),
            (clientOf(bob.connection), "bob"),
            (clientOf(anon.connection), None),
        ]))
        ids = [clientOf(c.connection) for c in (ann, bob, anon)]
        self.assertEqual(len(set(ids)), 3)

    def test_stats(self):
        server = node()
        subscribed(server, "room.1", "ann")
        subscribed(server, "room.1", "ann")
        bob = subscribed(server, "room.1", "bob")
        subscribed(server, "room.1")
        send(bob, "LHTTP/1.0 presence-stats\nchannel:room.1\n\n")
        reply = last(bob)
        self.assertEqual(reply.command, "presence-stats")
        self.assertEqual(reply.getHeader("clients"), "4")
        self.assertEqual(reply.getHeader("users"), "2")
        self.assertEqual(reply.body, b"")

    def test_userSetByAFilterBeforeRequest(self):
        class Login(HeaderFilter):
            def beforeRequest(self, connection, message):
                name = message.getHeader("login")
                if name is not None:
                    connection.data["user"] = name

        server = memoryServer(presence=("room.*",))
        server.addFilter(Login())
        client = FakeClient(server)
        send(client, "LHTTP/1.0 enter\nlogin:dana\nsubscribe:room.9\n\n")
        send(client, "LHTTP/1.0 presence\nchannel:room.9\n\n")
        self.assertEqual(listing(last(client)), [(server.presence.clientOf(client.connection), "dana")])

    def test_subscribedByAProcessor(self):
        class Enter(Processor):
            def onMessage(self, connection, message):
                connection.subscribe("room.5")

        server = node()
        server.addProcessor("enter5", Enter())
        client = FakeClient(server)
        send(client, "LHTTP/1.0 enter5\n\n")
        send(client, "LHTTP/1.0 presence-stats\nchannel:room.5\n\n")
        self.assertEqual(last(client).getHeader("clients"), "1")

    def test_unsubscribeAndDisconnectLeave(self):
        server = node()
        ann = subscribed(server, "room.1 room.2", "ann")
        bob = subscribed(server, "room.1", "bob")
        carl = subscribed(server, "room.1", "carl")
        send(ann, "LHTTP/1.0 leave-room\nunsubscribe:room.1\n\n")
        carl.disconnect()
        send(bob, "LHTTP/1.0 presence\nchannel:room.1\n\n")
        self.assertEqual(listing(last(bob)), [(server.presence.clientOf(bob.connection), "bob")])
        # Still on room.2.
        send(ann, "LHTTP/1.0 presence\nchannel:room.2\n\n")
        self.assertEqual(last(ann).getHeader("count"), "1")
        # And nothing is left behind by a closed connection.
        ann.disconnect()
        bob.disconnect()
        self.assertEqual(server.presence.engine._channels, {})
        self.assertEqual(server.presence._seen, {})

    def test_errors(self):
        server = node(presenceEvents=("chat.*",))
        client = subscribed(server, "room.1 lobby chat.1")
        cases = [
            ("LHTTP/1.0 presence\n\n", "400", "bad header"),
            ("LHTTP/1.0 presence\nchannel:room.*\n\n", "400", "bad channel name"),
            ("LHTTP/1.0 presence\nchannel:room.1 room.2\n\n", "400", "bad header"),
            ("LHTTP/1.0 presence\nchannel:lobby\n\n", "404", "no presence"),
            ("LHTTP/1.0 presence-stats\nchannel:chat.1\n\n", "404", "no presence"),
            ("LHTTP/1.0 presence\nchannel:room.2\n\n", "403", "forbidden"),
            ("LHTTP/1.0 join\nlhttp-node:event\npublish:chat.1\nclient:x-1\n\n", "400",
             "reserved header"),
            ("LHTTP/1.0 leave\npublish:lobby chat.1\nLhttp-Node:event\n\n", "400",
             "reserved header"),
        ]
        for request, status, reason in cases:
            client.clear()
            send(client, request)
            reply = last(client)
            self.assertEqual(
                (reply.command, reply.getHeader("status"), reply.getHeader("reason")),
                ("error", status, reason), request,
            )
            self.assertEqual(reply.getHeader("command"), parse(request.replace("\n", "\r\n").encode()).command)
        # The connection is still there; a join with a client header on a
        # channel without events, or an application's join without one on
        # a channel with events (a chat's "ann joined"), are ordinary
        # messages.
        client.clear()
        send(client, "LHTTP/1.0 join\npublish:lobby\nclient:x-1\n\n")
        send(client, "LHTTP/1.0 join\npublish:chat.1\nnick:ann\n\n")
        self.assertEqual([(m.command, m.getHeader("nick")) for m in client.messages()],
                         [("join", None), ("join", "ann")])
        self.assertIsNone(client.closedWith)

    def test_noPresenceConfigured(self):
        server = memoryServer()
        self.assertIsNone(server.presence)
        client = FakeClient(server)
        send(client, "LHTTP/1.0 presence\nchannel:room.1\n\n")
        self.assertEqual(last(client).getHeader("status"), "404")
        self.assertEqual(last(client).getHeader("reason"), "no processor")

    def test_anApplicationsProcessorReplacesTheNodes(self):
        class Mine(Processor):
            def onMessage(self, connection, message):
                connection.send("mine")

        server = node()
        server.addProcessor("presence", Mine())
        client = subscribed(server, "room.1")
        send(client, "LHTTP/1.0 presence\nchannel:room.1\n\n")
        self.assertEqual(last(client).body, b"mine")

    def test_eventsOnlyHasNoPresenceRequests(self):
        server = memoryServer(presenceEvents=("room.*",))
        self.assertIsNotNone(server.presence)
        self.assertIsNone(server.dispatcher.getProcessor("presence"))


class EventTests(SynchronousTestCase):
    def test_joinAndLeave(self):
        server = node(presenceEvents=("room.*",))
        watcher = subscribed(server, "room.1", "wendy")
        self.assertEqual([m.command for m in watcher.messages()], ["join"])
        watcher.clear()
        ann = subscribed(server, "room.1", "ann")
        anon = subscribed(server, "room.1")
        clientOf = server.presence.clientOf
        annId, anonId = clientOf(ann.connection), clientOf(anon.connection)
        send(ann, "LHTTP/1.0 bye\nunsubscribe:room.1\n\n")
        anon.disconnect()
        got = [(m.command, m.getHeader("channel"), m.getHeader("client"), m.getHeader("user"))
               for m in watcher.messages()]
        self.assertEqual(got, [
            ("join", "room.1", annId, "ann"),
            ("join", "room.1", anonId, None),
            ("leave", "room.1", annId, "ann"),
            ("leave", "room.1", anonId, None),
        ])
        # The joiner hears its own join; the leaver not its own leave.
        self.assertEqual([m.command for m in ann.messages()], ["join", "join"])

    def test_noEventsWithoutTheOption(self):
        server = node()
        watcher = subscribed(server, "room.1")
        subscribed(server, "room.1").disconnect()
        self.assertEqual(watcher.messages(), [])

    def test_eventsWithoutTracking(self):
        server = memoryServer(presenceEvents=("news.>",))
        watcher = subscribed(server, "news.eu.fr")
        other = subscribed(server, "news.eu.fr")
        other.disconnect()
        self.assertEqual([m.command for m in watcher.messages()], ["join", "join", "leave"])

    def test_joinAnnouncedOnceRecorded(self):
        """
        With an engine that takes time (a cluster's), the join is announced
        after it is recorded, and the subscriber's next messages wait.
        """

        @implementer(IPresence)
        class SlowPresence(MemoryPresence):
            def __init__(self):
                MemoryPresence.__init__(self)
                self.waiting = []

            def join(self, channel, member):
                MemoryPresence.join(self, channel, member)
                d = Deferred()
                self.waiting.append(d)
                return d

        engine = SlowPresence()
        server = LHTTPServer(Config(presence=("room.*",), presenceEvents=("room.*",)),
                             presence=engine, reactor=memoryServer().factory.reactor)
        ann = FakeClient(server)
        send(ann, "LHTTP/1.0 enter\nsubscribe:room.1\n\n")
        send(ann, "LHTTP/1.0 presence-stats\nchannel:room.1\n\n")
        self.assertEqual(ann.messages(), [])
        engine.waiting.pop().callback(None)
        ann.flush()
        self.assertEqual([m.command for m in ann.messages()], ["join", "presence-stats"])


def docsSample(words):
    """
    The messages of the docs/presence.rst sample block containing
    C{words}, as bytes (its lines, C{\\r\\n} written as escapes).
    """
    from docsnippets import blockWith

    text = blockWith("::", words, ["docs/presence.rst"])
    return [line.encode().decode("unicode_escape").encode("latin-1") for line in text.splitlines()]


def docsLoginFilter():
    from docsnippets import blockWith

    namespace = {}
    exec(blockWith("python", "class LoginFilter", ["docs/presence.rst"]), namespace)
    return namespace["LoginFilter"]()


def test_docsSamples():
    """
    docs/presence.rst's samples are what a node sends, byte for byte.
    """
    server = memoryServer(presence=("room.*",), presenceEvents=("room.*",))
    server.presence._clientIds = ClientIds("3fa9c1d2")
    server.addFilter(docsLoginFilter())
    alice, bob, anon = FakeClient(server), FakeClient(server), FakeClient(server)
    send(alice, "LHTTP/1.0 enter\nlogin:alice\nsubscribe:room.42\n\n")
    send(bob, "LHTTP/1.0 enter\nlogin:bob\nsubscribe:room.42\n\n")
    send(anon, "LHTTP/1.0 enter\nsubscribe:room.42\n\n")
    for words in ["self:3fa9c1d2-2", "clients:3", "reason:no presence"]:
        request, reply = docsSample(words)
        bob.flush()
        bob.clear()
        bob.receive(request)
        assert bob.payloads() == [reply], words
    join, leave = docsSample("LHTTP/1.0 leave")
    assert alice.payloads()[0] == join
    alice.clear()
    anon.disconnect()
    assert alice.payloads() == [leave]


def test_docsLoginFilter():
    server = memoryServer(presence=("room.*",))
    server.addFilter(docsLoginFilter())
    client = FakeClient(server)
    send(client, "LHTTP/1.0 enter\nlogin:zoe\nsubscribe:room.1\n\n")
    send(client, "LHTTP/1.0 presence\nchannel:room.1\n\n")
    assert listing(last(client)) == [(server.presence.clientOf(client.connection), "zoe")]
