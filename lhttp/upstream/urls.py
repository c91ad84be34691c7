"""
Where an C{upstream} header may send a request: strict URL parsing and the
operator's allow-list (SPEC section 5)::

    upstream: POST http://127.0.0.1:8080/record     a URL under an allowed prefix
    upstream: POST record                           a named target
    upstream: GET http://127.0.0.1:8080/q?user=a    GET and HEAD send no body

Targets are parsed strictly (plain C{http}/C{https}, no userinfo, no
fragment, no dot or encoded-slash path segments) and must match an allowed
prefix on scheme, host as written, port and whole path segments. lhttp
never resolves a name a client wrote: it connects only to a host an
operator wrote (L{lhttp.upstream.agent.GuardedAgent} makes sure).
"""

import ipaddress
import re
from urllib.parse import unquote_to_bytes

import attr

from lhttp.codec import splitList
from lhttp.errors import BadUpstream, Forbidden

# What an upstream request may take by default (C{--upstream-timeout},
# C{--upstream-max-response}, C{--upstream-concurrency}).
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RESPONSE = 64 * 1024
DEFAULT_CONCURRENCY = 8

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# An HTTP header name (RFC 9110 token).
HEADER_NAME = _TOKEN

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
BODYLESS = frozenset({"GET", "HEAD"})
DEFAULT_PORTS = {"http": 80, "https": 443}

# scheme://host[:port][/path][?query], nothing else: no userinfo, no
# fragment, ASCII only. Path and query hold RFC 3986 pchars minus ';'
# (some servers read '..;' as '..').
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[A-Za-z0-9\-._~%!$&'()*+,=:@/]*)?"
    r"(?:\?(?P<query>[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*))?"
)
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@attr.s(frozen=True)
class Target:
    """
    A parsed, checked URL.

    @ivar origin: C{(scheme, host, port)}, the host lower-cased (IPv6
        without brackets).
    @ivar segments: the path's segments, percent-decoded (L{bytes}).
    @ivar url: the URL to request, rebuilt from the parts (L{str}).
    """

    origin = attr.ib()
    segments = attr.ib()
    url = attr.ib()


def parseURL(text):
    """
    Parse an upstream URL strictly.

    @rtype: L{Target}
    @raise ValueError: with the reason, for anything but a plain
        C{http(s)://host[:port][/path][?query]}.
    """
    match = _URL.fullmatch(text)
    if match is None:
        raise ValueError("not a plain http(s)://host[:port]/path?query URL")
    scheme = match["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("only http and https are allowed")
    host = match["host"].lower()
    if host.startswith("["):
        try:
            host = ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            raise ValueError("bad IPv6 address") from None
        hostText = f"[{host}]"
    else:
        host = host[:-1] if host.endswith(".") else host
        if not host or ".." in host:
            raise ValueError("bad host name")
        hostText = host
    port = DEFAULT_PORTS[scheme] if match["port"] is None else int(match["port"])
    if not 0 < port < 65536:
        raise ValueError("port out of range")
    path = match["path"] or "/"
    query = match["query"]
    if _PERCENT.search(path) or (query and _PERCENT.search(query)):
        raise ValueError("a '%' must start a %XX escape")
    segments = [unquote_to_bytes(s) for s in path.split("/")[1:]]
    for index, segment in enumerate(segments):
        if not segment.strip(b"."):
            if segment or index < len(segments) - 1:
                raise ValueError("empty, '.' or '..' path segments are not allowed")
        if re.search(rb"[\x00-\x1f\x7f/\\]", segment):
            raise ValueError("encoded '/', '\\' or control characters in the path")
    netloc = hostText if port == DEFAULT_PORTS[scheme] else f"{hostText}:{port}"
    url = f"{scheme}://{netloc}{path}" + ("" if query is None else f"?{query}")
    return Target((scheme, host, port), tuple(segments), url)


def _prefixSegments(segments):
    """
    An allowed prefix's segments, without the empty one a trailing C{/}
    leaves: C{/record} and C{/record/} both allow C{/record/x}, never
    C{/recordings}.
    """
    return segments[:-1] if segments and not segments[-1] else segments


@attr.s(frozen=True)
class UpstreamRequest:
    """
    What an C{upstream} header asks for, once allowed.

    @ivar value: the header's value, as the client wrote it.
    """

    method = attr.ib()
    url = attr.ib()
    origin = attr.ib()
    value = attr.ib()


class AllowList:
    """
    The targets the operator allows: URL prefixes and named targets.

    @ivar origins: every C{(scheme, host, port)} a request may go to.
    """

    def __init__(self, prefixes=(), targets=()):
        """
        @param prefixes: allowed URL prefixes (L{str}).
        @param targets: C{(name, url)} pairs; a client writes C{name},
            optionally followed by a C{/path} or C{?query} to append.
        @raise ValueError: an entry is not a plain URL, or has a query.
        """
        self._prefixes = [self._entry(url) for url in prefixes]
        self._targets = {}
        for name, url in targets:
            if not _NAME.fullmatch(name):
                raise ValueError(f"bad upstream target name {name!r}")
            self._targets[name] = (url, self._entry(url))
        entries = self._prefixes + [entry for _, entry in self._targets.values()]
        self.origins = frozenset(entry.origin for entry in entries)

    @staticmethod
    def _entry(url):
        if "?" in url:
            raise ValueError(f"an allowed upstream URL has no query: {url!r}")
        try:
            target = parseURL(url)
        except ValueError as e:
            raise ValueError(f"bad allowed upstream URL {url!r}: {e}") from None
        return attr.evolve(target, segments=_prefixSegments(target.segments))

    def __bool__(self):
        return bool(self.origins)

    def check(self, value):
        """
        @param value: the C{upstream} header's value.
        @rtype: L{UpstreamRequest}
        @raise Forbidden: the target is not allowed.
        @raise BadUpstream: the value is not C{METHOD TARGET}.
        """
        words = splitList(value)
        if len(words) != 2 or words[0].upper() not in METHODS:
            raise BadUpstream(
                "the upstream header is 'METHOD TARGET', METHOD one of "
                + ", ".join(sorted(METHODS))
            )
        method, where = words[0].upper(), words[1]
        if "://" in where:
            url, allowed = where, self._prefixes
        else:
            name, suffix = re.match(r"([^/?]*)(.*)", where).groups()
            if name not in self._targets:
                raise Forbidden(f"no upstream target named {name[:64]!r}", "upstream not allowed")
            base, entry = self._targets[name]
            if suffix.startswith("/"):
                base = base.rstrip("/")
            url, allowed = base + suffix, [entry]
        try:
            target = parseURL(url)
        except ValueError as e:
            raise Forbidden(f"upstream target refused: {e}", "upstream not allowed") from None
        for entry in allowed:
            prefix = entry.segments
            if target.origin == entry.origin and target.segments[: len(prefix)] == prefix:
                return UpstreamRequest(method, target.url, target.origin, value)
        raise Forbidden(
            f"upstream target {url[:200]!r} is not on this server's allow-list",
            "upstream not allowed",
        )


def parseStaticHeader(line):
    """
    C{"Name: value"} of an operator's C{--upstream-header}.

    @raise ValueError: not a valid HTTP header line.
    """
    name, colon, value = line.partition(":")
    value = value.strip()
    if not colon or not _TOKEN.fullmatch(name) or re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError(f"an upstream header is 'Name: value', not {line!r}")
    value.encode("latin-1")
    return name, value
