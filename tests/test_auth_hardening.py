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

import json
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


PROXY_EXPIRED = (b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:401\r\nreason:unauthorized\r\n"
                 b"command:connect\r\n\r\nthe connect proxy's answer has already expired")


def docsSample(words):
    """
    The one wire sample of docs/authentication.rst containing C{words},
    as bytes.
    """
    from docsnippets import blockWith

    text = blockWith("::", words, ["docs/authentication.rst"])
    return text.strip().encode().decode("unicode_escape").encode("latin-1")


def test_proxyExpiredSample():
    """
    docs/authentication.rst shows the reply L{ProxyAnswerExpiredTests}
    gets from a node, byte for byte.
    """
    assert docsSample("answer has already expired") == PROXY_EXPIRED


class ProxyAnswerExpiredTests(SynchronousTestCase):
    """
    A connect proxy answering an C{expires} already past is a refusal,
    not a renewal due at once (which asked the proxy again in a loop).
    """

    def setUp(self):
        from treq.testing import StubTreq

        from lhttp.auth.proxy import ConnectProxy
        from test_auth_unit import ProxyServer

        self.reactor = MemoryReactorClock()
        self.reactor.advance(time.time())
        self.now = int(self.reactor.seconds())
        self.backend = ProxyServer()
        self.server = memoryServer(reactor=self.reactor, authProxy="http://app.example/auth")
        self.stub = StubTreq(self.backend)
        proxy = ConnectProxy("http://app.example/auth", self.stub, self.reactor)
        ask = proxy.authenticate

        def authenticate(*args):
            # Before the fix the node asked again at once, forever: stop
            # the loop so the test fails instead of hanging.
            if len(self.backend.requests) > 5:
                raise RuntimeError("the node asks the connect proxy in a loop")
            return ask(*args)

        proxy.authenticate = authenticate
        self.server.authFilter.authenticator = proxy

    def test_atOpen(self):
        self.backend.answer = {"user": "alice", "expires": self.now - 1}
        self.backend.slow = True
        client = FakeClient(self.server, headers={"Cookie": "session=abc"})
        [request] = self.backend.pending
        request.write(json.dumps(self.backend.answer).encode())
        request.finish()
        self.stub.flush()
        self.reactor.advance(0)
        self.reactor.advance(0)
        client.flush()
        self.assertEqual(len(self.backend.requests), 1)
        self.assertEqual(client.payloads(), [PROXY_EXPIRED])
        self.assertEqual(client.closedWith[0], 4401)
        self.assertFalse(client.connection.identity.authenticated)

    def test_atRenewal(self):
        self.backend.answer = {"user": "alice", "expires": self.now + 5}
        client = FakeClient(self.server, headers={"Cookie": "session=abc"})
        self.assertEqual(client.connection.identity.user, "alice")
        client.clear()
        self.backend.answer = {"user": "alice", "expires": self.now}
        self.reactor.advance(5)
        for _ in range(5):
            self.reactor.advance(0)
        client.flush()
        self.assertEqual(len(self.backend.requests), 2, "asked once again, not in a loop")
        self.assertEqual(client.payloads(), [
            b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:401\r\nreason:unauthorized\r\n"
            b"command:refresh\r\n\r\nthe connect proxy's answer has already expired"])
        self.assertEqual(client.closedWith[0], 4419)


def test_tokensNotInConfigRepr():
    """
    No bearer token of the node's HTTP endpoints, and not the JWT secret,
    appears in C{repr(Config)} (which ends up in logs and tracebacks).
    """
    tokens = {"publishToken": "pub-t0ken-value", "metricsToken": "metr1cs-token-value",
              "adminToken": "adm1n-token-value"}
    text = repr(Config(authJwtSecret=SECRET, **tokens))
    for value in (SECRET, *tokens.values()):
        assert value not in text


SUBSCRIPTION_TOKEN_REFUSED = (
    b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:401\r\nreason:unauthorized\r\n"
    b"command:connect\r\n\r\nthis is a subscription token (it has a 'channel' claim), "
    b"not a connection token")


