"""
The HTTP front door: a L{twisted.web.server.Site} whose requests are
judged by their head, before their body costs the node anything.

Twisted's own L{Request} reads a whole body before any resource sees it,
into a temporary file when it is over 100 kB or chunked: a 400 MiB
C{POST /publish} went to disk before its size or its token was checked.
Here, as soon as a request's headers are in, the site finds the resource
it goes to (the traversal it would do anyway, done early and not
repeated), and a resource that provides L{lhttp.interfaces.IBodyLimit}
(C{/publish}) refuses at once (401, 403, 413) or says how large a body it
takes. Bodies are kept in memory, never more than that; a chunked body
that grows past it is cut off with 413.

A refused request's connection closes politely: the answer, a half-close
(FIN), then what the client still sends is read and thrown away for at
most L{LINGER_SECONDS} or L{LINGER_BYTES}, and the connection is dropped.
Closing at once, with the body still arriving, would make the kernel send
a reset the client may see before the answer.

The HTTP phase of a connection is bounded too (slowloris). Twisted's
timeout is an idle one, reset by every byte: a client trickling a byte a
second held a connection open for ever, and such connections did not count
against any limit, so a few hundred locked real clients out. Here:

  - each request must arrive whole within the handshake timeout of its
    first byte (of the connection, for the first one): the WebSocket
    handshake, or a C{/publish} body. Past it the client gets 408 and the
    connection is dropped.
  - connections not yet WebSockets are I{pending}; there may be at most
    C{maxPendingConnections} of them, and pending and WebSocket
    connections together at most C{maxConnections}. A new connection over
    either limit makes room by dropping the pending connection whose
    current request started longest ago (503 if it was mid-request), one
    not waiting for its answer: a client trickling its handshake ages and
    goes first, while a real client, whose handshake takes milliseconds,
    gets in. Only if no pending connection can go (all WebSocket slots
    taken, or every pending one awaits its answer) is the new connection
    refused, with a 503 at once.

Embedding: serve your tree with C{server.site(root)} (an L{LHTTPSite} with
the node's limits) instead of C{Site(root)} and C{/publish} gets the same
protection wherever it is mounted; your own resources keep Twisted's
handling of bodies (and no deadline once their head is in) unless you pass
C{maxBodySize}; the pending-connection limits cover the whole site.
"""

from io import BytesIO
from urllib.parse import unquote_to_bytes

from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from lhttp.config import Config
from lhttp.errors import LHTTPError, MessageTooLarge
from lhttp.interfaces import IBodyLimit
from lhttp.web.resource import errorResponse

# After refusing a request whose body is still coming: how long, and how
# many bytes, to read and discard before dropping the connection.
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024

# After dropping a connection with a last answer: how long it may take to
# read it before the connection is aborted.
DROP_SECONDS = 2.0


def _answer(status, text):
    """
    A whole HTTP response written straight to the transport, for
    connections dropped outside any request's life.
    """
    body = text.encode("utf-8") + b"\n"
    return (
        b"HTTP/1.1 %s\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
    )


TIMED_OUT = _answer(
    b"408 Request Timeout", "the request did not arrive whole in time (see --handshake-timeout)"
)
NO_ROOM = _answer(
    b"503 Service Unavailable",
    "too many connections in their HTTP phase (see --max-pending-connections, --max-connections)",
)


