"""
Connection authentication in memory (docs/authentication.rst): the JWT
verifier against forged tokens (C{alg:none}, HS/RS key confusion, wrong
kid, expired...), JWKS fetching against L{treq.testing.StubTreq}, the
connect proxy's request and answers, and L{lhttp.auth.filter.AuthFilter}
on a node driven by L{lhttp.testing.FakeClient}.
"""

import base64
import hashlib
import hmac
import json
import time

import jwt
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from lhttp.auth.filter import AuthFilter
from lhttp.auth.identity import Identity
from lhttp.auth.jwt import (
    JWKSKeys,
    JWTVerifier,
    loadPublicKey,
    parseCaps,
    secretKey,
)
from lhttp.auth.proxy import ConnectProxy

from lhttp.config import Config
from lhttp.errors import AuthenticationUnavailable, Unauthorized
from lhttp.interfaces import IAuthenticator, IHeaderFilter
from lhttp.testing import FakeClient, KeyPair, makeToken, memoryServer

SECRET = "a-test-secret-of-at-least-32-bytes!!"
RSA = KeyPair("RSA")


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs256With(key, payload, header=None):
    """
    An HS256 token signed with arbitrary bytes as the HMAC key (what an
    attacker does with a server's RSA public key), by hand: PyJWT itself
    refuses to.
    """
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def result(d):
    """
    What a fired L{Deferred} holds: its result, or its failure's exception.
    """
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    value = out[0]
    return getattr(value, "value", value)


class VerifierTests(SynchronousTestCase):
    def setUp(self):
        self.verifier = JWTVerifier([secretKey(SECRET), loadPublicKey(RSA.publicPEM)])

    def refused(self, token, reason, verifier=None):
        error = result((verifier or self.verifier).verify(token))
        self.assertIsInstance(error, Unauthorized)
        self.assertEqual(error.detail, reason)
        self.assertNotIn(token, error.detail)

    def test_interface(self):
        verifyObject(IAuthenticator, self.verifier)

    def test_goodTokens(self):
        for kind, algorithm in (("RSA", "PS256"), ("EC", "ES256"), ("Ed25519", "EdDSA")):
            pair = RSA if kind == "RSA" else KeyPair(kind)
            verifier = JWTVerifier([loadPublicKey(pair.publicPEM)])
            claims = result(verifier.verify(makeToken(pair.privatePEM, "bob", algorithm)))
            self.assertEqual(claims["sub"], "bob")
        claims = result(self.verifier.verify(makeToken(SECRET, "alice", expiresIn=60)))
        self.assertEqual(claims["sub"], "alice")

    def test_unsignedAndAlgNone(self):
        unsigned = jwt.encode({"sub": "mallory"}, None, algorithm="none")
        self.refused(unsigned, "unsigned tokens (alg 'none') are not accepted")
        # 'None' spelled otherwise, and no signature at all.
        self.refused(hs256With(b"", {"sub": "m"}, {"alg": "NONE"}).rsplit(".", 1)[0] + ".",
                     "unsigned tokens (alg 'none') are not accepted")
        self.refused("a.b", "malformed token")
        self.refused("not a token", "malformed token")

    def test_keyConfusion(self):
        """
        An HS256 token whose HMAC key is the server's RSA public key: the
        RSA key verifies RS*/PS* only, and with a secret beside it the
        secret is the only HMAC key.
        """
        forged = hs256With(RSA.publicPEM, {"sub": "mallory"})
        self.refused(forged, "no key of this server verifies 'HS256' tokens",
                     JWTVerifier([loadPublicKey(RSA.publicPEM)]))
        self.refused(forged, "bad signature")
        # And an RS256 token is not checked with an HMAC key.
        self.refused(makeToken(RSA.privatePEM, "bob", "RS256"),
                     "no key of this server verifies 'RS256' tokens",
                     JWTVerifier([secretKey(SECRET)]))
        # An EC key verifies only its curve's algorithm.
        ec = KeyPair("EC")
        self.refused(makeToken(ec.privatePEM, "bob", "ES256"),
                     "no key of this server verifies 'ES256' tokens")

    def test_claims(self):
        now = int(time.time())
        self.refused(makeToken(SECRET, "alice", exp=now - 60), "token expired")
        self.refused(makeToken(SECRET, "alice", nbf=now + 60), "token not yet valid")
        self.refused(makeToken(SECRET, "alice", iat=now + 60), "token not yet valid")
        self.refused(makeToken(SECRET, None), "no 'sub' claim")
        self.refused(makeToken(SECRET, ""), "the 'sub' claim is empty")
        self.refused(makeToken("another-secret-of-at-least-32-bytes", "alice"), "bad signature")
        # Within the leeway (5 s).
        self.assertEqual(result(self.verifier.verify(makeToken(SECRET, "a", exp=now - 2)))["sub"], "a")

    def test_audienceAndIssuer(self):
        verifier = JWTVerifier([secretKey(SECRET)], audience="chat", issuer="https://id.example")
        good = makeToken(SECRET, "alice", aud="chat", iss="https://id.example")
        self.assertEqual(result(verifier.verify(good))["sub"], "alice")
        self.refused(makeToken(SECRET, "alice", aud="other", iss="https://id.example"),
                     "wrong audience", verifier)
        self.refused(makeToken(SECRET, "alice", aud="chat", iss="https://evil.example"),
                     "wrong issuer", verifier)
        self.refused(makeToken(SECRET, "alice", iss="https://id.example"), "no 'aud' claim",
                     verifier)
        # Not checked when not configured.
        self.assertEqual(result(self.verifier.verify(makeToken(SECRET, "a", aud="x")))["sub"], "a")

    def test_subscriptionTokensMayBeAnonymous(self):
        token = makeToken(SECRET, None, channel="private.x")
        self.assertEqual(result(self.verifier.verify(token, requireSub=False))["channel"], "private.x")

    def test_caps(self):
        caps = [{"channels": ["room.*", "news.>"], "allow": ["sub", "history"]}]
        identity = result(self.verifier.authenticate(None, makeToken(SECRET, "a", caps=caps)))
        self.assertEqual(identity, Identity("a", None, ((("room.*", "news.>"),
                                                         frozenset({"sub", "history"})),), "jwt"))
        for bad in ({"channels": ["a"]}, [{"channels": "a", "allow": ["sub"]}],
                    [{"channels": ["a"], "allow": ["admin"]}],
                    [{"channels": ["a..b"], "allow": ["sub"]}],
                    [{"channels": ["a"], "allow": ["sub"], "more": 1}]):
            error = result(self.verifier.authenticate(None, makeToken(SECRET, "a", caps=bad)))
            self.assertIsInstance(error, Unauthorized)
            self.assertTrue(error.detail.startswith("malformed caps claim"), error.detail)
        self.assertIsNone(parseCaps(None))

    def test_loadPublicKeyRefusesPrivateKeys(self):
        self.assertRaises(ValueError, loadPublicKey, RSA.privatePEM)
        self.assertRaises(ValueError, loadPublicKey, b"garbage")


