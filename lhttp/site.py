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

Embedding: serve your tree with C{LHTTPSite(root, server)} instead of
C{Site(root)} and C{/publish} gets the same protection wherever it is
mounted; your own resources keep Twisted's handling unless you pass
C{maxBodySize}.
"""

from io import BytesIO
from urllib.parse import unquote_to_bytes

from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from lhttp.errors import LHTTPError, MessageTooLarge
from lhttp.interfaces import IBodyLimit
from lhttp.resource import errorResponse

# After refusing a request whose body is still coming: how long, and how
# many bytes, to read and discard before dropping the connection.
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024


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
            # A resource of the user's that asked for nothing: Twisted's way.
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
            resource = Site.getResourceFor(site, self)
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
    and closes politely after an early answer (see the module docstring).
    """

    _refusing = False
    _lingerCall = None
    _discarded = 0

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

    def dataReceived(self, data):
        if self._refusing:
            self._discard(data)
            return
        HTTPChannel.dataReceived(self, data)

    def rawDataReceived(self, data):
        if self._refusing:
            self._discard(data)
            return
        HTTPChannel.rawDataReceived(self, data)

    def allContentReceived(self):
        if self._refusing:
            # The end of a body whose request was answered already.
            return
        HTTPChannel.allContentReceived(self)

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
        if self._lingerCall is not None and self._lingerCall.active():
            self._lingerCall.cancel()
        HTTPChannel.connectionLost(self, reason)


class LHTTPSite(Site):
    """
    A L{Site} built from L{LHTTPChannel}s and L{LHTTPRequest}s: serve an
    lhttp tree (the node's, or yours with an lhttp tree mounted in it)
    with this rather than a plain L{Site}.

    @ivar maxBodySize: the largest body, in bytes, taken by a resource that
        does not provide L{IBodyLimit}, kept in memory; L{None} leaves those
        to Twisted (read whole, into a temporary file when large).
    """

    protocol = LHTTPChannel
    requestFactory = LHTTPRequest

    def __init__(self, resource, server=None, maxBodySize=None, **kwargs):
        """
        @param resource: the root of the tree.
        @param server: the L{lhttp.server.LHTTPServer} whose tree is served
            (its limits apply to the HTTP phase), or L{None}.
        @param maxBodySize: see L{maxBodySize}.
        @param kwargs: for L{Site} (C{logPath}, C{reactor}...); C{timeout},
            the idle timeout, defaults to the server's handshake timeout.
        """
        if server is not None:
            kwargs.setdefault("timeout", server.handshakeTimeout)
        Site.__init__(self, resource, **kwargs)
        self.server = server
        self.maxBodySize = maxBodySize

    def getResourceFor(self, request):
        found = getattr(request, "_found", None)
        if found is None:
            return Site.getResourceFor(self, request)
        # Traversed when the head came in (LHTTPRequest.gotLength).
        request._found = None
        resource, request.prepath, request.postpath, request.sitepath = found
        request.site = self
        return resource
