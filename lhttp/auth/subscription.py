"""
A stand-in verifier of subscription tokens: HMAC-signed JWTs (HS256,
HS384, HS512) with the secret of C{LHTTP_AUTH_JWT_SECRET}.

It lets channel permissions' C{token} work before the node's JWT
verifier (C{lhttp.auth.jwt}, every key type, JWKS) is wired to
L{lhttp.auth.guard.ChannelGuard}: the guard takes any
C{verifySubscriptionToken(token) -> Deferred[claims]}, so replacing this
is one line in L{lhttp.service}.
"""

import jwt
from twisted.internet.defer import fail, succeed

from lhttp.errors import Unauthorized

SECRET_ENV = "LHTTP_AUTH_JWT_SECRET"


class HMACSubscriptionTokens:
    """
    Verifies subscription tokens signed with one HMAC secret.
    """

    algorithms = ("HS256", "HS384", "HS512")

    def __init__(self, secret, leeway=5.0):
        """
        @param secret: the HMAC secret (L{str} or L{bytes}).
        @param leeway: seconds of clock skew allowed on C{exp}, C{nbf}, C{iat}.
        """
        self._secret = secret
        self._leeway = leeway

    def verify(self, token):
        """
        @return: a L{Deferred} firing with the token's claims, or failing
            with L{Unauthorized} saying what is wrong (never the token).
        """
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=list(self.algorithms), leeway=self._leeway,
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            return fail(Unauthorized("token expired"))
        except jwt.InvalidTokenError as error:
            return fail(Unauthorized(f"invalid token ({type(error).__name__})"))
        return succeed(claims)


def fromEnvironment(environ):
    """
    @param environ: the process environment (a mapping).
    @return: C{verify} of an L{HMACSubscriptionTokens} for
        C{LHTTP_AUTH_JWT_SECRET}, or L{None} when it is not set.
    """
    secret = environ.get(SECRET_ENV)
    if not secret:
        return None
    return HMACSubscriptionTokens(secret).verify