class LHTTPRequest(Request):
    """
    A request whose head is judged before its body is read, and whose body
    is kept in memory, bounded.
    """

    _refused = False
    _bodyLimit = None
    # (resource, prepath, postpath, sitepath) from the early traversal.
    _found = None

    def headReceived(self, command, path, version):
        """
        The request line is parsed and all headers are in (called by
        L{LHTTPChannel} before L{gotLength}): what the early traversal and
        an early answer need.
        """
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]

    def gotLength(self, length):
        """
        Judge the request by its head and choose where its body goes.

        @param length: the C{Content-Length}, or L{None} if chunked.
        """
        if length == 0:
            self.content = BytesIO()
            return
        site = self.channel.site
        resource = self._findResource(site)
        limit = site.maxBodySize
        try:
            if IBodyLimit.providedBy(resource):
                limit = resource.bodyLimit(self, length)
            if limit is not None and length is not None and length > limit:
                raise MessageTooLarge(f"the body is {length} bytes; the limit is {limit}")
        except LHTTPError as error:
            self.content = BytesIO()
            self._refuse(resource, error)
            return
        if limit is None:
            # A resource of the user's that asked for nothing: Twisted's
            # way, a body of any size, at any pace.
            self.channel.liftDeadline()
            Request.gotLength(self, length)
            return
        self._bodyLimit = limit
        self.content = BytesIO()

    def handleContentChunk(self, data):
        if self._refused:
            return
        limit = self._bodyLimit
        if limit is not None and self.content.tell() + len(data) > limit:
            resource = self._found[0] if self._found else None
            self._refuse(resource, MessageTooLarge(f"the body is over the limit of {limit} bytes"))
            return
        self.content.write(data)

    def _findResource(self, site):
        """
        Traverse the site for this request now, as L{Request.process} will;
        L{LHTTPSite.getResourceFor} gives process the same result.

        @return: the resource, or L{None} if traversal raised (process will
            meet the same error and answer it).
        """
        if not self.path.startswith(b"/"):
            return None
        self.prepath = []
        self.postpath = [unquote_to_bytes(p) for p in self.path[1:].split(b"/")]
        try:
            resource = site.getResourceFor(self)
        except Exception:
            return None
        self._found = (resource, self.prepath, self.postpath, self.sitepath)
        return resource

    def _refuse(self, resource, error):
        """
        Answer now, before (the rest of) the body is read, and have the
        channel close the connection politely.
        """
        self._refused = True
        self.channel.refusing()
        # The answer is final: no "100 Continue" that would invite the body.
        self.requestHeaders.removeHeader(b"expect")
        if IBodyLimit.providedBy(resource):
            body = resource.renderRefusal(self, error)
        else:
            body = errorResponse(self, error)
        self.setHeader(b"connection", b"close")
        self.setHeader(b"content-length", b"%d" % (len(body),))
        self.write(body)
        self.finish()


