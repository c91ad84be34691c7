"""
The connection object processors and filters get (L{IConnection}): the
message being handled, the reply draft, sending, pub/sub, the peer.

It knows nothing of sockets: it talks to a C{transport} with Autobahn's
C{sendMessage}, C{sendPreparedMessage} and C{sendClose}, so a test can use
L{lhttp.testing.FakeWebSocket}.
"""

from collections import deque

from autobahn.exception import Disconnected
from twisted.internet.defer import gatherResults
from zope.interface import implementer

from lhttp.channels import isText
from lhttp.codec import Message, serialize
from lhttp.errors import TooManySubscriptions
from lhttp.interfaces import IConnection


def errorReply(error, command=None):
    """
    The C{LHTTP/1.0 error} reply of SPEC section 7 for an L{LHTTPError}.

    @param command: the command of the message that failed, when known; it
        is echoed in a C{command} header so clients can match the error.
    """
    headers = [("status", str(error.status)), ("reason", error.reason)]
    if command is not None:
        headers.append(("command", command))
    return Message("error", headers, str(error.detail))


@implementer(IConnection)
class Connection:
    """
    @ivar transport: the WebSocket protocol this connection writes to; it is
        also what the channel table delivers to.
    @ivar server: the L{lhttp.server.LHTTPServer} this connection belongs to.
    """

    def __init__(self, server, transport, peer=None, handshake=None):
        self.server = server
        self.transport = transport
        self.handshake = handshake
        self.data = {}
        self.connected = True
        self._peer = peer
        self._subscriptions = {}
        self._message = None
        self._binary = False
        self._resetDraft()
        # Dispatch state (owned by lhttp.dispatch.Dispatcher).
        self.queue = deque()
        self.queuedBytes = 0
        self.readingPaused = False
        self.busy = False
        self.draining = False
        self.opened = []

    # The message being handled.

    def begin(self, message, isBinary):
        self._message = message
        self._binary = isBinary
        self._resetDraft()

    def end(self):
        self._message = None
        self._resetDraft()

    def getMessage(self):
        return self._message

    def getCommand(self):
        return self._message.command

    def getHeader(self, name, default=None):
        return self._message.getHeader(name, default)

    def getBody(self):
        return self._message.body

    def getParts(self):
        return self._message.parts or []

    # The reply draft.

    def _resetDraft(self):
        self._replyCommand = None
        self._replyHeaders = []
        self._replaced = set()
        self._replyBody = None
        self._dirty = False

    def setCommand(self, command):
        self._replyCommand = command
        self._dirty = True

    def setHeader(self, name, value):
        key = name.lower()
        self._replyHeaders = [h for h in self._replyHeaders if h[0].lower() != key]
        self._replyHeaders.append((name, value))
        self._replaced.add(key)
        self._dirty = True

    def addHeader(self, name, value):
        self._replyHeaders.append((name, value))
        self._dirty = True

    def setBody(self, body):
        self._replyBody = body.encode("utf-8") if isinstance(body, str) else body
        self._dirty = True

    def send(self, body=None):
        if body is not None:
            self.setBody(body)
        command = self._replyCommand
        if command is None:
            command = self._message.command if self._message else "reply"
        reply = Message(command, self._replyHeaders, self._replyBody or b"")
        self._resetDraft()
        self.sendMessage(reply)

    def publishedBytes(self):
        """
        What the message's C{publish} header publishes: the original bytes,
        verbatim, unless the processor changed the draft without sending
        it; then the message as the processor left it (its command, the
        original headers with the draft's set/added ones, its body).
        """
        message = self._message
        if not self._dirty:
            return message.toBytes()
        headers = [h for h in message.headers if h[0].lower() not in self._replaced]
        headers.extend(self._replyHeaders)
        body = message.body if self._replyBody is None else self._replyBody
        return serialize(Message(self._replyCommand or message.command, headers, body))

    # Writing.

    def sendMessage(self, message):
        self.sendBytes(message.toBytes())

    def sendBytes(self, payload):
        """
        Write one LHTTP message's bytes, in the frame type of the message
        being handled (binary if it is not UTF-8).
        """
        if self.connected:
            try:
                self.transport.sendMessage(payload, self._binary or not isText(payload))
            except Disconnected:
                # Closing already (the peer's close frame is in); nothing
                # more can be written.
                self.connected = False
                return
            self.server.metrics.sent += 1

    def sendError(self, error, command=None):
        """
        Send the error reply for an L{LHTTPError}.

        @param command: the command it is about (default: the message being
            handled, if any).
        """
        if command is None:
            command = error.command
        if command is None and self._message is not None:
            command = self._message.command
        self.server.metrics.errorSent(error.status)
        self.sendMessage(errorReply(error, command))

    # Pub/sub.

    @property
    def subscriptions(self):
        return frozenset(self._subscriptions)

    def checkedChannels(self, channels):
        return self.server.channelList(channels)

    def subscribe(self, channels):
        names = [c for c in self.checkedChannels(channels) if c not in self._subscriptions]
        limit = self.server.maxSubscriptions
        if len(self._subscriptions) + len(names) > limit:
            raise TooManySubscriptions(
                f"a connection may subscribe to at most {limit} channels"
            )
        table = self.server.channels
        waits = []
        for name in names:
            self._subscriptions[name] = None
            pending = table.add(self.transport, name)
            if pending is not None:
                waits.append(pending)
        if waits:
            return gatherResults(waits).addCallback(lambda ignored: None)
        return None

    def unsubscribe(self, channels):
        table = self.server.channels
        for name in self.checkedChannels(channels):
            if name in self._subscriptions:
                del self._subscriptions[name]
                table.remove(self.transport, name)

    def unsubscribeAll(self):
        table = self.server.channels
        for name in self._subscriptions:
            table.remove(self.transport, name)
        self._subscriptions.clear()

    def publish(self, channels, command, headers=(), body=b""):
        payload = serialize(Message(command, headers, body))
        self.server.publish(channels, payload, lambda error: self.sendError(error, command))

    # The rest.

    def getPeer(self):
        return self._peer

    def close(self, code=1000, reason=None):
        if self.connected:
            self.connected = False
            self.transport.sendClose(code, reason)

    def __repr__(self):
        return f"<Connection peer={self._peer}>"

