"""
The WebSocket glue: an Autobahn server protocol that only adapts. Bytes in
go to the dispatcher; the dispatcher writes back through the connection.

It also guards the node: the Origin check at the handshake, and a bounded
send buffer per connection. The protocol is the transport's producer, so it
learns when the kernel stops taking a client's bytes; past
C{maxSendBuffer} bytes queued since then, the client is a slow consumer: it
gets nothing more but a close frame with L{SLOW_CONSUMER_CLOSE}, and is
dropped if it does not read that within C{slowConsumerGrace} seconds.
Nobody else waits for it.
"""

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from lhttp import __version__
from lhttp.connection import Connection
from lhttp.origins import originAllowed

# Not "log" on the protocol: that is Autobahn's own, level-filtered logger.
log = Logger()

# Close codes a server sends (RFC 6455 section 7.4.1).
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})

# RFC 6455 "policy violation": the client did not read what it was sent.
SLOW_CONSUMER_CLOSE = 1008


@implementer(IPushProducer)
class LHTTPServerProtocol(WebSocketServerProtocol):
    """
    One client's WebSocket. It is also the subscriber the channel table
    writes prepared frames to.
    """

    connection = None
    _request = None
    # Back-pressure: set while the transport's buffer is full.
    _paused = False
    _unsent = 0
    _dropping = False

    def onConnect(self, request):
        server = self.factory.node
        if not originAllowed(request, server.allowedOrigins):
            raise ConnectionDeny(
                403, f"origin {request.origin!r} is not allowed to connect (see --allow-origin)"
            )
        self._request = request
        return None

    def onOpen(self):
        server = self.factory.node
        transport = self.transport
        # twisted.web's channel was the transport's producer until the
        # WebSocket took the connection over.
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)
        self.connection = Connection(server, self, transport.getPeer(), self._request)
        server.connectionOpened(self.connection)

    def onMessage(self, payload, isBinary):
        self.factory.node.dispatcher.messageReceived(self.connection, payload, isBinary)

    def onClose(self, wasClean, code, reason):
        connection, self.connection = self.connection, None
        if connection is not None:
            self.factory.node.connectionClosed(connection)

    def sendClose(self, code=None, reason=None):
        """
        Like Autobahn's, but for every close code a server may send
        (RFC 6455 7.4.1: 1001 going away, 1008 policy, 1011 ...); Autobahn's
        own takes only 1000 and 3000-4999.
        """
        if code is None or code == 1000 or 3000 <= code <= 4999:
            return WebSocketServerProtocol.sendClose(self, code, reason)
        if code not in SERVER_CLOSE_CODES:
            raise ValueError(f"a server does not close with {code}")
        reasonUtf8 = None
        if reason is not None:
            reasonUtf8 = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
        self.sendCloseFrame(code=code, reasonUtf8=reasonUtf8, isReply=False)

    # Reading (the dispatcher's back-pressure on a client whose messages
    # pile up while it waits).

    def pauseReading(self):
        self.transport.pauseProducing()

    def resumeReading(self):
        self.transport.resumeProducing()

    # Back-pressure (IPushProducer, called by the transport).

    def pauseProducing(self):
        # The transport calls this on every write while its buffer is full:
        # count from the first.
        if not self._paused:
            self._paused = True
            self._unsent = 0

    def resumeProducing(self):
        self._paused = False

    def stopProducing(self):
        self._paused = False

    def sendData(self, data, sync=False, chopsize=None):
        if self._dropping:
            return
        if self._paused:
            self._unsent += len(data)
            if self._unsent > self.factory.node.maxSendBuffer:
                self._slowConsumer()
                return
        if sync or chopsize or self.send_queue or self.logOctets:
            WebSocketServerProtocol.sendData(self, data, sync, chopsize)
        else:
            # What Autobahn's sendData does here, minus the debug line it
            # formats (hltype, hlval: colours) on every write even when
            # debug logging is off; fan-out is one write per delivery, and
            # that formatting was most of the CPU per delivery.
            self.transport.write(data)

    def _slowConsumer(self):
        server = self.factory.node
        server.metrics.slowConsumerDisconnected()
        log.warn(
            "Closing slow consumer {peer}: over {limit} bytes queued that it does not read",
            peer=self.peer, limit=server.maxSendBuffer,
        )
        if self.connection is not None:
            self.connection.connected = False
        self._paused = False
        self.closeHandshakeTimeout = server.slowConsumerGrace
        self.sendClose(
            SLOW_CONSUMER_CLOSE,
            f"slow consumer: more than {server.maxSendBuffer} bytes unread; messages after this were not sent",
        )
        self._dropping = True


class LHTTPServerFactory(WebSocketServerFactory):
    """
    Builds L{LHTTPServerProtocol}s for an L{lhttp.server.LHTTPServer}.
    """

    protocol = LHTTPServerProtocol

    def __init__(self, server, reactor=None):
        WebSocketServerFactory.__init__(self, reactor=reactor)
        # Not "server": Autobahn sends that attribute as the Server header.
        self.node = server
        self.server = f"lhttp/{__version__}"
        self.setProtocolOptions(
            maxMessagePayloadSize=server.maxMessageSize,
            maxFramePayloadSize=server.maxMessageSize,
            maxConnections=server.maxConnections,
            openHandshakeTimeout=server.handshakeTimeout,
            autoPingInterval=server.pingInterval,
            autoPingTimeout=server.pingTimeout,
            # Protocol errors close with their RFC 6455 code (1009, 1007)
            # rather than a bare TCP drop the client cannot explain.
            failByDrop=False,
        )
