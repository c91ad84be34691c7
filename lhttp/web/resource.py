"""
The HTTP side: the Resource tree a node serves (and a user mounts in their
own L{twisted.web.server.Site}), and C{POST /publish} (SPEC section 6).

A WebSocket upgrade is accepted on every path; plain HTTP requests go to
the tree's children (C{publish}, C{health}, C{metrics}, and C{demo} when
enabled). Every request to the tree, upgrade or not, must first call the
node by one of its names (L{lhttp.web.hosts}).
"""

import json

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from lhttp.acks import publishOptions, withoutPrivateHeaders
from lhttp.errors import HostNotAllowed, LHTTPError, MessageTooLarge, MissingPublishHeader, errorFor
from lhttp.interfaces import IBodyLimit
from lhttp.metrics import MetricsResource
from lhttp.web.bearer import checkBearer
from lhttp.web.hosts import hostName


def isUpgrade(request):
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and upgrade.lower() == b"websocket"


class _WebSocketResource(WebSocketResource):
    """
    Autobahn's resource, telling the HTTP channel first that the WebSocket
    takes the connection over: its HTTP-phase timers must not fire on it
    later, and under L{lhttp.web.site.LHTTPSite} it stops counting as a pending
    connection.
    """

    def render(self, request):
        channel = request.channel
        upgrading = getattr(channel, "upgrading", None)
        if upgrading is not None:
            upgrading()
        elif getattr(channel, "setTimeout", None) is not None:
            channel.setTimeout(None)
        return WebSocketResource.render(self, request)


class LHTTPResource(Resource):
    """
    The root of a node's tree: WebSocket upgrades on any path below it,
    HTTP children for the rest. Every request must call the node by one of
    its names first.

    Make it with L{lhttp.server.LHTTPServer.resource}.
    """

    def __init__(self, webSocketFactory, hostPolicy):
        """
        @param webSocketFactory: the node's WebSocket server factory.
        @param hostPolicy: the L{lhttp.web.hosts.HostPolicy}.
        """
        Resource.__init__(self)
        self._hostPolicy = hostPolicy
        self._webSocket = _WebSocketResource(webSocketFactory)

    def getChildWithDefault(self, name, request):
        if not self._hostPolicy.allowsRequest(request):
            return ErrorResource(_hostNotAllowed(request))
        if isUpgrade(request):
            return self._webSocket
        if name == b"" and not request.postpath:
            return self
        return Resource.getChildWithDefault(self, name, request)

    def render(self, request):
        # Reached without getChildWithDefault when mounted at /x and asked
        # for /x itself.
        if not self._hostPolicy.allowsRequest(request):
            return ErrorResource(_hostNotAllowed(request)).render(request)
        if isUpgrade(request):
            return self._webSocket.render(request)
        return Resource.render(self, request)

    def getChild(self, name, request):
        return notFound("Not found", "Connect with a WebSocket, or POST LHTTP messages to publish.")

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (
            b"lhttp: an LHTTP server. Connect a WebSocket to any path here; "
            b"POST LHTTP messages to publish.\n"
        )


class _MetricsRoot(Resource):
    def getChild(self, name, request):
        return notFound("Not found", "This port serves GET /metrics only.")

    def render_GET(self, request):
        return self.getChild(b"", request).render(request)


def metricsRoot(metrics, token=None):
    """
    The tree of a port that serves only C{GET /metrics}: a scraper's port,
    kept off the port clients reach.

    @param metrics: the node's L{lhttp.metrics.Metrics}.
    @param token: the bearer token C{GET /metrics} needs, if any.
    """
    root = _MetricsRoot()
    root.putChild(b"metrics", MetricsResource(metrics, token))
    return root


def _errorDocument(error):
    document = {"status": error.status, "reason": error.reason, "detail": str(error.detail)}
    # A refused channel's name (lhttp.errors.ChannelForbidden).
    document.update(error.headers)
    return document


