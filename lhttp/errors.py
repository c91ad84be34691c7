"""
Errors as types, mapped in one place to LHTTP error replies (SPEC section 7)
and HTTP status codes.

Every L{LHTTPError} carries the HTTP-style C{status} the client sees and a
short C{reason}; its message is the human-readable body of the error reply.
"""


class LHTTPError(Exception):
    """
    A message-level problem: the client gets an C{LHTTP/1.0 error} reply and
    the connection stays open.
    """

    status = 500
    reason = "internal error"
    # The command of the message it is about, when known (the error reply
    # echoes it).
    command = None
    # Headers the error reply carries after command (a refused channel's
    # name).
    headers = ()

    # A WebSocket close code: the connection is closed with it once the
    # error reply is sent (a failed authentication: 4401, 4503).
    closeCode = None

    def __init__(self, detail=None, reason=None, command=None):
        Exception.__init__(self, detail or self.reason)
        if reason is not None:
            self.reason = reason
        if command is not None:
            self.command = command

    @property
    def detail(self):
        return self.args[0]


class MalformedMessage(LHTTPError):
    """
    The bytes are not an LHTTP/1.0 message (start line, headers, blank line).
    """

    status = 400
    reason = "malformed message"


class BadMultipart(LHTTPError):
    """
    The C{multipart} offsets or a part are invalid (SPEC section 4).
    """

    status = 400
    reason = "bad multipart"


class BadHeader(LHTTPError):
    """
    A header's value is malformed (e.g. a C{since} offset that is not a
    number).
    """

    status = 400
    reason = "bad header"


class BadHeaderValue(BadHeader):
    """
    A header of the node's own protocol (C{since}, C{epoch}, C{limit},
    C{before}) holds a malformed value: the reason names the header,
    C{bad since header}.
    """

    def __init__(self, name, detail):
        BadHeader.__init__(self, f"{name}: {detail}", reason=f"bad {name} header")
        self.header = name


class ReservedHeader(LHTTPError):
    """
    A publish carries a header only the node may set (C{offset}, C{epoch}:
    a history channel's positions).
    """

    status = 400
    reason = "reserved header"


class NoHistory(LHTTPError):
    """
    A C{history} request for a channel that keeps none.
    """

    status = 404
    reason = "no history"


class BadChannel(LHTTPError):
    """
    A channel name is empty, too long, or contains wildcards or spaces.
    """

    status = 400
    reason = "bad channel name"


class TooManyChannels(LHTTPError):
    """
    One publish names more channels than the node allows.
    """

    status = 400
    reason = "too many channels"


class MissingPublishHeader(LHTTPError):
    """
    C{POST /publish} got a message with no C{publish} header.
    """

    status = 400
    reason = "no publish header"


class BadRequest(LHTTPError):
    """
    An HTTP request's body is not what the resource takes (C{/api}: not
    a JSON object, or a field missing or of the wrong type).
    """

    status = 400
    reason = "bad request"


class Unauthorized(LHTTPError):
    """
    A credential is required and was not given.
    """

    status = 401
    reason = "unauthorized"


class AlreadyConnected(LHTTPError):
    """
    A second C{connect} on a connection that is authenticated already
    (C{refresh} renews its credential).
    """

    status = 400
    reason = "already connected"


class AuthenticationUnavailable(LHTTPError):
    """
    The node cannot tell whether a credential is good now: its JWKS
    endpoint or its connect proxy is down, slow, or answered garbage.
    """

    status = 503
    reason = "authentication unavailable"


class Forbidden(LHTTPError):
    """
    A credential was wrong, or the action is not allowed.
    """

    status = 403
    reason = "forbidden"


class ChannelForbidden(Forbidden):
    """
    An action on a channel is not allowed (L{lhttp.auth.permissions}):
    the error reply names the channel in a C{channel} header::

        LHTTP/1.0 error
        lhttp-node:reply
        status:403
        reason:forbidden
        command:chat
        channel:user.bob

        subscribe to 'user.bob' is not allowed

    @ivar channel: the channel.
    @ivar action: C{"sub"}, C{"pub"}, C{"history"} or C{"presence"}.
    """

    _verbs = {
        "sub": "subscribe to",
        "pub": "publish to",
        "history": "read the history of",
        "presence": "read the presence of",
    }

    def __init__(self, channel, action, detail=None):
        Forbidden.__init__(self, detail or f"{self._verbs[action]} {channel!r} is not allowed")
        self.channel = channel
        self.action = action
        self.headers = (("channel", channel),)


class HostNotAllowed(Forbidden):
    """
    The request calls the node by a name that is not one of its own (its
    C{Host} header): a DNS rebinding attack, or a name to add with
    C{--allow-host} (see L{lhttp.web.hosts}).
    """

    reason = "host not allowed"


class MessageTooLarge(LHTTPError):
    """
    A message is larger than the configured limit.
    """

    status = 413
    reason = "message too large"


class TooManySubscriptions(LHTTPError):
    """
    The connection would go over its subscription limit.
    """

    status = 429
    reason = "too many subscriptions"


class ProcessorFailed(LHTTPError):
    """
    User code (a processor or a header filter) raised: the error is logged
    and the client is told, without the traceback.
    """

    status = 500
    reason = "processor failed"


class BrokerUnavailable(LHTTPError):
    """
    The broker cannot take a publish now: it is refused, never silently
    dropped.
    """

    status = 503
    reason = "broker unavailable"


class MessagesMissed(BrokerUnavailable):
    """
    Told to a channel's subscribers: messages published to it elsewhere may
    not have reached this node.
    """

    reason = "messages may have been missed"


class NoProcessor(LHTTPError):
    """
    A message whose command has no processor and that carries no reserved
    header: nothing would happen to it.
    """

    status = 404
    reason = "no processor"


class NoPresence(LHTTPError):
    """
    A C{presence} or C{presence-stats} request for a channel that does not
    track its subscribers (no C{--presence} pattern matches it).
    """

    status = 404
    reason = "no presence"


class BadUpstream(LHTTPError):
    """
    An C{upstream} header that is not C{METHOD TARGET} with a known method
    (SPEC section 5).
    """

    status = 400
    reason = "bad upstream header"


class BadGateway(LHTTPError):
    """
    The upstream HTTP server could not be reached, failed (5xx), or sent a
    response lhttp would not take.
    """

    status = 502
    reason = "bad gateway"


class GatewayTimeout(LHTTPError):
    """
    The upstream HTTP server did not answer in time.
    """

    status = 504
    reason = "gateway timeout"


class StreamConflict(Exception):
    """
    The history stream exists with subjects or limits other than this
    node's C{--history} settings, and the node may not change them (no
    C{--history-update-stream}): it does not start. Never sent to a
    client.
    """


def errorFor(failure):
    """
    Map any exception to the L{LHTTPError} the client sees: L{LHTTPError}s
    as they are, anything else as L{ProcessorFailed}.

    @param failure: an exception or a L{twisted.python.failure.Failure}.
    @rtype: L{LHTTPError}
    """
    exc = getattr(failure, "value", failure)
    if isinstance(exc, LHTTPError):
        return exc
    return ProcessorFailed("the server failed to process this message")
