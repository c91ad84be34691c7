"""
Regressions from the security review of authentication and permissions,
in memory (L{lhttp.testing.FakeClient} on a L{MemoryReactorClock}): a
connection closed while its credential or subscription token is being
checked, a connect proxy answering an expiry already past, JWKS keys
removed from the endpoint, subscription tokens shown as connection
tokens, rights lowered by a refresh, secrets in C{repr(Config)}, the
connect proxy's header allow-list, and 401 versus 503 when the node
itself cannot tell.
"""

import time

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from lhttp.auth.identity import Identity
from lhttp.config import Config
from lhttp.errors import Unauthorized
from lhttp.interfaces import IAuthenticator
from lhttp.server import LHTTPServer
from lhttp.testing import FakeClient, makeToken, memoryServer

SECRET = "a-test-secret-of-at-least-32-bytes!!"


def send(client, text):
    client.clear()
    client.receive(text.replace("\n", "\r\n").encode())
    return client.messages()


@implementer(IAuthenticator)
class Stalled:
    """
    An authenticator whose answers wait until the test fires them.
    """

    fromHandshake = False
    method = "jwt"

    def __init__(self):
        self.pending = []

    def authenticate(self, connection, token, refresh=False):
        d = Deferred()
        self.pending.append(d)
        return d


class ClosedWhilePendingTests(SynchronousTestCase):
    """
    A connection that closes while its C{connect} or its subscription
    token is being checked is never subscribed after its close.
    """

    def test_connectThenClose(self):
        reactor = MemoryReactorClock()
        server = memoryServer(reactor=reactor, authJwtSecret=SECRET,
                              channels=("room.*=sub:anyone,presence:anyone",),
                              presence=("room.*",))
        stalled = server.authFilter.authenticator = Stalled()
        victim = FakeClient(server)
        watcher = FakeClient(server)
        watcher.connection.identity = Identity("bob", method="jwt")
        send(victim, "LHTTP/1.0 connect\ntoken:whatever\nsubscribe:room.1\n\n")
        [pending] = stalled.pending
        connection = victim.connection
        victim.disconnect()
        pending.callback(Identity("alice", None, None, "jwt"))
        self.assertEqual(connection.subscriptions, frozenset())
        self.assertEqual(len(server.users), 0)
        send(watcher, "LHTTP/1.0 s\nsubscribe:room.1\n\n")
        [stats] = send(watcher, "LHTTP/1.0 presence-stats\nchannel:room.1\n\n")
        self.assertEqual(stats.getHeader("clients"), "1", "the watcher alone, no ghost")

    def test_subscriptionTokenThenClose(self):
        clock = MemoryReactorClock()
        clock.advance(1000)
        pending = []

        def verify(token):
            d = Deferred()
            pending.append(d)
            return d

        server = LHTTPServer(Config(channels=("private.*=sub:token",)), reactor=clock,
                             verifySubscriptionToken=verify)
        alice = FakeClient(server)
        alice.connection.identity = Identity("alice", method="jwt")
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:t\n\n")
        connection = alice.connection
        alice.disconnect()
        pending[0].callback({"sub": "alice", "channel": "private.x", "exp": 1100})
        guard = server.guard
        self.assertEqual(connection.subscriptions, frozenset())
        self.assertEqual(guard._grants, {})
        self.assertEqual(guard._expiries, {})
        self.assertEqual([c for c in clock.getDelayedCalls() if c.func == guard._expire], [])

    def test_subscribeAfterCloseIsNothing(self):
        server = memoryServer(channels=("room.*=sub:anyone",))
        client = FakeClient(server)
        connection = client.connection
        client.disconnect()
        connection.subscribe("room.1")
        self.assertEqual(connection.subscriptions, frozenset())