def _json(request, status, document):
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document).encode("utf-8") + b"\n"


def jsonResponse(request, status, document):
    """
    Set C{request}'s status and headers for a JSON answer.

    @return: the body: C{document} as JSON, and a newline.
    """
    return _json(request, status, document)


def checkHost(request, hostPolicy):
    """
    @raise lhttp.errors.HostNotAllowed: C{request} does not call the node
        by one of its names (L{lhttp.web.hosts.HostPolicy}).
    """
    if not hostPolicy.allowsRequest(request):
        raise _hostNotAllowed(request)


def _hostNotAllowed(request):
    host = request.getHeader(b"host") or b""
    name = (hostName(host) or host.decode("latin-1"))[:253]
    return HostNotAllowed(
        f"this node does not answer to the name {name!r} (a DNS rebinding attack?); "
        f"if it is one of the node's names, start it with --allow-host {name}"
    )


@implementer(IBodyLimit)
class ErrorResource(Resource):
    """
    Answers every request with one L{LHTTPError}, as JSON; under
    L{lhttp.web.site.LHTTPSite}, before reading any body.
    """

    isLeaf = True

    def __init__(self, error):
        Resource.__init__(self)
        self.error = error

    def render(self, request):
        return errorResponse(request, self.error)

    def bodyLimit(self, request, length):
        raise self.error

    def renderRefusal(self, request, error):
        return errorResponse(request, error)


def postLimit(request, length, limit, authorize, what):
    """
    L{lhttp.interfaces.IBodyLimit.bodyLimit} for a resource that takes
    token-protected C{POST}s (C{/publish}, C{/api}): a C{POST} is
    authorized, then its announced size checked, before its body is read.

    @param authorize: C{authorize(request)}, raising an L{LHTTPError}.
    @param what: what the body is called in the 413 (C{"message"}).
    @return: C{limit}.
    """
    if request.method == b"POST":
        authorize(request)
        if length is not None and length > limit:
            raise MessageTooLarge(f"the {what} is {length} bytes; the limit is {limit}")
    return limit


def errorResponse(request, error):
    """
    Set C{request}'s status and headers for an L{LHTTPError}.

    @return: the JSON body (C{status}, C{reason}, C{detail}) to write.
    """
    return _json(request, error.status, _errorDocument(error))


def _receiptDocument(channels, receipt):
    document = {"status": 200, "channels": channels}
    if receipt.positions:
        document["positions"] = [
            {"channel": channel, "offset": offset, "epoch": epoch}
            for channel, epoch, offset in receipt.positions
        ]
    if receipt.duplicate:
        document["duplicate"] = True
    return document


class HealthResource(Resource):
    """
    C{GET /health}: readiness, 200 while the broker takes publishes and 503
    while it does not (a load balancer stops sending clients to the node).
    C{GET /health/live}: liveness, 200 while the process serves HTTP.
    """

    isLeaf = True

    def __init__(self, broker, presence=None, nats=None):
        """
        @param broker: the node's L{lhttp.interfaces.IBroker}.
        @param presence: the node's presence engine, if it says how it is
            (a C{describe()}, shown as C{presence}; not ready there does
            not make the node unready: it takes publishes).
        @param nats: the node's NATS connection, if it has one
            (L{lhttp.brokers.connection.NATSConnection}): shown as
            C{nats}, the connected URL (redacted), its reconnects and the
            readiness of each of its users (broker, history, presence).
        """
        Resource.__init__(self)
        self._broker = broker
        self._presence = presence
        self._nats = nats

    def render_GET(self, request):
        ready = bool(self._broker.ready)
        if request.postpath and request.postpath[0] == b"live":
            return _json(request, 200, {"live": True, "ready": ready})
        document = {"live": True, "ready": ready, "broker": self._broker.describe()}
        if self._nats is not None:
            document["nats"] = self._nats.describe()
        if self._presence is not None:
            document["presence"] = self._presence.describe()
        return _json(request, 200 if ready else 503, document)


