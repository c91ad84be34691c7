"""
C{/api}: server-side control for the application's backend, behind the
publish token (docs/operations.rst)::

    POST /api/disconnect   {"user": "alice", "reconnect": false}
      -> 200 {"user": "alice", "closed": 2, "cluster": true}
    POST /api/unsubscribe  {"user": "alice", "channel": "room.1"}
      -> 200 {"user": "alice", "channel": "room.1", "unsubscribed": 1, "cluster": true}

C{closed} and C{unsubscribed} count this node's connections; C{cluster}
says whether every node was told (L{lhttp.interfaces.IControl}).

Errors, as JSON C{{"status", "reason", "detail"}} like C{/publish}: 403
when no publish token is configured (without one, anyone could cut any
user off); 401 without C{Authorization: Bearer <token>}, 403 with a wrong
one; 400 for a body that is not a JSON object with the fields; 413 for a
body over the message size limit; 503 when the other nodes could not be
told. Under L{lhttp.web.site.LHTTPSite} the token and an announced size
are checked before the body is read.
"""

import json

from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from lhttp.errors import BadRequest, Forbidden, LHTTPError, MessageTooLarge, errorFor
from lhttp.interfaces import IBodyLimit
from lhttp.names import checkChannel
from lhttp.web.bearer import checkBearer
from lhttp.web.resource import errorResponse, postLimit

TOKEN_VARIABLE = "LHTTP_PUBLISH_TOKEN"


class ControlResource(Resource):
    """
    C{/api}: its children are the commands.
    """

    def __init__(self, control, token, maxBodySize, maxChannelLength):
        """
        @param control: the node's L{lhttp.interfaces.IControl}.
        @param token: the publish token, or L{None}: then every command is
            refused (403).
        @param maxBodySize: the largest body, in bytes (the message size
            limit, as C{/publish}).
        @param maxChannelLength: the longest channel name.
        """
        Resource.__init__(self)
        self.putChild(b"disconnect", _DisconnectResource(control, token, maxBodySize))
        self.putChild(b"unsubscribe", _UnsubscribeResource(
            control, token, maxBodySize, maxChannelLength))

    def getChild(self, name, request):
        return notFound("Not found", "POST /api/disconnect or /api/unsubscribe.")

    def render_GET(self, request):
        return self.getChild(b"", request).render(request)


@implementer(IBodyLimit)
class _CommandResource(Resource):
    """
    One command: C{POST} a JSON object, answered with JSON once the
    command was applied here and, in a cluster, sent to the other nodes.
    """

    isLeaf = True
    log = Logger()
    name = None

    def __init__(self, control, token, maxBodySize):
        Resource.__init__(self)
        self._control = control
        self._token = token
        self._maxBodySize = maxBodySize

    def render_POST(self, request):
        try:
            self._authorize(request)
            document = self._read(request)
            answer = self._run(document)
        except LHTTPError as error:
            return errorResponse(request, error)
        answer.addCallbacks(lambda document: (200, document), self._failed)
        answer.addCallback(self._finish, request)
        return NOT_DONE_YET

    def render_GET(self, request):
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"POST a JSON object here (docs/operations.rst, /api/{self.name}).\n".encode()

    def _failed(self, failure):
        error = errorFor(failure)
        if not failure.check(LHTTPError):
            self.log.failure("/api/{name} failed", failure, name=self.name)
        return error.status, {"status": error.status, "reason": error.reason,
                              "detail": str(error.detail)}

    def _finish(self, answer, request):
        if request.finished or request.channel is None:
            return
        status, document = answer
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.write(json.dumps(document).encode("utf-8") + b"\n")
        request.finish()

    def bodyLimit(self, request, length):
        return postLimit(request, length, self._maxBodySize, self._authorize, "body")

    def renderRefusal(self, request, error):
        return errorResponse(request, error)

    def _authorize(self, request):
        if not self._token:
            raise Forbidden(
                f"/api/{self.name} is off: it needs a publish token (start the node with "
                f"--publish-token or {TOKEN_VARIABLE})"
            )
        checkBearer(request, self._token, "publish", f"/api/{self.name}")

    def _read(self, request):
        """
        @return: the body, a JSON object (a L{dict}).
        @raise LHTTPError: too large (413), or not a JSON object (400).
        """
        body = request.content
        body.seek(0, 2)
        size = body.tell()
        limit = self._maxBodySize
        if size > limit:
            raise MessageTooLarge(f"the body is {size} bytes; the limit is {limit}")
        body.seek(0)
        try:
            document = json.loads(body.read())
        except ValueError as e:
            raise BadRequest(f"the body is not JSON: {e}") from None
        if not isinstance(document, dict):
            raise BadRequest("the body must be a JSON object, e.g. {\"user\": \"alice\"}")
        return document

    def _run(self, document):
        """
        @param document: the request's JSON object.
        @return: a L{Deferred} firing with the answer's JSON object.
        @raise LHTTPError: a field is missing or wrong (400).
        """
        raise NotImplementedError()


def _user(document):
    user = document.get("user")
    if not isinstance(user, str) or not user:
        raise BadRequest("'user' must be a non-empty string (the user id)")
    return user


class _DisconnectResource(_CommandResource):
    name = "disconnect"

    def _run(self, document):
        user = _user(document)
        reconnect = document.get("reconnect", False)
        if not isinstance(reconnect, bool):
            raise BadRequest("'reconnect' must be true or false")
        cluster = self._control.cluster
        return self._control.disconnect(user, reconnect).addCallback(
            lambda closed: {"user": user, "closed": closed, "cluster": cluster})


class _UnsubscribeResource(_CommandResource):
    name = "unsubscribe"

    def __init__(self, control, token, maxBodySize, maxChannelLength):
        _CommandResource.__init__(self, control, token, maxBodySize)
        self._maxChannelLength = maxChannelLength

    def _run(self, document):
        user = _user(document)
        channel = document.get("channel")
        if not isinstance(channel, str) or not channel:
            raise BadRequest("'channel' must be a non-empty string (the channel name)")
        checkChannel(channel, self._maxChannelLength)
        cluster = self._control.cluster
        return self._control.unsubscribe(user, channel).addCallback(
            lambda left: {"user": user, "channel": channel, "unsubscribed": left,
                          "cluster": cluster})
