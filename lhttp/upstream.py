"""
The C{upstream} header (SPEC section 5): forward a message to an HTTP
backend, only to targets the operator allowed.

    upstream: POST http://127.0.0.1:8080/record     a URL under an allowed prefix
    upstream: POST record                           a named target
    upstream: GET http://127.0.0.1:8080/q?user=a    GET and HEAD send no body

What the backend gets (any HTTP framework reads it)::

    POST /record HTTP/1.1
    Host: 127.0.0.1:8080                  from the allowed URL, never the client
    Content-Type: application/octet-stream
    LHTTP-Command: chat
    LHTTP-Headers: [["upstream", "POST record"], ["publish", "channel_mike"]]
    LHTTP-Peer: 127.0.0.1:53122
    (the operator's --upstream-header lines)

    <the whole LHTTP message, as the processor left it>

C{LHTTP-Headers} is a JSON list of C{[name, value]} pairs, in order, with
their original spelling; it is ASCII (JSON escapes), so a client's header
can never become an HTTP header line.

Safety: targets are parsed strictly (plain C{http}/C{https}, no userinfo,
no fragment, no dot or encoded-slash path segments) and must match an
allowed prefix on scheme, host as written, port and whole path segments.
lhttp never resolves a name a client wrote: it connects only to a host an
operator wrote, and the HTTP agent refuses a connection to any other
scheme, host and port (L{GuardedAgent}), so neither a parser quirk nor a
redirect reaches another host. Redirects are not followed.
"""

import ipaddress
import json
import re
from urllib.parse import unquote_to_bytes

import attr
from twisted.internet.address import IPv4Address, IPv6Address
from treq import collect
from treq.client import HTTPClient
from twisted.internet.defer import DeferredSemaphore, ensureDeferred, fail
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError
from twisted.logger import Logger
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from lhttp.codec import Message, parse, splitList
from lhttp.connection import errorReply
from lhttp.dispatch import HeaderFilter
from lhttp.errors import (
    BadGateway,
    BadUpstream,
    Forbidden,
    GatewayTimeout,
    LHTTPError,
)
from lhttp.interfaces import IUpstream

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RESPONSE = 64 * 1024
DEFAULT_MAX_PENDING = 8

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
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


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


@attr.s(frozen=True)
class UpstreamResponse:
    """
    The backend's answer, to relay to the sender.
    """

    code = attr.ib()
    contentType = attr.ib()
    body = attr.ib()


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


@implementer(IAgent)
class GuardedAgent:
    """
    An L{IAgent} that opens connections only to allowed origins, checked
    with the URI parser L{Agent} itself uses: whatever a URL looks like to
    L{AllowList}, the connection goes to an allowed scheme, host and port
    or nowhere.
    """

    def __init__(self, agent, origins):
        self._agent = agent
        self._origins = frozenset(
            (scheme.encode("ascii"), host.encode("ascii"), port) for scheme, host, port in origins
        )

    def request(self, method, uri, headers=None, bodyProducer=None):
        parsed = URI.fromBytes(uri)
        if (parsed.scheme.lower(), parsed.host.lower(), parsed.port) not in self._origins:
            return fail(Forbidden("the upstream agent refused a host off the allow-list",
                                  "upstream not allowed"))
        return self._agent.request(method, uri, headers, bodyProducer)


def httpClient(reactor, allowList):
    """
    The treq client L{HTTPUpstream} uses in production: persistent
    connections, behind a L{GuardedAgent}.
    """
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor))
    return HTTPClient(GuardedAgent(agent, allowList.origins))


def peerText(peer):
    """
    C{host:port} (C{[host]:port} for IPv6) of a client address.
    """
    if isinstance(peer, IPv6Address):
        return f"[{peer.host}]:{peer.port}"
    if isinstance(peer, IPv4Address):
        return f"{peer.host}:{peer.port}"
    return "" if peer is None else str(peer)


