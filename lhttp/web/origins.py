"""
Which web pages may open a WebSocket to the node (the C{Origin} header).

Browsers send the page's origin; other clients usually send none. By
default a node lets in clients without an Origin and pages from its own
origin (the Origin's host and port are the request's C{Host}), and refuses
the rest with 403 at the handshake: another site cannot use a visitor's
browser to talk to the node. C{--allow-origin} names more, as patterns
matched against the whole origin, C{scheme://host[:port]}
(C{https://*.example.com}, or C{*} for any).
"""

from fnmatch import fnmatchcase
from urllib.parse import urlsplit

ANY = "*"


def _hostPort(origin):
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        return None
    return parts.hostname.lower(), port, default


def _sameOrigin(origin, host):
    """
    Whether the Origin names the host (and port) the client connected to.
    """
    found = _hostPort(origin)
    if found is None or not host:
        return False
    hostname, port, default = found
    requested = urlsplit("//" + host)
    try:
        requestedPort = requested.port or default
    except ValueError:
        return False
    return (requested.hostname or "").lower() == hostname and requestedPort == port


def originAllowed(request, allowed):
    """
    @param request: the handshake (L{autobahn.websocket.types.ConnectionRequest}).
    @param allowed: patterns from C{--allow-origin}; empty for the default
        policy (no Origin, or the node's own origin).
    """
    origin = request.origin
    if not origin:
        return True
    if ANY in allowed:
        return True
    origin = origin.strip().lower()
    # request.host has lost its port; the Host header has it.
    host = (request.headers or {}).get("host", request.host)
    if origin != "null" and _sameOrigin(origin, host):
        return True
    return any(fnmatchcase(origin, pattern.lower().rstrip("/")) for pattern in allowed)


class OriginPolicy:
    """
    The browser pages a node lets open a WebSocket.

    @ivar patterns: the C{--allow-origin} patterns.
    """

    def __init__(self, patterns=()):
        self.patterns = tuple(patterns)

    def allows(self, request):
        """
        @param request: the handshake (L{autobahn.websocket.types.ConnectionRequest}).
        """
        return originAllowed(request, self.patterns)
