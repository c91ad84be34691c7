"""
The connect proxy (docs/authentication.rst): a connection is authenticated
by the application's backend, from the cookies (and allow-listed headers)
of its WebSocket handshake, which a browser sends by itself.

What the backend receives::

    POST /lhttp/connect HTTP/1.1
    Host: 127.0.0.1:8000                  the --auth-proxy URL's, never the client's
    Content-Type: application/json
    Cookie: session=...                   the handshake's, when it had one
    (each --auth-proxy-header the handshake had)

    {"peer": "203.0.113.7", "refresh": false}

and answers 200 C{{"user": "alice", "expires": 1767225600, "caps": [...]}}
(C{expires} and C{caps} optional), or 401/403 to refuse. Anything else, a
timeout, a refused connection, a body over 64 KiB or not JSON: the node
cannot tell (503, close 4503).
"""

import json
import math

from twisted.internet.defer import ensureDeferred
from twisted.web.http_headers import Headers
from zope.interface import implementer

from lhttp.auth.identity import Identity
from lhttp.auth.jwt import parseCaps
from lhttp.config import PROXY_HEADERS_REFUSED
from lhttp.errors import AuthenticationUnavailable, LHTTPError, Unauthorized
from lhttp.interfaces import IAuthenticator
from lhttp.upstream.agent import BodyTooLarge, cancelAfter, collectAtMost, guardedClient
from lhttp.upstream.urls import parseURL

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER = 64 * 1024


def handshakeHeaders(handshake, names):
    """
    The headers of a WebSocket handshake to send to the connect proxy:
    C{Cookie} and the allow-listed C{names}, when the handshake had them.

    @param handshake: Autobahn's C{ConnectionRequest} (its C{headers}: a
        L{dict} of lower-cased names), or L{None}.
    @rtype: L{Headers}
    """
    headers = Headers({b"Content-Type": [b"application/json"]})
    if handshake is None:
        return headers
    received = handshake.headers
    for name in ("Cookie", *names):
        if name.lower() in PROXY_HEADERS_REFUSED:
            # Refused by the config already; never the client's framing.
            continue
        value = received.get(name.lower())
        if value is not None:
            headers.setRawHeaders(name.encode("ascii"), [value.encode("latin-1", "replace")])
    return headers


def identityOf(answer):
    """
    The L{Identity} in the proxy's 200 answer.

    @raise ValueError: the answer is not what the design says.
    """
    document = json.loads(answer)
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    user = document.get("user")
    if not isinstance(user, str) or not user:
        raise ValueError("'user' is not a non-empty string")
    expires = document.get("expires")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, (int, float))
        or not math.isfinite(expires)
    ):
        raise ValueError("'expires' is not Unix seconds")
    caps = parseCaps(document.get("caps"))
    return Identity(user, None if expires is None else int(expires), caps, "proxy")


@implementer(IAuthenticator)
class ConnectProxy:
    """
    Authenticates connections by asking the application's backend.
    """

    method = "proxy"
    fromHandshake = True

    def __init__(self, url, client, clock, headers=(), timeout=DEFAULT_TIMEOUT,
                 maxAnswer=MAX_ANSWER):
        """
        @param url: the backend's URL (C{--auth-proxy}).
        @param client: a L{treq.client.HTTPClient} (L{guardedClient}, or
            L{treq.testing.StubTreq}).
        @param clock: an L{IReactorTime}, for the timeout.
        @param headers: handshake header names sent besides C{Cookie}.
        @param timeout: seconds for the whole answer.
        @param maxAnswer: bytes of the answer's body.
        """
        self.url = url
        self.headers = tuple(headers)
        self.timeout = timeout
        self.maxAnswer = maxAnswer
        self._client = client
        self._clock = clock

    def authenticate(self, connection, token=None, refresh=False):
        d = ensureDeferred(self._ask(connection, refresh))
        expired = cancelAfter(d, self._clock, self.timeout)
        d.addErrback(self._failed, expired)
        return d

    async def _ask(self, connection, refresh):
        peer = connection.getPeer()
        body = json.dumps({"peer": getattr(peer, "host", None), "refresh": bool(refresh)})
        response = await self._client.post(
            self.url, data=body.encode("utf-8"),
            headers=handshakeHeaders(connection.handshake, self.headers),
            allow_redirects=False, unbuffered=True,
        )
        answer = await collectAtMost(response, self.maxAnswer)
        if response.code in (401, 403):
            raise Unauthorized("the application refused this connection")
        if response.code != 200:
            raise AuthenticationUnavailable(f"the connect proxy answered {response.code}")
        try:
            return identityOf(answer)
        except (ValueError, UnicodeDecodeError) as e:
            raise AuthenticationUnavailable(
                f"the connect proxy's answer is not usable: {str(e)[:100]}") from None

    def _failed(self, failure, expired):
        if expired:
            raise AuthenticationUnavailable(
                f"the connect proxy did not answer within {self.timeout:g} s")
        if failure.check(LHTTPError):
            return failure
        if failure.check(BodyTooLarge):
            raise AuthenticationUnavailable(
                f"the connect proxy's answer is larger than {self.maxAnswer} bytes")
        raise AuthenticationUnavailable("cannot reach the connect proxy")


def makeProxy(config, reactor, client=None):
    """
    The L{ConnectProxy} a node's options describe.

    @type config: L{lhttp.config.Config}
    """
    if client is None:
        client = guardedClient(reactor, config.authProxy)
    return ConnectProxy(parseURL(config.authProxy).url, client, reactor, config.authProxyHeaders,
                        config.authProxyTimeout)