def requestHeaders(message, peer, static=()):
    """
    The HTTP headers that carry an LHTTP message's command, headers and
    sender to the backend: C{LHTTP-Command}, C{LHTTP-Headers} (JSON),
    C{LHTTP-Peer}, then the operator's static headers.
    """
    headers = Headers()
    headers.setRawHeaders(b"Content-Type", [b"application/octet-stream"])
    headers.setRawHeaders(b"LHTTP-Command", [message.command.encode("utf-8")])
    headers.setRawHeaders(
        b"LHTTP-Headers", [json.dumps([list(h) for h in message.headers]).encode("ascii")]
    )
    headers.setRawHeaders(b"LHTTP-Peer", [peerText(peer).encode("ascii", "replace")])
    for name, value in static:
        headers.setRawHeaders(name.encode("ascii"), [value.encode("latin-1")])
    return headers


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


class _TooLarge(Exception):
    pass


_NETWORK_ERRORS = (ConnectError, DNSLookupError, ResponseFailed, ConnectionLost)


@implementer(IUpstream)
class NoUpstream:
    """
    Upstream switched off (no allow-list): every C{upstream} header gets a
    403 and no request is made.
    """

    maxPending = 1

    def check(self, value):
        raise Forbidden("upstream requests are not enabled on this server",
                        "upstream not allowed")

    def call(self, request, peer, message):
        return fail(Forbidden("upstream requests are not enabled on this server"))


@implementer(IUpstream)
class HTTPUpstream:
    """
    Upstream requests with a treq-like HTTP client.

    @ivar relay: whether the backend's response goes back to the sender.
    """

    log = Logger()

    def __init__(
        self,
        allowList,
        client,
        clock,
        timeout=DEFAULT_TIMEOUT,
        relay=False,
        maxResponse=DEFAULT_MAX_RESPONSE,
        maxPending=DEFAULT_MAX_PENDING,
        staticHeaders=(),
    ):
        """
        @param allowList: an L{AllowList}.
        @param client: a L{treq.client.HTTPClient} (or L{treq.testing.StubTreq}).
        @param clock: an L{IReactorTime} for the timeout.
        @param timeout: seconds for the whole request, body included.
        @param maxResponse: bytes of a relayed response body (more: 502).
        @param maxPending: requests one connection may have in flight.
        @param staticHeaders: C{(name, value)} HTTP headers for every
            request, e.g. the backend's credentials.
        """
        self.allowList = allowList
        self.timeout = timeout
        self.relay = relay
        self.maxResponse = maxResponse
        self.maxPending = maxPending
        self._client = client
        self._clock = clock
        self._static = list(staticHeaders)

    def check(self, value):
        return self.allowList.check(value)

    def call(self, request, peer, message):
        d = ensureDeferred(self._call(request, peer, message))
        # Not Deferred.addTimeout: cancelling a request fails it with the
        # agent's own error (ResponseNeverReceived), not CancelledError.
        expired = []
        timer = self._clock.callLater(self.timeout, lambda: (expired.append(True), d.cancel()))

        def stopTimer(result):
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(stopTimer)
        d.addErrback(self._failed, request, expired)
        return d

    async def _call(self, request, peer, message):
        data = None if request.method in BODYLESS else message.toBytes()
        response = await self._client.request(
            request.method,
            request.url,
            headers=requestHeaders(message, peer, self._static),
            data=data,
            allow_redirects=False,
            unbuffered=True,
        )
        chunks = []
        if self.relay and response.code < 500:
            size = [0]

            def collector(data):
                size[0] += len(data)
                if size[0] > self.maxResponse:
                    raise _TooLarge()
                chunks.append(data)

        else:
            collector = lambda data: None  # noqa: E731
        await collect(response, collector)
        if response.code >= 500:
            raise BadGateway(f"the upstream answered {response.code}")
        if not self.relay:
            return None
        contentType = response.headers.getRawHeaders(b"content-type", [b""])[0]
        return UpstreamResponse(response.code, contentType.decode("latin-1"), b"".join(chunks))

    def _failed(self, failure, request, expired):
        if expired:
            raise GatewayTimeout(f"the upstream did not answer within {self.timeout:g} s")
        if failure.check(LHTTPError):
            return failure
        if failure.check(_TooLarge):
            raise BadGateway(f"the upstream response is larger than {self.maxResponse} bytes")
        if not failure.check(*_NETWORK_ERRORS):
            self.log.failure("Upstream {method} {url} failed", failure,
                             method=request.method, url=request.url)
        raise BadGateway(f"cannot reach the upstream ({failure.getErrorMessage()[:200]})")


