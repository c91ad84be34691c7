"""
Authenticate connections with an HMAC-signed token: a header filter, the
way to add auth to lhttp.

Your backend, which knows the secret, gives each user a token::

    from lhttp_examples.auth import issueToken
    token = issueToken(secret, "ann", ttl=3600)

The client presents it in the WebSocket URL (C{ws://host:8081/?token=...})
or in an C{auth} header of a message (its first, typically). Until a
connection has shown a valid token, every message it sends gets a 401 error
reply and nothing else happens (no processor, no subscribe or publish);
after three bad tokens it is closed with 1008. Once authenticated, the user
name is in C{connection.data["user"]} for processors.

Run it::

    LHTTP_AUTH_SECRET=change-me PYTHONPATH=examples \\
        twistd -n lhttp --port 8081 --filter lhttp_examples.auth.TokenAuthFilter
"""

import hashlib
import hmac
import os
import time

from lhttp import HeaderFilter
from lhttp.errors import Unauthorized

SECRET_VARIABLE = "LHTTP_AUTH_SECRET"
MAX_FAILURES = 3


def _signature(secret, payload):
    return hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()


def issueToken(secret, user, ttl=3600, now=None):
    """
    @return: C{user.expires.signature}, valid for C{ttl} seconds.
    """
    expires = int((time.time() if now is None else now) + ttl)
    payload = f"{user}.{expires}"
    return f"{payload}.{_signature(secret, payload)}"


def verifyToken(secret, token, now=None):
    """
    @return: the user name if C{token} is genuine and not expired, else
        L{None}.
    """
    try:
        user, expires, signature = token.rsplit(".", 2)
        expiry = int(expires)
    except (AttributeError, ValueError):
        return None
    if not hmac.compare_digest(signature, _signature(secret, f"{user}.{expires}")):
        return None
    if expiry < (time.time() if now is None else now):
        return None
    return user


class TokenAuthFilter(HeaderFilter):
    """
    @param secret: the HMAC key; default: the C{LHTTP_AUTH_SECRET}
        environment variable.
    """

    def __init__(self, secret=None, clock=time.time):
        self.secret = secret or os.environ.get(SECRET_VARIABLE)
        if not self.secret:
            raise ValueError(f"TokenAuthFilter needs a secret: set {SECRET_VARIABLE}")
        self.clock = clock

    def onOpen(self, connection):
        params = getattr(connection.handshake, "params", None) or {}
        for token in params.get("token", [])[:1]:
            self._accept(connection, token)

    def beforeRequest(self, connection, message):
        if "user" in connection.data:
            return
        token = message.getHeader("auth")
        if token is not None and self._accept(connection, token):
            return
        failures = connection.data["authFailures"] = connection.data.get("authFailures", 0) + 1
        if failures >= MAX_FAILURES:
            connection.close(1008, "authentication failed")
        raise Unauthorized(
            "authenticate first: a token in the URL (?token=...) or an 'auth' header"
        )

    def _accept(self, connection, token):
        user = verifyToken(self.secret, token, self.clock())
        if user is not None:
            connection.data["user"] = user
        return user is not None