class JWKSServer(Resource):
    """
    A JWKS endpoint for StubTreq: C{mode} is C{"ok"}, C{"slow"} (never
    answers), C{"huge"}, C{"garbage"} or C{"500"}.
    """

    isLeaf = True

    def __init__(self, keys):
        Resource.__init__(self)
        self.keys = keys
        self.mode = "ok"
        self.requests = 0

    def render_GET(self, request):
        self.requests += 1
        if self.mode == "slow":
            return NOT_DONE_YET
        if self.mode == "huge":
            return b" " * (1024 * 1024 + 1)
        if self.mode == "garbage":
            return b"<html>not json"
        if self.mode == "500":
            request.setResponseCode(500)
            return b"{}"
        return json.dumps({"keys": self.keys}).encode()


class JWKSTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.other = KeyPair("RSA")
        self.server = JWKSServer([RSA.jwk("k1"), {"kty": "oct", "k": "c2VjcmV0", "kid": "s"}])
        self.jwks = JWKSKeys("http://keys.example/jwks.json", StubTreq(self.server), self.clock)
        self.verifier = JWTVerifier([], self.jwks)

    def verify(self, token):
        return result(self.verifier.verify(token))

    def test_knownAndUnknownKid(self):
        token = makeToken(RSA.privatePEM, "alice", "RS256", headers={"kid": "k1"})
        self.assertEqual(self.verify(token)["sub"], "alice")
        self.assertEqual(self.server.requests, 1)
        self.assertEqual(self.verify(token)["sub"], "alice")
        self.assertEqual(self.server.requests, 1, "cached")
        # An unknown kid: fetched again once (still unknown: 401), then
        # 503 without a fetch for 30 s (the node cannot tell yet).
        unknown = makeToken(self.other.privatePEM, "alice", "RS256", headers={"kid": "k2"})
        self.assertEqual(self.verify(unknown).detail, "unknown key id")
        self.assertEqual(self.server.requests, 2)
        for _ in range(5):
            later = self.verify(unknown)
            self.assertIsInstance(later, AuthenticationUnavailable)
            self.assertTrue(later.detail.startswith("unknown key id"), later.detail)
        self.assertEqual(self.server.requests, 2)
        # The key appears (rotation) and 30 s passed: found.
        self.server.keys.append(self.other.jwk("k2"))
        self.clock.advance(30)
        self.assertEqual(self.verify(unknown)["sub"], "alice")
        self.assertEqual(self.server.requests, 3)

    def test_wrongKidIsRefused(self):
        """
        A token signed with key k2's private key but naming k1.
        """
        self.server.keys.append(self.other.jwk("k2"))
        token = makeToken(self.other.privatePEM, "alice", "RS256", headers={"kid": "k1"})
        self.assertEqual(self.verify(token).detail, "bad signature")

    def test_secretsInTheJWKSAreNotKeys(self):
        forged = hs256With(b"secret", {"sub": "mallory"}, {"alg": "HS256", "kid": "s"})
        self.assertIsInstance(self.verify(forged), Unauthorized)

    def test_algBinding(self):
        jwk = RSA.jwk("k1")
        jwk["alg"] = "RS256"
        self.server.keys[:] = [jwk]
        self.assertEqual(self.verify(makeToken(RSA.privatePEM, "a", "RS256", headers={"kid": "k1"}))["sub"], "a")
        error = self.verify(makeToken(RSA.privatePEM, "a", "PS256", headers={"kid": "k1"}))
        self.assertEqual(error.detail, "no key of this server verifies 'PS256' tokens")

    def test_unavailable(self):
        token = makeToken(RSA.privatePEM, "alice", "RS256", headers={"kid": "k1"})
        for mode in ("huge", "garbage", "500"):
            self.server.mode = mode
            self.clock.advance(1)
            error = self.verify(token)
            self.assertIsInstance(error, AuthenticationUnavailable, mode)
            self.assertEqual(error.status, 503)
            # Within a second of a failure, no new fetch: refused at once.
            requests = self.server.requests
            self.assertIsInstance(self.verify(token), AuthenticationUnavailable)
            self.assertEqual(self.server.requests, requests)

    def test_slow(self):
        self.server.mode = "slow"
        token = makeToken(RSA.privatePEM, "alice", "RS256", headers={"kid": "k1"})
        first = self.verifier.verify(token)
        second = self.verifier.verify(token)
        self.assertEqual(self.server.requests, 1, "one fetch for both")
        self.clock.advance(4.9)
        self.assertNoResult(first)
        self.clock.advance(0.2)
        self.assertIsInstance(result(first), AuthenticationUnavailable)
        self.assertIsInstance(result(second), AuthenticationUnavailable)


