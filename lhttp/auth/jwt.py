"""
Connection JWTs (docs/authentication.rst), verified with PyJWT: the keys a
node trusts, each bound to its algorithm family, and L{JWTVerifier}, which
turns a token into its claims or refuses it with a one-line reason.

Keys come from an HMAC secret (HS256/384/512), PEM public keys (RSA:
RS*/PS*; EC: the ES* of its curve; Ed25519/Ed448: EdDSA) or a JWKS URL
(L{JWKSKeys}). A key is only ever tried with an algorithm of its own
family, so C{alg:none} and an HS256 token "signed" with an RSA public key
(key confusion) find no key at all.

Nothing here logs or repeats a token.
"""

import json
import math

import jwt
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.auth.identity import Identity
from lhttp.auth.keys import Key, jwkKey, loadPublicKey, secretKey
from lhttp.errors import AuthenticationUnavailable, LHTTPError, Unauthorized
from lhttp.interfaces import IAuthenticator
from lhttp.patterns import checkPattern
from lhttp.upstream.agent import BodyTooLarge, cancelAfter, collectAtMost, guardedClient
from lhttp.upstream.urls import parseURL

# What a capability may allow (the C{caps} claim; lhttp.auth.permissions).
CAPABILITY_ACTIONS = frozenset({"sub", "pub", "history", "presence"})

# JWKS fetches (docs/authentication.rst).
JWKS_TIMEOUT = 5.0
JWKS_MAX_SIZE = 1024 * 1024
JWKS_REFETCH_INTERVAL = 30.0
JWKS_RETRY_INTERVAL = 1.0
JWKS_MAX_AGE = 600.0

UNKNOWN_KID_LATER = "unknown key id; the server fetches its keys again shortly, try again"


def parseCaps(value):
    """
    The C{caps} claim (or the connect proxy's C{caps}):
    C{[{"channels": ["room.*"], "allow": ["sub", "pub"]}, ...]}.

    @return: L{None} if absent, else a L{tuple} of C{(patterns, actions)}:
        a L{tuple} of channel patterns and a L{frozenset} of actions.
    @raise ValueError: with what is wrong, for any other shape.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("'caps' is not a list")
    caps = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"channels", "allow"}:
            raise ValueError("each of 'caps' is {\"channels\": [...], \"allow\": [...]}")
        channels, allow = item["channels"], item["allow"]
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ValueError("'caps' channels are a list of patterns")
        if not isinstance(allow, list) or not all(
            isinstance(a, str) and a in CAPABILITY_ACTIONS for a in allow
        ):
            raise ValueError("'caps' allow is a list of sub, pub, history, presence")
        patterns = tuple(checkPattern(c, "caps") for c in channels)
        caps.append((patterns, frozenset(allow)))
    return tuple(caps)


def _header(token):
    """
    The token's JOSE header, unverified, with its C{alg} checked.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        raise Unauthorized("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except Exception:
        raise Unauthorized("malformed token") from None
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise Unauthorized("malformed token")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthorized("malformed token")
    return header