class LHTTPChannel(HTTPChannel):
    """
    An HTTP connection that tells its L{LHTTPRequest} when the head is in,
    closes politely after an early answer, and is bounded in time and
    number while it is not a WebSocket (see the module docstring).
    """

    _refusing = False
    _dropped = False
    _lingerCall = None
    _discarded = 0
    _deadlineCall = None
    _dropCall = None
    # Bytes received since the current request's deadline started.
    _phaseBytes = 0

    def connectionMade(self):
        HTTPChannel.connectionMade(self)
        if self.site.admit(self):
            self._startPhase()

    def dataReceived(self, data):
        if self._dropped:
            return
        if self._refusing:
            self._discard(data)
            return
        if self._deadlineCall is None and not self._handlingRequest:
            # The first byte of the next request on a kept-alive connection.
            self._startPhase()
        self._phaseBytes += len(data)
        HTTPChannel.dataReceived(self, data)

    # The HTTP phase: one request, from its first byte until it is all in.

    def _startPhase(self):
        self.site.pendingActive(self)
        self._phaseBytes = 0
        self._deadlineCall = self.callLater(self.site.handshakeTimeout, self._deadlinePassed)

    def liftDeadline(self):
        """
        The current request may take its time from here: it is all in, or
        its body goes to a resource that takes any body at any pace.
        """
        if self._deadlineCall is not None:
            if self._deadlineCall.active():
                self._deadlineCall.cancel()
            self._deadlineCall = None

    def _deadlinePassed(self):
        self._deadlineCall = None
        self._drop("deadline", TIMED_OUT if self._phaseBytes else b"")

    def upgrading(self):
        """
        A WebSocket takes this connection over (called by the tree's
        WebSocket resource): it is no longer pending, and no HTTP timer
        may fire on it.
        """
        self.liftDeadline()
        self.setTimeout(None)
        self.site.pendingDone(self)

    def evictable(self):
        """
        Whether this pending connection may be dropped to make room: it is
        not waiting for the answer to a request it sent whole.
        """
        return not (self._handlingRequest or self._dropped or self._refusing)

    def evict(self):
        """
        Drop this connection to make room for a new one: with a 503 if it
        was mid-request.
        """
        self._drop("evicted", NO_ROOM if self._phaseBytes else b"")

    def refuse(self):
        """
        No room for this new connection: answer 503 and drop it.
        """
        self._drop("refused", NO_ROOM)

    def _drop(self, reason, answer):
        self._dropped = True
        self.liftDeadline()
        self.setTimeout(None)
        self.site.pendingDone(self)
        self.site.dropped(reason)
        if answer:
            self.transport.write(answer)
        HTTPChannel.loseConnection(self)
        # A client that does not read even that is not waited for.
        self._dropCall = self.callLater(DROP_SECONDS, self.transport.abortConnection)

    def timeoutConnection(self):
        # Idle (Twisted's timeout): close without HTTPChannel's log line,
        # which a client could have the node write at will. Idle within a
        # request is that request not arriving in time.
        if self._deadlineCall is not None:
            self.liftDeadline()
            self._deadlinePassed()
        else:
            self._drop("idle", b"")

    def allContentReceived(self):
        if self._refusing:
            # The end of a body whose request was answered already.
            return
        self.liftDeadline()
        self._phaseBytes = 0
        HTTPChannel.allContentReceived(self)

    # The early answer (LHTTPRequest._refuse) and the polite close.

    def allHeadersReceived(self):
        request = self.requests[-1]
        headReceived = getattr(request, "headReceived", None)
        if headReceived is not None:
            # HTTPChannel keeps the request line in private attributes
            # until the body is in; the request needs it now.
            headReceived(self._command, self._path, self._version)
        HTTPChannel.allHeadersReceived(self)

    def refusing(self):
        """
        The current request is being answered before its body was read:
        what follows on this connection is thrown away, and it closes
        after the answer.
        """
        self._refusing = True
        self.persistent = False
        self.liftDeadline()
        self.site.pendingDone(self)

    def rawDataReceived(self, data):
        if self._refusing:
            self._discard(data)
            return
        HTTPChannel.rawDataReceived(self, data)

    def loseConnection(self):
        if not self._refusing or self._lingerCall is not None:
            return HTTPChannel.loseConnection(self)
        self.setTimeout(None)
        self._networkProducer.unregisterProducer()
        # TLS has no half-close: the client closes once it has the answer
        # (it says Connection: close), or the linger ends.
        halfClose = getattr(self.transport, "loseWriteConnection", None)
        if halfClose is not None:
            halfClose()
        self._lingerCall = self.callLater(LINGER_SECONDS, self._endLinger)

    def _discard(self, data):
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES and self._lingerCall is not None:
            self._endLinger()

    def _endLinger(self):
        if self._lingerCall.active():
            self._lingerCall.cancel()
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.liftDeadline()
        for call in (self._lingerCall, self._dropCall):
            if call is not None and call.active():
                call.cancel()
        self.site.pendingDone(self)
        HTTPChannel.connectionLost(self, reason)