def test_subscriptionTokenRefusedSample():
    """
    docs/authentication.rst shows the reply a node gives a subscription
    token shown to C{connect}, byte for byte.
    """
    assert docsSample("not a connection token") == SUBSCRIPTION_TOKEN_REFUSED


class SubscriptionTokenAsConnectionTokenTests(SynchronousTestCase):
    """
    A subscription token (C{sub}, C{channel}, C{exp}) shown to C{connect}
    or C{refresh} is refused: as a connection token it would carry no
    C{caps}, so the broader rules for its user would apply.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(time.time())
        self.server = memoryServer(reactor=self.reactor, authJwtSecret=SECRET,
                                   channels=("room.*=sub:users",))
        self.exp = int(time.time()) + 600

    def test_connect(self):
        attacker = FakeClient(self.server)
        token = makeToken(SECRET, "alice", exp=self.exp, channel="private.x")
        [reply] = send(attacker, f"LHTTP/1.0 connect\ntoken:{token}\n\n")
        self.assertEqual(reply.toBytes(), SUBSCRIPTION_TOKEN_REFUSED)
        self.assertEqual(attacker.closedWith[0], 4401)
        self.assertFalse(attacker.connection.identity.authenticated)

    def test_refresh(self):
        client = FakeClient(self.server)
        caps = [{"channels": ["room.1"], "allow": ["sub"]}]
        send(client, f"LHTTP/1.0 connect\ntoken:{makeToken(SECRET, 'alice', caps=caps)}\n\n")
        token = makeToken(SECRET, "alice", exp=self.exp, channel="private.x")
        [reply] = send(client, f"LHTTP/1.0 refresh\ntoken:{token}\n\n")
        self.assertEqual((reply.getHeader("status"), reply.getHeader("command"), reply.body),
                         ("401", "refresh", SUBSCRIPTION_TOKEN_REFUSED.split(b"\r\n\r\n")[1]))
        # The connection keeps its own, narrower credential.
        self.assertIsNotNone(client.connection.identity.caps)


class JWKSMaxAgeTests(SynchronousTestCase):
    """
    JWKS keys are fetched again once older than C{maxAge}: a key removed
    from the endpoint stops verifying tokens without a restart.
    """

    def setUp(self):
        from treq.testing import StubTreq

        from lhttp.auth.jwt import JWKSKeys, JWTVerifier
        from lhttp.testing import KeyPair
        from test_auth_unit import JWKSServer

        self.clock = MemoryReactorClock()
        self.clock.advance(1000)
        self.old, self.new = KeyPair("RSA"), KeyPair("RSA")
        self.server = JWKSServer([self.old.jwk("k1")])
        self.jwks = JWKSKeys("http://keys.example/jwks.json", StubTreq(self.server), self.clock)
        self.verifier = JWTVerifier([], self.jwks)
        self.token = makeToken(self.old.privatePEM, "alice", "RS256", headers={"kid": "k1"})

    def verify(self, token):
        from test_auth_unit import result

        return result(self.verifier.verify(token))

    def test_removedKeyStopsVerifying(self):
        self.assertEqual(self.verify(self.token)["sub"], "alice")
        self.server.keys[:] = [self.new.jwk("k2")]
        self.clock.advance(599)
        self.assertEqual(self.verify(self.token)["sub"], "alice", "cached for 10 minutes")
        self.assertEqual(self.server.requests, 1)
        self.clock.advance(1)
        error = self.verify(self.token)
        self.assertIsInstance(error, Unauthorized)
        self.assertEqual(error.detail, "unknown key id")
        self.assertEqual(self.server.requests, 2)

    def test_oldKeysKeptWhenTheFetchFails(self):
        self.assertEqual(self.verify(self.token)["sub"], "alice")
        self.server.mode = "500"
        self.clock.advance(600)
        self.assertEqual(self.verify(self.token)["sub"], "alice")
        self.assertEqual(self.server.requests, 2)
        # Not asked again for each token while it is down.
        self.assertEqual(self.verify(self.token)["sub"], "alice")
        self.assertEqual(self.server.requests, 2)

    def test_oneFetchAtATime(self):
        self.verify(self.token)
        self.server.mode = "slow"
        self.clock.advance(600)
        first = self.verifier.verify(self.token)
        second = self.verifier.verify(self.token)
        self.assertEqual(self.server.requests, 2)
        self.clock.advance(5.1)
        self.assertEqual(self.successResultOf(first)["sub"], "alice")
        self.assertEqual(self.successResultOf(second)["sub"], "alice")


class UnavailableNotUnauthorizedTests(SynchronousTestCase):
    """
    When the node itself cannot tell (its key refetch is rate limited, its
    check is still under way at the handshake deadline), the client is
    told 503 / 4503 (retry with backoff), not 401 / 4401 (SDKs stop); a
    connect proxy's unusable answer is said to be one.
    """

    def test_rateLimitedUnknownKid(self):
        from treq.testing import StubTreq

        from lhttp.auth.jwt import JWKSKeys, JWTVerifier
        from lhttp.errors import AuthenticationUnavailable
        from lhttp.testing import KeyPair
        from test_auth_unit import JWKSServer, result

        clock = MemoryReactorClock()
        clock.advance(1000)
        old, new = KeyPair("RSA"), KeyPair("RSA")
        server = JWKSServer([old.jwk("k1")])
        verifier = JWTVerifier([], JWKSKeys("http://keys.example/jwks.json", StubTreq(server), clock))
        result(verifier.verify(makeToken(old.privatePEM, "a", "RS256", headers={"kid": "k1"})))
        rotated = makeToken(new.privatePEM, "a", "RS256", headers={"kid": "k2"})
        # Fetched again at once: still unknown, a bad token.
        self.assertEqual(result(verifier.verify(rotated)).status, 401)
        # Within 30 s the node will not ask: it cannot tell.
        server.keys.append(new.jwk("k2"))
        error = result(verifier.verify(rotated))
        self.assertIsInstance(error, AuthenticationUnavailable)
        self.assertEqual(error.status, 503)
        self.assertEqual(server.requests, 2)
        clock.advance(30)
        self.assertEqual(result(verifier.verify(rotated))["sub"], "a")

    def test_handshakeDeadlineWhileChecking(self):
        reactor = MemoryReactorClock()
        server = memoryServer(reactor=reactor, authJwtSecret=SECRET, handshakeTimeout=10)
        server.authFilter.authenticator = Stalled()
        client = FakeClient(server)
        reactor.advance(8)
        send(client, "LHTTP/1.0 connect\ntoken:whatever\n\n")
        reactor.advance(2.1)
        client.flush()
        self.assertEqual(client.closedWith[0], 4503)
        # Without a connect under way, it is 4401 as before.
        idle = FakeClient(server)
        reactor.advance(10.1)
        idle.flush()
        self.assertEqual(idle.closedWith[0], 4401)

    def test_proxyInfiniteExpires(self):
        from lhttp.auth.proxy import identityOf

        for answer in (b'{"user": "a", "expires": Infinity}', b'{"user": "a", "expires": NaN}',
                       b'{"user": "a", "expires": 1e400}'):
            with self.assertRaises(ValueError) as caught:
                identityOf(answer)
            self.assertIn("'expires' is not Unix seconds", str(caught.exception))


FORBIDDEN_PROXY_HEADERS = ("Host", "content-length", "Transfer-Encoding", "Content-Type",
                           "Connection", "Keep-Alive", "TE", "Trailer", "Upgrade",
                           "Proxy-Authorization", "Proxy-Connection", "Expect")


def test_proxyHeaderAllowListRefusesFraming():
    """
    C{--auth-proxy-header} refuses the names that frame or route the
    request to the connect proxy (a client controls every allow-listed
    header's value): one line naming the header.
    """
    import pytest
    from twisted.python.usage import UsageError

    from lhttp.options import Options

    url = "http://127.0.0.1:8000/lhttp/connect"
    for name in FORBIDDEN_PROXY_HEADERS:
        with pytest.raises(ValueError, match="--auth-proxy-header"):
            Config(authProxy=url, authProxyHeaders=(name,))
        with pytest.raises(UsageError) as caught:
            Options().parseOptions(["--auth-proxy", url, "--auth-proxy-header", name])
        assert "\n" not in str(caught.value) and name in str(caught.value)
    assert Config(authProxy=url, authProxyHeaders=("X-Session",)).authProxyHeaders == ("X-Session",)


def test_proxyRequestKeepsItsOwnFraming():
    """
    Even given such a name, the request to the proxy carries the
    handshake's value for none of them.
    """
    from lhttp.auth.proxy import handshakeHeaders

    class Handshake:
        headers = {name.lower(): "evil" for name in FORBIDDEN_PROXY_HEADERS}

    headers = handshakeHeaders(Handshake(), FORBIDDEN_PROXY_HEADERS)
    for name in FORBIDDEN_PROXY_HEADERS:
        assert "evil" not in (headers.getRawHeaders(name) or []), name


NO_LONGER_ALLOWED = (b"LHTTP/1.0 unsubscribed\r\nlhttp-node:reply\r\nchannel:room.2\r\n"
                     b"reason:no longer allowed\r\n\r\n")


class RightsLoweredTests(SynchronousTestCase):
    """
    A C{refresh} whose token grants less ends the subscriptions the new
    credential does not allow, and tells the client.
    """

    def test_refreshWithNarrowerCaps(self):
        reactor = MemoryReactorClock()
        reactor.advance(time.time())
        server = memoryServer(reactor=reactor, authJwtSecret=SECRET,
                              channels=("room.*=sub:users,pub:users",))
        alice, bob = FakeClient(server), FakeClient(server)
        send(alice, f"LHTTP/1.0 connect\ntoken:{makeToken(SECRET, 'alice')}\n\n")
        send(bob, f"LHTTP/1.0 connect\ntoken:{makeToken(SECRET, 'bob')}\n\n")
        send(alice, "LHTTP/1.0 s\nsubscribe:room.1 room.2\n\n")
        self.assertEqual(alice.connection.subscriptions, {"room.1", "room.2"})
        # Its new token may still publish to room.2, no longer read it.
        caps = [{"channels": ["room.1"], "allow": ["sub"]}, {"channels": ["room.2"], "allow": ["pub"]}]
        replies = send(alice, f"LHTTP/1.0 refresh\ntoken:{makeToken(SECRET, 'alice', caps=caps)}\n\n")
        self.assertEqual([r.command for r in replies], ["refresh", "unsubscribed"])
        self.assertEqual(replies[0].getHeader("status"), "200")
        self.assertEqual(replies[1].toBytes(), NO_LONGER_ALLOWED)
        self.assertEqual(alice.connection.subscriptions, {"room.1"})
        # Another user's message on room.2 no longer reaches it.
        alice.clear()
        send(bob, "LHTTP/1.0 chat\npublish:room.2\n\nsecret")
        self.assertEqual(alice.messages(), [])
        # A refresh that lowers nothing leaves the rest alone.
        replies = send(alice, f"LHTTP/1.0 refresh\ntoken:{makeToken(SECRET, 'alice', caps=caps)}\n\n")
        self.assertEqual([r.command for r in replies], ["refresh"])
        self.assertEqual(alice.connection.subscriptions, {"room.1"})


def test_noLongerAllowedSample():
    """
    docs/authentication.rst shows the C{unsubscribed} message a lowered
    refresh gets, byte for byte.
    """
    assert docsSample("reason:no longer allowed") == NO_LONGER_ALLOWED
