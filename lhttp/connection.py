"""
The connection object processors and filters get (L{IConnection}): the
message being handled, the reply draft, sending, pub/sub, the peer.

It knows nothing of sockets or of the node: it writes to a C{writer} (the
WebSocket protocol: C{sendMessage}, C{sendClose}; it is also the subscriber
fan-out writes to), and reaches channels through an
L{lhttp.interfaces.IPubSub}.
"""

from autobahn.exception import Disconnected
from zope.interface import implementer

from lhttp.acks import ACK_HEADER, KEY_HEADER, ackReply, withoutPrivateHeaders
from lhttp.auth.identity import ANONYMOUS
from lhttp.codec import Message, errorReply, isText, serialize
from lhttp.errors import TooManySubscriptions
from lhttp.history.wire import recoveryPlan, recoveryReply
from lhttp.interfaces import IConnection


@implementer(IConnection)
class Connection:
    """
    @ivar connected: L{False} once the connection closed or is closing;
        nothing more is sent.
    """

    def __init__(self, writer, pubsub, metrics, maxSubscriptions, peer=None, handshake=None):
        """
        @param writer: the WebSocket protocol this connection writes to.
        @param pubsub: the node's L{lhttp.interfaces.IPubSub}.
        @param metrics: the L{lhttp.metrics.Metrics} counting what is sent.
        @param maxSubscriptions: channels this connection may subscribe to.
        @param peer: the client's address.
        @param handshake: the WebSocket opening handshake request.
        """
        self.handshake = handshake
        self.data = {}
        # Who it proved to be (lhttp.auth): anonymous until it does.
        self.identity = ANONYMOUS
        self.connected = True
        self._writer = writer
        self._pubsub = pubsub
        self._metrics = metrics
        self._maxSubscriptions = maxSubscriptions
        self._peer = peer
        self._subscriptions = {}
        self._watchers = ()
        self._message = None
        self._binary = False
        self._resetDraft()

    # The message being handled (the dispatcher calls begin and end).

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

    def getRelayed(self):
        message = self._message
        if not self._dirty:
            return message
        headers = [h for h in message.headers if h[0].lower() not in self._replaced]
        headers.extend(self._replyHeaders)
        body = message.body if self._replyBody is None else self._replyBody
        return Message(self._replyCommand or message.command, headers, body)

    # Writing.

    def sendMessage(self, message):
        self._sendBytes(message.toBytes())

    def _sendBytes(self, payload):
        """
        Write one LHTTP message's bytes, in the frame type of the message
        being handled (binary if it is not UTF-8).
        """
        if self.connected:
            try:
                self._writer.sendMessage(payload, self._binary or not isText(payload))
            except Disconnected:
                # Closing already (the peer's close frame is in); nothing
                # more can be written.
                self.connected = False
                return
            self._metrics.sent += 1

    def sendError(self, error, command=None, headers=()):
        message = self._message
        if command is None and message is not None:
            command = message.command
        if not headers and message is not None:
            # Any error answering a publish that asked for an
            # acknowledgement carries its id, so the publisher can match it.
            ackId = message.getHeader(ACK_HEADER)
            if ackId is not None:
                headers = [(ACK_HEADER, ackId)]
        if self.connected:
            self._metrics.errorSent(error.status)
        self.sendMessage(errorReply(error, command, headers))

    # Pub/sub.

    @property
    def subscriptions(self):
        return frozenset(self._subscriptions)

    def checkChannels(self, channels):
        return self._pubsub.checkChannels(channels)

    def checkPublishChannels(self, channels, message=None):
        return self._pubsub.checkPublishChannels(channels, message)

    def subscribe(self, channels, since=None, epoch=None):
        checked = self._pubsub.checkChannels(channels)
        if not self.connected:
            # Closed or closing: its channels were left at its close, and
            # nothing would ever leave them again.
            return None
        recover = recoveryPlan(checked, since, epoch)
        names = [c for c in checked if c not in self._subscriptions]
        limit = self._maxSubscriptions
        if len(self._subscriptions) + len(names) > limit:
            raise TooManySubscriptions(
                f"a connection may subscribe to at most {limit} channels"
            )
        for name in names:
            self._subscriptions[name] = None
        if names:
            self._changed(names, True)
        if not recover:
            return self._pubsub.subscribe(self._writer, names)
        command = self._message.command if self._message is not None else "subscribe"

        def announce(channel, recovery, since):
            self.sendMessage(recoveryReply(channel, recovery, since, command))

        # A channel subscribed already and asked to recover again (an SDK
        # that saw a live gap) is recovered too: a recovery reply, what it
        # missed, then live messages held meanwhile.
        again = [n for n in checked if n in recover and n not in names]
        return self._pubsub.subscribe(
            self._writer, names + again, {n: recover[n] for n in names + again if n in recover},
            announce,
        )

    def unsubscribe(self, channels):
        names = [c for c in self._pubsub.checkChannels(channels) if c in self._subscriptions]
        for name in names:
            del self._subscriptions[name]
        self._pubsub.unsubscribe(self._writer, names)
        if names:
            self._changed(names, False)

    def unsubscribeAll(self):
        """
        Leave every channel (the connection closed).
        """
        names = list(self._subscriptions)
        self._pubsub.unsubscribe(self._writer, names)
        self._subscriptions.clear()
        if names:
            self._changed(names, False)

    def isSubscribed(self, channel):
        return channel in self._subscriptions

    def watchSubscriptions(self, watcher):
        self._watchers += (watcher,)

    def _changed(self, names, subscribed):
        for watcher in self._watchers:
            watcher(self, names, subscribed)

    def publish(self, channels, command, headers=(), body=b""):
        payload = serialize(Message(command, headers, body))
        self._pubsub.publishBytes(channels, payload, lambda error: self.sendError(error, command))

    def relay(self, channels):
        message = self._message
        command = message.command
        ackId = message.getHeader(ACK_HEADER)
        key = message.getHeader(KEY_HEADER)
        if ackId is None and key is None:
            self._pubsub.publishBytes(
                channels, self.getRelayed().toBytes(), lambda error: self.sendError(error, command)
            )
            return
        relayed = withoutPrivateHeaders(self.getRelayed())
        if ackId is None:
            self._pubsub.publishBytes(
                channels, relayed.toBytes(), lambda error: self.sendError(error, command), key
            )
            return
        ackHeaders = [(ACK_HEADER, ackId)]

        def failed(error):
            self.sendError(error, command, ackHeaders)

        def confirmed(receipt):
            self.sendMessage(ackReply(ackId, receipt))

        self._pubsub.publishBytes(channels, relayed.toBytes(), failed, key, confirmed)

    # The rest.

    def getPeer(self):
        return self._peer

    def close(self, code=1000, reason=None):
        if self.connected:
            self.connected = False
            self._writer.sendClose(code, reason)

    def __repr__(self):
        return f"<Connection peer={self._peer}>"
