"""
Who may do what (docs/security.rst): connection authentication (a JWT in
a first C{connect} message, or a connect proxy to the application's
backend), token expiry and refresh, and channel permissions per namespace.

Everything here is off unless an C{--auth-*} option or a C{--channel} rule
is given: a node without them behaves as the original Go server.

L{identity}: who a connection is, and the node's registry of users.
L{keys}: the keys a node trusts for JWTs, bound to their algorithms.
L{jwt}: the JWT verifier (and JWKS fetching). L{proxy}: the connect
proxy. L{filter}: the first filter of a node with authentication on
(C{connect}, C{refresh}, expiry; docs/authentication.rst).
"""

from lhttp.auth.identity import ANONYMOUS, Identity, Users

__all__ = ["ANONYMOUS", "Identity", "Users"]
