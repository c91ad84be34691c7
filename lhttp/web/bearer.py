"""
Bearer tokens on the HTTP side: C{POST /publish} (and C{POST /api/...},
behind the same publish token) and C{GET /metrics} each take
C{Authorization: Bearer <token>} once the operator sets a token for them.
"""

import hmac

from lhttp.errors import Forbidden, Unauthorized


def checkBearer(request, token, name, where=None):
    """
    Refuse a request that does not carry C{token}.

    The comparison takes the same time however much of the token is right
    (L{hmac.compare_digest}), so it cannot be guessed byte by byte.

    @param request: the L{twisted.web.iweb.IRequest}.
    @param token: the token (L{str}), or L{None} or C{""}: no check.
    @param name: what the token protects, C{"publish"} or C{"metrics"}:
        names the realm and the errors.
    @param where: the path the errors name (default: C{/<name>}).
    @raise lhttp.errors.Unauthorized: no C{Authorization} header (and
        C{WWW-Authenticate} is set on the response).
    @raise lhttp.errors.Forbidden: another scheme or a wrong token.
    """
    if not token:
        return
    given = request.getHeader(b"authorization")
    if given is None:
        request.setHeader(b"www-authenticate", f'Bearer realm="lhttp {name}"'.encode("ascii"))
        raise Unauthorized(
            f"this server needs 'Authorization: Bearer <token>' on {where or '/' + name}")
    scheme, _, credential = given.partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(
        credential.strip(), token.encode("utf-8")
    ):
        raise Forbidden(f"wrong {name} token")
