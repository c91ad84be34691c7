"""
C{POST /api/disconnect} and C{POST /api/unsubscribe} (server-side control,
docs/operations.rst) in memory, through treq's StubTreq and the node's own
Site: each documented answer, and what the user's connections see.
"""

import json

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from lhttp.auth.identity import Identity
from lhttp.testing import FakeClient, memoryServer

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNSUBSCRIBED = (b"LHTTP/1.0 unsubscribed\r\nlhttp-node:reply\r\nchannel:room.1\r\n"
                b"reason:unsubscribed by the server\r\n\r\n")


def signIn(server, client, user):
    """
    What authentication does (lhttp.auth): the identity, the registry.
    """
    connection = client.connection
    connection.identity = Identity(user, method="jwt")
    connection.data["user"] = user
    server.users.add(user, connection)


class ControlResourceTests(SynchronousTestCase):
    def setUp(self):
        self.build(publishToken=TOKEN)

    def build(self, **options):
        self.server = memoryServer(maxMessageSize=200, presenceEvents=("room.*",), **options)
        self.http = StubTreq(self.server.resource())

    def client(self, user=None):
        client = FakeClient(self.server)
        if user is not None:
            signIn(self.server, client, user)
        return client

    def post(self, path, body, headers=AUTH):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        response = self.successResultOf(
            self.http.post(f"http://localhost/api/{path}", data=body, headers=headers))
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_noPublishToken(self):
        """
        Without a publish token the API is off: 403 naming the variable,
        and nobody is disconnected.
        """
        self.build()
        alice = self.client("alice")
        code, document = self.post("disconnect", {"user": "alice"}, headers={})
        self.assertEqual(code, 403)
        self.assertIn("LHTTP_PUBLISH_TOKEN", document["detail"])
        self.assertIsNone(alice.closedWith)

    def test_missingToken(self):
        alice = self.client("alice")
        for path, body in (("disconnect", {"user": "alice"}),
                           ("unsubscribe", {"user": "alice", "channel": "room.1"})):
            code, document = self.post(path, body, headers={})
            self.assertEqual((code, document["reason"]), (401, "unauthorized"))
            self.assertIn(f"/api/{path}", document["detail"])
        self.assertIsNone(alice.closedWith)

    def test_wrongToken(self):
        alice = self.client("alice")
        for headers in ({"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
            code, document = self.post("disconnect", {"user": "alice"}, headers=headers)
            self.assertEqual((code, document["reason"]), (403, "forbidden"))
            self.assertNotIn(TOKEN, json.dumps(document))
        self.assertIsNone(alice.closedWith)

    def test_badBodies(self):
        alice = self.client("alice")
        cases = [
            ("disconnect", b"{not json", "not JSON"),
            ("disconnect", b"[\"alice\"]", "JSON object"),
            ("disconnect", {}, "'user'"),
            ("disconnect", {"user": ""}, "'user'"),
            ("disconnect", {"user": 7}, "'user'"),
            ("disconnect", {"user": "alice", "reconnect": "yes"}, "'reconnect'"),
            ("unsubscribe", {"user": "alice"}, "'channel'"),
            ("unsubscribe", {"user": "alice", "channel": "room.*"}, "bad channel name"),
            ("unsubscribe", {"channel": "room.1"}, "'user'"),
        ]
        for path, body, why in cases:
            code, document = self.post(path, body)
            self.assertEqual(code, 400, (path, body))
            self.assertIn(why, document["detail"] + document["reason"], (path, body))
        self.assertIsNone(alice.closedWith)

    def test_tooLarge(self):
        code, document = self.post("disconnect", {"user": "alice" * 100})
        self.assertEqual((code, document["reason"]), (413, "message too large"))

    def test_getIsNotAllowed(self):
        response = self.successResultOf(self.http.get("http://localhost/api/disconnect"))
        self.assertEqual(response.code, 405)
        response = self.successResultOf(self.http.get("http://localhost/api/other"))
        self.assertEqual(response.code, 404)

    def test_disconnect(self):
        """
        Every connection of the user closes with 4403; others stay.
        """
        alice1, alice2, bob, anonymous = (
            self.client("alice"), self.client("alice"), self.client("bob"), self.client())
        code, document = self.post("disconnect", {"user": "alice"})
        self.assertEqual((code, document), (200, {"user": "alice", "closed": 2, "cluster": False}))
        for client in (alice1, alice2, bob, anonymous):
            client.flush()
        self.assertEqual(alice1.closedWith, (4403, "disconnected by the server"))
        self.assertEqual(alice2.closedWith, (4403, "disconnected by the server"))
        self.assertEqual((bob.closedWith, anonymous.closedWith), (None, None))
        # Closed connections leave the registry.
        self.assertEqual(self.server.users.connectionsOf("alice"), [])
        self.assertEqual(len(self.server.users.connectionsOf("bob")), 1)
        code, document = self.post("disconnect", {"user": "alice"})
        self.assertEqual(document["closed"], 0)

    def test_disconnectReconnect(self):
        alice = self.client("alice")
        code, document = self.post("disconnect", {"user": "alice", "reconnect": True})
        self.assertEqual((code, document["closed"]), (200, 1))
        alice.flush()
        self.assertEqual(alice.closedWith, (4000, "reconnect"))

    def test_unsubscribe(self):
        """
        The user's connections leave the channel, are told, and its other
        subscribers hear the leave; other channels and users are kept.
        """
        alice = self.client("alice")
        aliceElsewhere = self.client("alice")
        bob = self.client("bob")
        alice.receive(b"LHTTP/1.0 s\r\nsubscribe:room.1 room.2\r\n\r\n")
        bob.receive(b"LHTTP/1.0 s\r\nsubscribe:room.1\r\n\r\n")
        for client in (alice, bob):
            client.sent()
            client.clear()
        code, document = self.post("unsubscribe", {"user": "alice", "channel": "room.1"})
        self.assertEqual((code, document), (200, {
            "user": "alice", "channel": "room.1", "unsubscribed": 1, "cluster": False}))
        self.assertEqual(alice.payloads(), [UNSUBSCRIBED])
        self.assertEqual(aliceElsewhere.payloads(), [])
        self.assertEqual(alice.connection.subscriptions, frozenset({"room.2"}))
        leaves = [m for m in bob.messages() if m.command == "leave"]
        self.assertEqual([(m.getHeader("channel"), m.getHeader("user")) for m in leaves],
                         [("room.1", "alice")])
        alice.clear()
        bob.receive(b"LHTTP/1.0 chat\r\npublish:room.1 room.2\r\n\r\nhi")
        self.assertEqual([m.getHeader("publish") for m in alice.messages()], ["room.1 room.2"])
        self.assertEqual(len(alice.messages()), 1)
        self.assertIsNone(alice.closedWith)

    def test_tokenCheckedBeforeBody(self):
        """
        Under the node's Site, a request without the token is refused from
        its head (no body read), as /publish.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        site = self.server.site()
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"POST /api/disconnect HTTP/1.1\r\nHost: localhost\r\n"
                             b"Content-Length: 100000\r\n\r\n")
        self.assertIn(b" 401 ", transport.value().split(b"\r\n")[0])


def test_docsSamples():
    """
    The C{unsubscribed} samples of docs/protocol.rst and
    docs/operations.rst are what a node sends, byte for byte.
    """
    from docsnippets import blockWith

    tests = ControlResourceTests("test_unsubscribe")
    tests.setUp()
    alice = tests.client("alice")
    alice.receive(b"LHTTP/1.0 s\r\nsubscribe:room.1\r\n\r\n")
    alice.sent()
    alice.clear()
    assert tests.post("unsubscribe", {"user": "alice", "channel": "room.1"})[0] == 200
    sent = alice.payloads()
    for language, path in (("::", "docs/protocol.rst"), ("text", "docs/operations.rst")):
        text = blockWith(language, "reason:unsubscribed by the server", [path])
        sample = text.strip().encode().decode("unicode_escape").encode("latin-1")
        assert sent == [sample], path


def test_controlsProvideIControl():
    from twisted.internet.testing import MemoryReactorClock
    from zope.interface.verify import verifyObject

    from lhttp.auth.control import LocalControl
    from lhttp.auth.identity import Users
    from lhttp.brokers.connection import NATSConnection
    from lhttp.brokers.control import NATSControl
    from lhttp.interfaces import IControl

    local = LocalControl(Users())
    clock = MemoryReactorClock()
    cluster = NATSControl(local, NATSConnection(["nats://127.0.0.1:4222"], clock), clock, "app")
    assert verifyObject(IControl, local) and verifyObject(IControl, cluster)
    assert (local.cluster, cluster.cluster) == (False, True)
    assert cluster.subject == "app_lhttp.control"
