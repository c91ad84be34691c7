"""
Requests to backends: the HTTP client behind the C{upstream} header
(SPEC section 5), and what the backend receives.

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

The HTTP agent refuses a connection to any scheme, host and port not on
the allow-list (L{GuardedAgent}), so neither a parser quirk nor a redirect
reaches another host. Redirects are not followed.
"""

import json

import attr
from treq import collect
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import ensureDeferred, fail
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError
from twisted.logger import Logger
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from lhttp.errors import BadGateway, Forbidden, GatewayTimeout, LHTTPError
from lhttp.interfaces import IUpstream
from lhttp.upstream.urls import (
    BODYLESS,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RESPONSE,
    DEFAULT_TIMEOUT,
    AllowList,
    parseURL,
)



@attr.s(frozen=True)
class UpstreamResponse:
    """
    The backend's answer, to relay to the sender.
    """

    code = attr.ib()
    contentType = attr.ib()
    body = attr.ib()



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


def guardedClient(reactor, url):
    """
    A treq client that connects only to C{url}'s scheme, host and port
    (L{GuardedAgent}), with persistent connections.
    """
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor))
    return HTTPClient(GuardedAgent(agent, [parseURL(url).origin]))


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


class BodyTooLarge(Exception):
    """
    A response body passed the limit it was read with (L{collectAtMost}).
    """


async def collectAtMost(response, limit):
    """
    The whole body of a treq response, read as it comes.

    @raise BodyTooLarge: once more than C{limit} bytes came (reading
        stops there).
    """
    chunks = []
    size = 0

    def collector(data):
        nonlocal size
        size += len(data)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(data)

    await collect(response, collector)
    return b"".join(chunks)


def cancelAfter(d, clock, timeout):
    """
    Cancel C{d} if it has not fired within C{timeout} seconds.

    Not L{Deferred.addTimeout}: cancelling a request fails it with the
    agent's own error (C{ResponseNeverReceived}), not C{CancelledError},
    so whether the timer fired is kept apart.

    @return: a L{list}, not empty once the timer fired (for the errback
        to tell a timeout from another failure).
    """
    expired = []
    timer = clock.callLater(timeout, lambda: (expired.append(True), d.cancel()))

    def stopTimer(result):
        if timer.active():
            timer.cancel()
        return result

    d.addBoth(stopTimer)
    return expired


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
        maxPending=DEFAULT_CONCURRENCY,
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
        expired = cancelAfter(d, self._clock, self.timeout)
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
        if self.relay and response.code < 500:
            body = await collectAtMost(response, self.maxResponse)
        else:
            await collect(response, lambda data: None)
        if response.code >= 500:
            raise BadGateway(f"the upstream answered {response.code}")
        if not self.relay:
            return None
        contentType = response.headers.getRawHeaders(b"content-type", [b""])[0]
        return UpstreamResponse(response.code, contentType.decode("latin-1"), body)

    def _failed(self, failure, request, expired):
        if expired:
            raise GatewayTimeout(f"the upstream did not answer within {self.timeout:g} s")
        if failure.check(LHTTPError):
            return failure
        if failure.check(BodyTooLarge):
            raise BadGateway(f"the upstream response is larger than {self.maxResponse} bytes")
        if not failure.check(*_NETWORK_ERRORS):
            self.log.failure("Upstream {method} {url} failed", failure,
                             method=request.method, url=request.url)
        raise BadGateway(f"cannot reach the upstream ({failure.getErrorMessage()[:200]})")


def makeUpstream(reactor, config):
    """
    The upstream of a node: L{NoUpstream} when nothing is allowed, else an
    L{HTTPUpstream} with a L{GuardedAgent}ed treq client.

    @type config: L{lhttp.config.Config}
    """
    allowList = AllowList(config.upstreamAllow, config.upstreamTargets)
    if not allowList:
        return NoUpstream()
    return HTTPUpstream(
        allowList,
        httpClient(reactor, allowList),
        reactor,
        timeout=config.upstreamTimeout,
        relay=config.upstreamRelay,
        maxResponse=config.upstreamMaxResponse,
        maxPending=config.upstreamConcurrency,
        staticHeaders=config.upstreamHeaders,
    )