class ProxyServer(Resource):
    isLeaf = True

    def __init__(self):
        Resource.__init__(self)
        self.code = 200
        self.answer = {"user": "alice", "expires": 2000000000}
        self.slow = False
        self.requests = []
        self.pending = []

    def render_POST(self, request):
        self.requests.append((request.requestHeaders, json.loads(request.content.read())))
        if self.slow:
            self.pending.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        if isinstance(self.answer, bytes):
            return self.answer
        return json.dumps(self.answer).encode()


class FakeHandshake:
    def __init__(self, headers):
        self.headers = headers


class FakeConnection:
    def __init__(self, headers):
        self.handshake = FakeHandshake(headers)

    def getPeer(self):
        return IPv4Address("TCP", "203.0.113.7", 5555)


class ProxyTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.backend = ProxyServer()
        self.proxy = ConnectProxy("http://app.example/lhttp/connect", StubTreq(self.backend),
                                  self.clock, headers=("X-Session",))
        self.connection = FakeConnection({
            "cookie": "session=abc", "x-session": "s1", "authorization": "Bearer no",
        })

    def ask(self, refresh=False):
        return result(self.proxy.authenticate(self.connection, None, refresh))

    def test_interface(self):
        verifyObject(IAuthenticator, self.proxy)

    def test_request(self):
        self.assertEqual(self.ask(refresh=True), Identity("alice", 2000000000, None, "proxy"))
        headers, body = self.backend.requests[0]
        self.assertEqual(body, {"peer": "203.0.113.7", "refresh": True})
        self.assertEqual(headers.getRawHeaders("cookie"), ["session=abc"])
        self.assertEqual(headers.getRawHeaders("x-session"), ["s1"])
        self.assertIsNone(headers.getRawHeaders("authorization"), "not allow-listed")

    def test_caps(self):
        self.backend.answer = {"user": "bob", "caps": [{"channels": ["a.*"], "allow": ["pub"]}]}
        self.assertEqual(self.ask().caps, ((("a.*",), frozenset({"pub"})),))

    def test_refused(self):
        for code in (401, 403):
            self.backend.code = code
            self.assertIsInstance(self.ask(), Unauthorized)

    def test_unavailable(self):
        cases = [(500, {"user": "a"}), (302, {"user": "a"}), (200, b"not json"),
                 (200, {"user": ""}), (200, {"user": 7}), (200, {"user": "a", "expires": "soon"}),
                 (200, b"[" * 70000), (200, {"user": "a", "caps": "all"})]
        for code, answer in cases:
            self.backend.code, self.backend.answer = code, answer
            error = self.ask()
            self.assertIsInstance(error, AuthenticationUnavailable, (code, answer))

    def test_slow(self):
        self.backend.slow = True
        d = self.proxy.authenticate(self.connection, None)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertIsInstance(result(d), AuthenticationUnavailable)


