"""
Which names a request may call the node by (the C{Host} header), against
DNS rebinding.

A page on C{http://attacker.example:8081/} whose name the attacker then
points at 127.0.0.1 (or any address on the victim's network) talks to the
node from the victim's browser, and to the browser that is the page's own
origin: the Origin check (L{lhttp.web.origins}) judges same-origin from the
C{Host} header, which says C{attacker.example:8081}. Only the node can tell
that this is not one of its names.

By default a node answers to the IP address the connection arrived at
(an IP literal cannot be rebound), to C{localhost} and C{*.localhost}
(browsers resolve those to loopback themselves) and to C{127.0.0.1} and
C{[::1]}. C{--allow-host} adds names, as patterns with C{*} wildcards
(C{*.example.com}), or C{*} for any. A request without a C{Host} header
(HTTP/1.0; no browser sends one) is not checked. Ports are not compared:
a name is the node's on every port it listens on.
"""

import ipaddress
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

ANY = "*"

LOCAL_NAMES = ("localhost", "*.localhost", "127.0.0.1", "::1")


def _normalIP(text):
    """
    @return: the canonical text of an IP address (an IPv4-mapped IPv6
        address as IPv4), or L{None} if C{text} is not one.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def hostName(host):
    """
    The name part of a C{Host} header: lower-cased, without the port, the
    brackets of an IPv6 literal or a trailing dot.

    @param host: the header's value, L{bytes} or L{str}.
    @return: the name, or L{None} if the header cannot be a host.
    """
    if isinstance(host, bytes):
        host = host.decode("latin-1")
    host = host.strip()
    if not host or any(c in host for c in "/?#@\\ \t"):
        return None
    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return None
    if not name:
        return None
    if name.endswith("."):
        name = name[:-1]
    return name


def checkHostPattern(pattern):
    """
    Check an C{--allow-host} pattern: a name (C{*} wildcards allowed), an
    IP literal, or C{*}; no scheme, port or path.

    @return: the pattern as it is matched (lower case, no brackets).
    @raise ValueError: with the reason.
    """
    text = pattern.strip().lower()
    if text.startswith("[") and text.endswith("]") and _normalIP(text[1:-1]):
        text = text[1:-1]
    if _normalIP(text) is not None:
        return _normalIP(text)
    if not text or any(c in text for c in "/?#@\\:[] \t"):
        raise ValueError(
            f"--allow-host wants a host name such as chat.example.com or *.example.com, "
            f"without scheme or port, not {pattern!r}"
        )
    return text.rstrip(".")


class HostPolicy:
    """
    The names a node answers to.

    @ivar patterns: the C{--allow-host} patterns, checked.
    """

    def __init__(self, patterns=()):
        """
        @param patterns: C{--allow-host} patterns, in addition to the
            defaults (L{LOCAL_NAMES} and the address a connection arrived
            at).
        @raise ValueError: a pattern is not a host name pattern.
        """
        self.patterns = tuple(checkHostPattern(p) for p in patterns)
        self._any = ANY in self.patterns
        self._patterns = LOCAL_NAMES + self.patterns

    def allows(self, host, localAddress=None):
        """
        @param host: the request's C{Host} header (L{bytes} or L{str}), or
            L{None} if it has none.
        @param localAddress: the IP address (text) the connection arrived
            at, or L{None} (a UNIX socket).
        @return: whether the request may call the node by that name.
        """
        if host is None or self._any:
            return True
        name = hostName(host)
        if name is None:
            return False
        ip = _normalIP(name)
        if ip is not None:
            if localAddress is not None and ip == _normalIP(localAddress):
                return True
            name = ip
        return any(fnmatchcase(name, pattern) for pattern in self._patterns)

    def allowsRequest(self, request):
        """
        L{allows} for a L{twisted.web.iweb.IRequest}: its C{Host} header and
        the local address of its connection.
        """
        hosts = request.requestHeaders.getRawHeaders(b"host") or [None]
        if len(hosts) > 1:
            # Not a browser, and proxies may each believe a different one.
            return False
        local = getattr(request.getHost(), "host", None)
        return self.allows(hosts[0], local if isinstance(local, str) else None)
