"""
Who may do what (docs/security.rst): connection authentication (a JWT in
a first C{connect} message, or a connect proxy to the application's
backend), token expiry and refresh, and channel permissions per namespace.

Everything here is off unless an C{--auth-*} option or a C{--channel} rule
is given: a node without them behaves as the original Go server.
"""

from lhttp.auth.identity import ANONYMOUS, Identity, Users

__all__ = ["ANONYMOUS", "Identity", "Users"]