def _reason(error):
    """
    One line saying why PyJWT refused a token (never the token).
    """
    if isinstance(error, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(error, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(error, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"no '{error.claim}' claim"
    if isinstance(error, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(error, jwt.InvalidSubjectError):
        return "the 'sub' claim is not a string"
    if isinstance(error, jwt.InvalidIssuedAtError):
        return "the 'iat' claim is not a number"
    return "invalid token"


@implementer(IAuthenticator)
class JWTVerifier:
    """
    Verifies JWTs with the node's keys.

    C{verify} is what other parts reuse (subscription tokens): a
    L{Deferred} that has fired already unless JWKS keys must be fetched.

    @ivar fromHandshake: L{False}: a client sends its token in a
        C{connect} message.
    """

    fromHandshake = False
    method = "jwt"

    def __init__(self, keys=(), jwks=None, leeway=5.0, audience=None, issuer=None):
        """
        @param keys: L{Key}s (a secret's, PEM public keys').
        @param jwks: a L{JWKSKeys}, or L{None}. With both, a token that
            names a key id (C{kid}) is checked with the JWKS keys, one
            that does not with C{keys}.
        @param leeway: seconds of clock difference allowed on C{exp},
            C{nbf}, C{iat} (checked against the system clock).
        @param audience: the C{aud} a token must name, or L{None}.
        @param issuer: the C{iss} a token must have, or L{None}.
        """
        self.keys = tuple(keys)
        self.jwks = jwks
        self.leeway = leeway
        self.audience = audience
        self.issuer = issuer

    def verify(self, token, requireSub=True):
        """
        Check a token's signature and claims.

        @param requireSub: its C{sub} must be a non-empty string (the
            default: a connection's token); else C{sub} may be absent (a
            subscription token of an anonymous connection).
        @return: a L{Deferred} firing with the claims (a L{dict}), or
            failing with L{Unauthorized} (a bad token, with the reason as
            its detail) or L{AuthenticationUnavailable} (JWKS keys cannot
            be fetched now). It has fired already unless keys must be
            fetched.
        """
        try:
            header = _header(token)
        except Unauthorized as error:
            return fail(error)
        alg = header["alg"]
        kid = header.get("kid")
        if self.jwks is None or (kid is None and self.keys):
            try:
                return succeed(self._decode(token, alg, self.keys, requireSub))
            except Unauthorized as error:
                return fail(error)
        return self.jwks.keysFor(kid).addCallback(
            lambda keys: self._decode(token, alg, keys, requireSub)
        )

    def _decode(self, token, alg, keys, requireSub):
        candidates = [key for key in keys if alg in key.algorithms]
        if not candidates:
            if alg.lower() == "none":
                raise Unauthorized("unsigned tokens (alg 'none') are not accepted")
            raise Unauthorized(f"no key of this server verifies {alg[:16]!r} tokens")
        options = {
            "require": ["sub"] if requireSub else [],
            "verify_aud": self.audience is not None,
            "verify_iss": self.issuer is not None,
        }
        error = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token, key.key, algorithms=[alg], options=options,
                    audience=self.audience, issuer=self.issuer,
                    leeway=self.leeway,
                )
            except jwt.InvalidSignatureError as e:
                # Another key of the family may be the one.
                error = e
                continue
            except jwt.InvalidTokenError as e:
                raise Unauthorized(_reason(e)) from None
            except Exception:
                raise Unauthorized("invalid token") from None
            sub = claims.get("sub")
            if requireSub and (not isinstance(sub, str) or not sub):
                raise Unauthorized("the 'sub' claim is empty")
            return claims
        raise Unauthorized(_reason(error))

    def authenticate(self, connection, token, refresh=False):
        """
        A connection's token as its L{Identity}.

        @return: a L{Deferred} firing with the L{Identity}, or failing as
            L{verify} does (a malformed C{caps} claim, or a C{channel}
            claim, which only subscription tokens have: L{Unauthorized}).
        """
        return self.verify(token).addCallback(_connectionClaims).addCallback(identityOf)


SUBSCRIPTION_TOKEN = ("this is a subscription token (it has a 'channel' claim), "
                      "not a connection token")


def _connectionClaims(claims):
    """
    Refuse a subscription token shown as a connection's: it carries no
    C{caps}, so as a connection token it would get the user's broader
    rules instead of its one channel.
    """
    if "channel" in claims:
        raise Unauthorized(SUBSCRIPTION_TOKEN)
    return claims


def identityOf(claims, method="jwt"):
    """
    The L{Identity} a verified token's claims give.

    @raise Unauthorized: a malformed C{caps} or C{exp}.
    """
    try:
        caps = parseCaps(claims.get("caps"))
    except ValueError as e:
        raise Unauthorized(f"malformed caps claim: {e}") from None
    expires = claims.get("exp")
    if expires is not None:
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or (
            not math.isfinite(expires)
        ):
            raise Unauthorized("the 'exp' claim is not a number")
        expires = int(expires)
    return Identity(claims["sub"], expires, caps, method)


class JWKSKeys:
    """
    The keys of a JWKS URL: fetched on first use, cached, fetched again
    when a token names a key id the cache lacks, at most once every
    C{refetchInterval} seconds (so clients cannot make the node hammer
    the endpoint), and once the cache is older than C{maxAge} (so a key
    removed from the endpoint stops verifying tokens; if that fetch
    fails the old keys are kept, and it is tried again after
    C{refetchInterval}). One fetch at a time; connections waiting for it
    wait only for it.
    """

    log = Logger()

    def __init__(self, url, client, clock, timeout=JWKS_TIMEOUT, maxSize=JWKS_MAX_SIZE,
                 refetchInterval=JWKS_REFETCH_INTERVAL, retryInterval=JWKS_RETRY_INTERVAL,
                 maxAge=JWKS_MAX_AGE):
        """
        @param client: a L{treq.client.HTTPClient} (or L{treq.testing.StubTreq}).
        @param clock: an L{IReactorTime}.
        @param retryInterval: seconds after a failed fetch before a node
            that has no keys yet tries again (meanwhile: 503).
        @param maxAge: seconds the fetched keys are used before they are
            fetched again.
        """
        self.url = url
        self.timeout = timeout
        self.maxSize = maxSize
        self.refetchInterval = refetchInterval
        self.retryInterval = retryInterval
        self.maxAge = maxAge
        self.keys = None
        self._fetchedAt = None
        self._client = client
        self._clock = clock
        self._waiting = None
        self._lastRefetch = None
        self._lastFailure = None

    def keysFor(self, kid):
        """
        @param kid: the token's key id, or L{None}.
        @return: a L{Deferred} firing with the candidate L{Key}s, or failing
            with L{Unauthorized} (a key id unknown after a fetch) or
            L{AuthenticationUnavailable} (the keys cannot be fetched, or
            an unknown key id within C{refetchInterval} of the last
            fetch for one).
        """
        now = self._clock.seconds()
        if self.keys is not None and now - self._fetchedAt >= self.maxAge and (
            self._lastFailure is None or now - self._lastFailure >= self.refetchInterval
        ):
            # Too old: fetched again (one fetch for every waiting token);
            # if that fails the old keys still serve.
            return self._fetch().addCallbacks(
                lambda ignored: self._selectOrRefuse(kid),
                lambda failure: self._selectOrRefuse(kid),
            )
        if self.keys is not None:
            found = self._select(kid)
            if found:
                return succeed(found)
            if self._lastRefetch is not None and now - self._lastRefetch < self.refetchInterval:
                # The node cannot tell yet (the key may be new): the
                # client retries with backoff rather than giving up.
                return fail(AuthenticationUnavailable(UNKNOWN_KID_LATER))
            self._lastRefetch = now
        elif self._waiting is None and self._lastFailure is not None and (
            now - self._lastFailure < self.retryInterval
        ):
            return fail(AuthenticationUnavailable("the JWKS endpoint failed; try again"))
        return self._fetch().addCallback(lambda ignored: self._selectOrRefuse(kid))

    def _select(self, kid):
        if kid is None:
            return list(self.keys)
        return [key for key in self.keys if key.kid == kid]

    def _selectOrRefuse(self, kid):
        found = self._select(kid)
        if not found:
            raise Unauthorized("unknown key id")
        return found

    def _fetch(self):
        waiter = Deferred()
        if self._waiting is not None:
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]
        d = self._get()
        expired = cancelAfter(d, self._clock, self.timeout)

        def done(result):
            waiting, self._waiting = self._waiting, None
            if isinstance(result, Exception):
                self._lastFailure = self._clock.seconds()
                self.log.warn("Cannot fetch the JWKS {url}: {why}", url=self.url, why=str(result))
                for w in waiting:
                    w.errback(AuthenticationUnavailable(
                        "the server cannot fetch its keys now; try again"))
            else:
                self.keys = result
                self._fetchedAt = self._clock.seconds()
                self._lastFailure = None
                for w in waiting:
                    w.callback(None)

        def failed(failure):
            if expired:
                return Exception(f"no answer within {self.timeout:g} s")
            if failure.check(BodyTooLarge):
                return Exception(f"the document is larger than {self.maxSize} bytes")
            if failure.check(LHTTPError, ValueError):
                return Exception(str(failure.value))
            return Exception(failure.getErrorMessage()[:200])

        d.addErrback(failed).addCallback(done)
        return waiter

    def _get(self):
        return ensureDeferred(self._download())

    async def _download(self):
        response = await self._client.get(
            self.url, headers={b"Accept": [b"application/json"]}, allow_redirects=False,
            unbuffered=True,
        )
        document = await collectAtMost(response, self.maxSize)
        if response.code != 200:
            raise ValueError(f"it answered {response.code}")
        return parseJWKS(document)


def parseJWKS(data):
    """
    The usable L{Key}s of a JWKS document (C{{"keys": [...]}}).

    @raise ValueError: not JSON, not a JWKS, or no key the node can use.
    """
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document ({\"keys\": [...]})")
    keys = [key for key in map(jwkKey, document["keys"]) if key is not None]
    if not keys:
        raise ValueError("no RSA, EC or OKP signing key in it")
    return keys


def makeVerifier(config, reactor, client=None):
    """
    The L{JWTVerifier} a node's options describe.

    @type config: L{lhttp.config.Config}
    @param client: the treq client for the JWKS URL (default: one on
        C{reactor}, connecting only to that URL's host).
    """
    keys = []
    if config.authJwtSecret is not None:
        keys.append(secretKey(config.authJwtSecret))
    for pem in config.authJwtPublicKeys:
        keys.append(loadPublicKey(pem))
    jwks = None
    if config.authJwksURL is not None:
        if client is None:
            client = guardedClient(reactor, config.authJwksURL)
        jwks = JWKSKeys(parseURL(config.authJwksURL).url, client, reactor)
    return JWTVerifier(keys, jwks, config.authLeeway, config.authAudience, config.authIssuer)


__all__ = ["JWKSKeys", "JWTVerifier", "Key", "identityOf", "loadPublicKey", "makeVerifier",
           "parseCaps", "parseJWKS", "secretKey"]