@implementer(IBodyLimit)
class PublishResource(Resource):
    """
    C{POST /publish}: the body is an LHTTP message, published verbatim to
    each channel of its C{publish} header.

    Answers (JSON): 200 once the broker confirmed it (with the offsets
    given on history channels, and C{duplicate} for a repeated
    C{idempotency-key}); 400 malformed or no C{publish} header or a bad
    channel or header; 401/403 when a publish token is configured and the
    request has none or a wrong one (C{Authorization: Bearer <token>}); 413
    larger than the message size limit; 503 when it is not known to be
    stored (retry with the same C{idempotency-key}: at most once).

    Under L{lhttp.web.site.LHTTPSite} the token and an announced size are
    checked as soon as the headers are in (L{bodyLimit}), before the body
    is read; they are checked again here, for any other Site.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, receive, pubsub, metrics, token, maxMessageSize, guard=None):
        """
        @param receive: the node's ingress (L{lhttp.server.LHTTPServer.receive}):
            bytes to a checked L{lhttp.codec.Message}.
        @param pubsub: the node's L{lhttp.interfaces.IPubSub}.
        @param metrics: the L{lhttp.metrics.Metrics} counting answers.
        @param token: the publish token, or L{None}.
        @param maxMessageSize: the largest body, in bytes.
        @param guard: the node's L{lhttp.auth.guard.ChannelGuard}, or
            L{None} when permissions are off. With a publish token the
            caller is the trusted backend (everything allowed); without
            one it is anonymous and needs C{pub:anyone}.
        """
        Resource.__init__(self)
        self._guard = guard
        self._receive = receive
        self._pubsub = pubsub
        self._metrics = metrics
        self._token = token
        self._maxMessageSize = maxMessageSize

    def render_POST(self, request):
        confirmed = Deferred()
        try:
            channels = self._publish(request, confirmed)
        except LHTTPError as error:
            self._metrics.httpPublishAnswered(error.status)
            return _json(request, error.status, _errorDocument(error))
        # Answer 200 only once the broker confirms the publish (at once for
        # the embedded broker; a NATS round trip in a cluster).
        confirmed.addCallbacks(
            lambda receipt: (200, _receiptDocument(channels, receipt)),
            lambda failure: (errorFor(failure).status, _errorDocument(errorFor(failure))),
        )
        confirmed.addCallback(self._finish, request)
        return NOT_DONE_YET

    def bodyLimit(self, request, length):
        return postLimit(request, length, self._maxMessageSize, self._authorize, "message")

    def renderRefusal(self, request, error):
        self._metrics.httpPublishAnswered(error.status)
        return errorResponse(request, error)

    def _finish(self, answer, request):
        self._metrics.httpPublishAnswered(answer[0])
        if request.finished or request.channel is None:
            return
        status, document = answer
        request.write(_json(request, status, document))
        request.finish()

    def _publish(self, request, confirmed):
        self._authorize(request)
        body = request.content
        body.seek(0, 2)
        size = body.tell()
        limit = self._maxMessageSize
        if size > limit:
            raise MessageTooLarge(f"the message is {size} bytes; the limit is {limit}")
        body.seek(0)
        # The node's one ingress: the same limits and checks as a WebSocket
        # message, since subscribers get it as one.
        message = self._receive(body.read())
        value = message.getHeader("publish")
        if value is None:
            raise MissingPublishHeader("the message has no 'publish' header")
        names = self._pubsub.checkPublishChannels(value, message)
        if self._guard is not None and not self._token:
            self._guard.require(None, names, "pub")
        _, key = publishOptions(message)
        return self._pubsub.publishBytes(
            value, withoutPrivateHeaders(message).toBytes(), confirmed.errback, key,
            confirmed.callback,
        )

    def _authorize(self, request):
        checkBearer(request, self._token, "publish")

    def render_GET(self, request):
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"POST an LHTTP message with a 'publish' header here.\n"