class LHTTPSite(Site):
    """
    A L{Site} built from L{LHTTPChannel}s and L{LHTTPRequest}s: serve an
    lhttp tree (the node's, or yours with an lhttp tree mounted in it)
    with this rather than a plain L{Site}.

    @ivar maxBodySize: the largest body, in bytes, taken by a resource that
        does not provide L{IBodyLimit}, kept in memory; L{None} leaves those
        to Twisted (read whole, into a temporary file when large).
    @ivar handshakeTimeout: seconds a request has to arrive whole, from its
        first byte.
    @ivar maxPendingConnections: connections in their HTTP phase at once.
    @ivar maxConnections: connections at once, pending and WebSockets.
    """

    protocol = LHTTPChannel
    requestFactory = LHTTPRequest

    def __init__(self, resource, config=None, webSockets=None, metrics=None, maxBodySize=None,
                 **kwargs):
        """
        @param resource: the root of the tree.
        @param config: the L{lhttp.config.Config} whose
            C{handshakeTimeout}, C{maxPendingConnections} and
            C{maxConnections} apply (default: the defaults).
        @param webSockets: a callable giving the number of open WebSockets
            that count against C{maxConnections}, or L{None}.
        @param metrics: the L{lhttp.metrics.Metrics} that counts pending
            and dropped connections, or L{None}.
        @param maxBodySize: see L{maxBodySize}.
        @param kwargs: for L{Site} (C{logPath}, C{reactor}...); C{timeout},
            the idle timeout, defaults to the handshake timeout.
        """
        config = config if config is not None else Config()
        self.handshakeTimeout = config.handshakeTimeout
        self.maxPendingConnections = config.maxPendingConnections
        self.maxConnections = config.connectionLimit()
        self._webSocketCount = webSockets or (lambda: 0)
        self._metrics = metrics
        kwargs.setdefault("timeout", self.handshakeTimeout)
        Site.__init__(self, resource, **kwargs)
        self.maxBodySize = maxBodySize
        # Pending channels, the one whose current request started longest
        # ago first (a dict keeps insertion order).
        self._pending = {}

    def log(self, request):
        """
        Write an access log line only to a log file asked for (C{logPath}):
        a publish is one request, and logging each one costs more than the
        publish.
        """
        if self.logPath is not None:
            Site.log(self, request)

    def admit(self, channel):
        """
        A new connection: make room for it, or refuse it.

        @return: whether it is admitted (else it was answered 503).
        """
        pending = self._pending
        webSockets = self._webSocketCount()
        excess = max(
            len(pending) + 1 - self.maxPendingConnections,
            len(pending) + webSockets + 1 - self.maxConnections,
        )
        if excess > 0:
            victims = []
            if webSockets < self.maxConnections:
                for candidate in pending:
                    if candidate.evictable():
                        victims.append(candidate)
                        if len(victims) == excess:
                            break
            if len(victims) < excess:
                channel.refuse()
                return False
            for victim in victims:
                victim.evict()
        self.pendingActive(channel)
        return True

    def pendingActive(self, channel):
        """
        C{channel} starts a request: it becomes the newest pending one.
        """
        self._pending.pop(channel, None)
        self._pending[channel] = None
        self._counted()

    def pendingDone(self, channel):
        """
        C{channel} is no longer pending: a WebSocket now, closed, or closing.
        """
        if self._pending.pop(channel, 0) is None:
            self._counted()

    def pendingCount(self):
        """
        @return: connections in their HTTP phase.
        """
        return len(self._pending)

    def _counted(self):
        if self._metrics is not None:
            self._metrics.pendingConnections = len(self._pending)

    def dropped(self, reason):
        """
        A channel was dropped in its HTTP phase (see
        L{lhttp.metrics.Metrics.httpConnectionDropped}).
        """
        if self._metrics is not None and reason != "idle":
            self._metrics.httpConnectionDropped(reason)

    def getResourceFor(self, request):
        found = getattr(request, "_found", None)
        if found is None:
            return Site.getResourceFor(self, request)
        # Traversed when the head came in (LHTTPRequest.gotLength).
        request._found = None
        resource, request.prepath, request.postpath, request.sitepath = found
        request.site = self
        return resource