def makeUpstream(reactor, allow=(), targets=(), **kwargs):
    """
    The upstream of a node: L{NoUpstream} when nothing is allowed, else an
    L{HTTPUpstream} with a L{GuardedAgent}ed treq client.

    @param kwargs: L{HTTPUpstream}'s options.
    @raise ValueError: a bad allowed URL or target.
    """
    allowList = AllowList(allow, targets)
    if not allowList:
        return NoUpstream()
    return HTTPUpstream(allowList, httpClient(reactor, allowList), reactor, **kwargs)


class UpstreamFilter(HeaderFilter):
    """
    The C{upstream} header as a filter, run last: the allow-list check
    before the processor, the request after unsubscribe.

    Requests run concurrently; a connection may have C{maxPending} in
    flight, and a message beyond that waits for a slot, holding back that
    connection's later messages (never other connections). The sender gets
    a 502/504 error reply if a request fails, and with relaying on, an
    C{LHTTP/1.0 upstream} reply (C{status}, C{command}, C{upstream},
    C{content-type}) with the backend's body.
    """

    def __init__(self, upstream):
        self.upstream = upstream
        self._slots = {}

    def beforeRequest(self, connection, message):
        value = message.getHeader("upstream")
        if value is not None:
            self.upstream.check(value)

    def afterRequest(self, connection, message):
        value = message.getHeader("upstream")
        if value is None:
            return None
        request = self.upstream.check(value)
        payload = connection.publishedBytes()
        sent = message if payload is message.raw else parse(payload)
        slots = self._slots.get(connection)
        if slots is None:
            slots = self._slots[connection] = DeferredSemaphore(self.upstream.maxPending)
        args = (connection, request, sent, connection.getPeer(), slots)
        if slots.tokens:
            slots.acquire()
            self._start(*args)
            return None
        return slots.acquire().addCallback(lambda _: self._start(*args))

    def _start(self, connection, request, message, peer, slots):
        clock = connection.server.factory.reactor
        d = self.upstream.call(request, peer, message)
        d.addBoth(_observed, connection.server.metrics, clock, clock.seconds())
        d.addCallbacks(self._answered, self._refused,
                       callbackArgs=(connection, request, message),
                       errbackArgs=(connection, request, message))
        d.addBoth(lambda _: slots.release())

    def _answered(self, response, connection, request, message):
        if response is None:
            return
        headers = [("status", str(response.code)), ("command", message.command),
                   ("upstream", request.value)]
        if response.contentType and not re.search(r"[\x00\r\n]", response.contentType):
            headers.append(("content-type", response.contentType))
        connection.sendMessage(Message("upstream", headers, response.body))

    def _refused(self, failure, connection, request, message):
        error = failure.value if failure.check(LHTTPError) else BadGateway("the upstream request failed")
        reply = errorReply(error, message.command)
        reply.headers.append(("upstream", request.value))
        if connection.connected:
            connection.server.metrics.errorSent(error.status)
        connection.sendMessage(reply)

    def onClose(self, connection):
        self._slots.pop(connection, None)


def _observed(result, metrics, clock, started):
    """
    Time one upstream request into C{lhttp_upstream_request_seconds}: by
    the backend's status when it is kept (relaying on), C{ok} when it is
    not, C{timeout} or C{error} when the request failed.
    """
    if isinstance(result, UpstreamResponse):
        status = result.code
    elif result is None:
        status = "ok"
    elif result.check(GatewayTimeout):
        status = "timeout"
    else:
        status = "error"
    metrics.observeUpstream(clock.seconds() - started, status)
    return result
