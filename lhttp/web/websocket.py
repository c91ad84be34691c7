"""
The WebSocket glue: an Autobahn server protocol that only adapts. A
message in goes to the connection's pipeline (L{lhttp.dispatch.Pipeline});
what the node sends comes back through Autobahn's C{sendMessage} and
C{sendPreparedMessage}.

The policies it applies are small objects of their own: which pages may
connect (L{lhttp.web.origins.OriginPolicy}) and how much a client that
stopped reading may still be sent (L{lhttp.web.sendbuffer.SendBudget}).
"""

import autobahn
import autobahn.websocket.protocol
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.interfaces import ISubscriber
from lhttp.version import __version__
from lhttp.web.origins import OriginPolicy
from lhttp.web.sendbuffer import SendBudget


class _Formatted:
    """
    C{pprint.pformat(value)}, made only if it is shown.

    Autobahn formats its protocol options with C{pformat} for a debug log
    line on every new connection, shown or not: a tenth of a node's CPU
    when clients connect in bulk. Its module's C{pformat} is this class, so
    the line reads the same when debug logging is on and costs nothing when
    it is off.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __str__(self):
        from pprint import pformat

        return pformat(self.value)

    __repr__ = __str__


autobahn.websocket.protocol.pformat = _Formatted

# Not "log" on the protocol: that is Autobahn's own, level-filtered logger.
log = Logger()

# Close codes a server sends (RFC 6455 section 7.4.1).
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})

# RFC 6455 "policy violation": the client did not read what it was sent.
SLOW_CONSUMER_CLOSE = 1008


def _autobahnVersion():
    try:
        return tuple(int(part) for part in autobahn.__version__.split(".")[:2])
    except ValueError:
        return (0, 0)


# The write fast path (LHTTPServerProtocol.sendData) was written for
# Autobahn 23.1 to 26.x, whose WebSocketProtocol.sendData, with no send
# queue, no chopping and no octet logging, formats a debug line (colours
# and all, even with debug logging off) and then calls transport.write:
# fan-out is one write per delivery, and that formatting was most of the
# CPU per delivery. Any other version gets Autobahn's own sendData.
FAST_WRITE = (23, 1) <= _autobahnVersion() < (27, 0)


@implementer(IPushProducer, ISubscriber)
class LHTTPServerProtocol(WebSocketServerProtocol):
    """
    One client's WebSocket. It is also the subscriber the channel table
    writes prepared frames to.
    """

    pipeline = None
    _request = None
    _budget = None
    _waiters = None
    _stall = None

    def onConnect(self, request):
        if not self.factory.origins.allows(request):
            raise ConnectionDeny(
                403, f"origin {request.origin!r} is not allowed to connect (see --allow-origin)"
            )
        self._request = request
        return None

    def onOpen(self):
        transport = self.transport
        # twisted.web's channel was the transport's producer until the
        # WebSocket took the connection over.
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)
        self._budget = SendBudget(self.factory.maxSendBuffer, self._slowConsumer)
        self.pipeline = self.factory.open(self, transport.getPeer(), self._request)

    def onMessage(self, payload, isBinary):
        self.pipeline.receive(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            pipeline.close()
        self._wake(False)

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

    # Reading: the pipeline stops it while the client's messages pile up.

    def pauseReading(self):
        self.transport.pauseProducing()

    def resumeReading(self):
        self.transport.resumeProducing()

    # Writing: IPushProducer, called by the transport, and every write.

    def pauseProducing(self):
        if self._budget is not None:
            self._budget.pause()

    def resumeProducing(self):
        if self._budget is not None:
            self._budget.resume()
        self._wake(True)

    # Pacing what the node writes in bulk (a recovery) by the client's
    # reading: the writer waits for resumeProducing rather than queue it.

    @property
    def writable(self):
        budget = self._budget
        return budget is not None and not budget.paused and not budget.exhausted

    def whenWritable(self):
        """
        @return: a L{Deferred} firing with L{True} once the transport takes
            this client's bytes again, or L{False} if the connection closes
            first. A client that takes none for C{--slow-consumer-grace}
            seconds meanwhile is a slow consumer, closed 1008.
        """
        budget = self._budget
        if budget is None or budget.exhausted or self.pipeline is None:
            return succeed(False)
        if not budget.paused:
            return succeed(True)
        d = Deferred()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(d)
        if self._stall is None:
            self._stall = self.factory.reactor.callLater(
                self.factory.slowConsumerGrace, self._stalled)
        return d

    _held = 0

    def hold(self, size):
        """
        Count bytes the node keeps for this client (live messages waiting
        behind its recovery; negative: written or dropped). Past
        C{--max-send-buffer} it is a slow consumer, closed 1008.

        @return: whether it is still served.
        """
        budget = self._budget
        if budget is None or budget.exhausted:
            return False
        self._held += size
        if self._held > self.factory.maxSendBuffer:
            self._slowConsumer()
            budget.exhausted = True
            self._wake(False)
            return False
        return True

    def _stalled(self):
        self._stall = None
        if self._waiters and not self._budget.exhausted:
            # Its close frame may still be written, then nothing more.
            self._slowConsumer()
            self._budget.exhausted = True
        self._wake(False)

    def _wake(self, writable):
        stall, self._stall = self._stall, None
        if stall is not None and stall.active():
            stall.cancel()
        waiters, self._waiters = self._waiters, None
        for d in waiters or ():
            d.callback(writable)

    def stopProducing(self):
        self.resumeProducing()

    def sendData(self, data, sync=False, chopsize=None):
        budget = self._budget
        if budget is not None and not budget.admit(len(data)):
            return
        if FAST_WRITE and not (sync or chopsize or self.send_queue or self.logOctets):
            self.transport.write(data)
        else:
            WebSocketServerProtocol.sendData(self, data, sync, chopsize)

    def _slowConsumer(self):
        factory = self.factory
        factory.metrics.slowConsumerDisconnected()
        log.warn(
            "Closing slow consumer {peer}: over {limit} bytes queued that it does not read",
            peer=self.peer, limit=factory.maxSendBuffer,
        )
        if self.pipeline is not None:
            self.pipeline.stop()
        # Autobahn aborts the connection if the close frame is not read in
        # this time (the kernel may never take it).
        self.closeHandshakeTimeout = factory.slowConsumerGrace
        self.sendClose(
            SLOW_CONSUMER_CLOSE,
            f"slow consumer: more than {factory.maxSendBuffer} bytes unread; messages after this were not sent",
        )


class LHTTPServerFactory(WebSocketServerFactory):
    """
    Builds L{LHTTPServerProtocol}s for a node.

    @ivar open: C{open(writer, peer, handshake)} starts a connection and
        returns its L{lhttp.dispatch.Pipeline}.
    @ivar origins: the L{OriginPolicy}.
    """

    protocol = LHTTPServerProtocol

    def __init__(self, open, config, metrics, reactor=None):
        """
        @param open: see L{open}.
        @param config: the node's L{lhttp.config.Config}.
        @param metrics: the L{lhttp.metrics.Metrics} that counts slow
            consumers.
        """
        WebSocketServerFactory.__init__(self, reactor=reactor)
        # Autobahn sends the "server" attribute as the Server header.
        self.server = f"lhttp/{__version__}"
        self.open = open
        self.metrics = metrics
        self.origins = OriginPolicy(config.allowOrigins)
        self.maxSendBuffer = config.maxSendBuffer
        self.slowConsumerGrace = config.slowConsumerGrace
        self.setProtocolOptions(
            maxMessagePayloadSize=config.maxMessageSize,
            maxFramePayloadSize=config.maxMessageSize,
            maxConnections=config.connectionLimit(),
            openHandshakeTimeout=config.handshakeTimeout,
            autoPingInterval=config.pingInterval,
            autoPingTimeout=config.pingTimeout,
            # Protocol errors close with their RFC 6455 code (1009, 1007)
            # rather than a bare TCP drop the client cannot explain.
            failByDrop=False,
        )