class ConfigTests(SynchronousTestCase):
    def test_oneMethod(self):
        with self.assertRaises(ValueError) as caught:
            Config(authJwtSecret=SECRET, authProxy="http://127.0.0.1:8000/auth")
        self.assertIn("a node uses one", str(caught.exception))
        self.assertRaises(ValueError, Config, authAnonymous=True)
        self.assertRaises(ValueError, Config, authJwtPublicKeys=(RSA.privatePEM,))
        self.assertRaises(ValueError, Config, authProxy="ftp://x/")

    def test_secretNotInRepr(self):
        self.assertNotIn(SECRET, repr(Config(authJwtSecret=SECRET)))

    def test_method(self):
        self.assertIsNone(Config().authMethod)
        self.assertEqual(Config(authJwtSecret=SECRET).authMethod, "jwt")
        self.assertEqual(Config(authProxy="http://127.0.0.1:1/a").authMethod, "proxy")
        # Off by default: no filter.
        self.assertIsNone(memoryServer().authFilter)


class FilterTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(time.time())
        # Deny by default once authentication is on: the rooms are granted
        # to authenticated users.
        self.server = memoryServer(reactor=self.reactor, authJwtSecret=SECRET,
                                   authRefreshGrace=3, handshakeTimeout=10,
                                   channels=("room.*=sub:users,pub:users",))
        self.client = FakeClient(self.server)

    def send(self, client, command, headers=(), body=b""):
        head = "".join(f"{name}:{value}\r\n" for name, value in headers)
        client.clear()
        client.receive(f"LHTTP/1.0 {command}\r\n{head}\r\n".encode() + body)
        return client.messages()

    def connect(self, client, user="alice", **claims):
        return self.send(client, "connect", [("token", makeToken(SECRET, user, **claims))])

    def test_interface(self):
        verifyObject(IHeaderFilter, self.server.authFilter)
        self.assertIsInstance(self.server.dispatcher.filters[0], AuthFilter)

    def test_messagesBeforeConnectAreRefused(self):
        watcher = FakeClient(self.server)
        self.connect(watcher, "bob")
        self.send(watcher, "w", [("subscribe", "room.1")])
        replies = self.send(self.client, "chat", [("subscribe", "room.1"), ("publish", "room.1")],
                            b"hi")
        self.assertEqual([r.toBytes() for r in replies], [
            b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:401\r\nreason:unauthorized\r\n"
            b"command:chat\r\n\r\nsend 'LHTTP/1.0 connect' with a 'token' header first"])
        self.assertEqual(self.client.connection.subscriptions, frozenset())
        self.assertEqual(watcher.messages(), [])
        self.assertIsNone(self.client.closedWith)

    def test_connect(self):
        expires = int(time.time()) + 60
        [reply] = self.connect(self.client, exp=expires)
        self.assertEqual(reply.toBytes(), (
            f"LHTTP/1.0 connect\r\nlhttp-node:reply\r\nstatus:200\r\nuser:alice\r\n"
            f"expires:{expires}\r\n\r\n").encode())
        self.assertEqual(self.client.connection.identity.user, "alice")
        self.assertEqual(self.client.connection.data["user"], "alice")
        self.assertEqual(self.server.users.connectionsOf("alice"), [self.client.connection])
        [again] = self.connect(self.client)
        self.assertEqual((again.command, again.getHeader("status"), again.getHeader("reason")),
                         ("error", "400", "already connected"))
        self.send(self.client, "chat", [("subscribe", "room.1")])
        self.assertEqual(self.client.connection.subscriptions, frozenset({"room.1"}))
        self.client.disconnect()
        self.assertEqual(self.server.users.connectionsOf("alice"), [])

    def test_badConnectCloses(self):
        [reply] = self.connect(self.client, exp=int(time.time()) - 60)
        self.assertEqual(reply.toBytes(), b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:401\r\n"
                         b"reason:unauthorized\r\ncommand:connect\r\n\r\ntoken expired")
        self.assertEqual(self.client.closedWith[0], 4401)
        self.assertEqual(len(self.server.users), 0)

    def test_handshakeTimeout(self):
        self.reactor.advance(9.9)
        self.assertIsNone(self.client.closedWith)
        self.reactor.advance(0.2)
        self.client.flush()
        self.assertEqual(self.client.closedWith[0], 4401)
        # An authenticated one stays.
        other = FakeClient(self.server)
        self.connect(other)
        self.reactor.advance(11)
        other.flush()
        self.assertIsNone(other.closedWith)

    def test_expiryRefreshAndGrace(self):
        now = int(self.reactor.seconds())
        self.connect(self.client, exp=now + 5)
        self.client.clear()
        self.reactor.advance(5)
        [notice] = self.client.messages()
        self.assertEqual(notice.toBytes(), b"LHTTP/1.0 refresh\r\nlhttp-node:reply\r\nstatus:401\r\n"
                         b"reason:token expired\r\ngrace:3\r\n\r\n")
        # Another user's token: 403, the credential and grace are kept.
        [forbidden] = self.send(self.client, "refresh", [("token", makeToken(SECRET, "bob"))])
        self.assertEqual((forbidden.getHeader("status"), forbidden.getHeader("reason"),
                          forbidden.getHeader("command"), forbidden.body),
                         ("403", "forbidden", "refresh", b"token is for another user"))
        self.assertEqual(self.client.connection.identity.user, "alice")
        # A bad one: 401, the connection stays.
        [bad] = self.send(self.client, "refresh", [("token", "x.y.z")])
        self.assertEqual(bad.getHeader("status"), "401")
        self.assertIsNone(self.client.closedWith)
        # A good one: renewed.
        expires = now + 3600
        [renewed] = self.send(self.client, "refresh", [("token", makeToken(SECRET, "alice", exp=expires))])
        self.assertEqual(renewed.toBytes(), (
            f"LHTTP/1.0 refresh\r\nlhttp-node:reply\r\nstatus:200\r\nuser:alice\r\n"
            f"expires:{expires}\r\n\r\n").encode())
        self.reactor.advance(10)
        self.client.flush()
        self.assertIsNone(self.client.closedWith)
        self.assertEqual(self.client.connection.identity.expires, expires)

    def test_noRefreshCloses(self):
        self.connect(self.client, exp=int(self.reactor.seconds()) + 2)
        self.reactor.advance(2)
        self.reactor.advance(2.9)
        self.client.flush()
        self.assertIsNone(self.client.closedWith)
        self.reactor.advance(0.2)
        self.client.flush()
        self.assertEqual(self.client.closedWith[0], 4419)

    def test_userFiltersRunAfter(self):
        seen = []

        class Spy(AuthFilter.__mro__[1]):
            def beforeRequest(self, connection, message):
                seen.append(message.command)

        self.server.addFilter(Spy())
        self.assertIsInstance(self.server.dispatcher.filters[0], AuthFilter)
        self.send(self.client, "chat", [("publish", "room.1")])
        self.assertEqual(seen, [])
        self.connect(self.client)
        self.assertEqual(seen, ["connect"])


class ProxyFilterTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(time.time())
        self.backend = ProxyServer()
        self.backend.slow = True
        self.stub = StubTreq(self.backend)
        proxy = ConnectProxy("http://app.example/auth", self.stub, self.reactor)
        self.server = memoryServer(reactor=self.reactor, authProxy="http://app.example/auth")
        # The filter the config installed, with the stubbed client.
        self.server.authFilter.authenticator = proxy

    def test_messagesWaitForTheProxy(self):
        self.backend.slow = False
        client = FakeClient(self.server, headers={"Cookie": "session=abc"})
        [reply] = client.messages()
        self.assertEqual(reply.toBytes(), b"LHTTP/1.0 connect\r\nlhttp-node:reply\r\nstatus:200\r\n"
                         b"user:alice\r\nexpires:2000000000\r\n\r\n")
        self.assertEqual(self.backend.requests[0][0].getRawHeaders("cookie"), ["session=abc"])

    def test_slowProxy(self):
        client = FakeClient(self.server)
        client.receive(b"LHTTP/1.0 chat\r\nsubscribe:room.1\r\n\r\n")
        self.assertEqual(client.messages(), [])
        self.reactor.advance(5.1)
        client.flush()
        [reply] = client.messages()
        self.assertEqual((reply.getHeader("status"), reply.getHeader("reason"), reply.getHeader("command")),
                         ("503", "authentication unavailable", "connect"))
        self.assertEqual(client.closedWith[0], 4503)
        self.assertEqual(client.connection.subscriptions, frozenset())

    def test_refused(self):
        client = FakeClient(self.server)
        [request] = self.backend.pending
        request.setResponseCode(401)
        request.finish()
        self.stub.flush()
        [reply] = client.messages()
        self.assertEqual(reply.getHeader("status"), "401")
        self.assertEqual(client.closedWith[0], 4401)





class AnonymousTests(SynchronousTestCase):
    def test_anonymousConnectionsAreLetIn(self):
        reactor = MemoryReactorClock()
        # Anonymous connections get what 'anyone' is granted.
        server = memoryServer(reactor=reactor, authJwtSecret=SECRET, authAnonymous=True,
                              channels=("room.*=sub:anyone",))
        client = FakeClient(server)
        client.receive(b"LHTTP/1.0 chat\r\nsubscribe:room.1\r\n\r\n")
        self.assertEqual(client.messages(), [])
        self.assertEqual(client.connection.subscriptions, frozenset({"room.1"}))
        self.assertFalse(client.connection.identity.authenticated)
        reactor.advance(60)
        client.flush()
        self.assertIsNone(client.closedWith)
        client.receive(f"LHTTP/1.0 connect\r\ntoken:{makeToken(SECRET, 'alice')}\r\n\r\n".encode())
        self.assertEqual(client.connection.identity.user, "alice")
        # A bad token still ends the connection.
        other = FakeClient(server)
        other.receive(b"LHTTP/1.0 connect\r\ntoken:a.b.c\r\n\r\n")
        self.assertEqual(other.closedWith[0], 4401)


class ProxyExpiryTests(SynchronousTestCase):
    def test_theProxyIsAskedAgainAtExpiry(self):
        reactor = MemoryReactorClock()
        reactor.advance(time.time())
        backend = ProxyServer()
        now = int(reactor.seconds())
        backend.answer = {"user": "alice", "expires": now + 5}
        server = memoryServer(reactor=reactor, authProxy="http://app.example/auth")
        server.authFilter.authenticator = ConnectProxy("http://app.example/auth", StubTreq(backend),
                                                       reactor)
        client = FakeClient(server, headers={"Cookie": "session=abc"})
        self.assertEqual(client.connection.identity.expires, now + 5)
        client.clear()
        backend.answer = {"user": "alice", "expires": now + 60}
        reactor.advance(5)
        client.flush()
        self.assertEqual(backend.requests[-1][1]["refresh"], True)
        [reply] = client.messages()
        self.assertEqual(reply.toBytes(), (
            f"LHTTP/1.0 refresh\r\nlhttp-node:reply\r\nstatus:200\r\nuser:alice\r\n"
            f"expires:{now + 60}\r\n\r\n").encode())
        # The session ended: closed as expired.
        client.clear()
        backend.code = 401
        reactor.advance(55)
        client.flush()
        [refused] = client.messages()
        self.assertEqual((refused.getHeader("status"), refused.getHeader("command")), ("401", "refresh"))
        self.assertEqual(client.closedWith[0], 4419)
        self.assertEqual(server.users.connectionsOf("alice"), [])
