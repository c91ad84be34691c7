"""
L{LHTTPServer}: one node's parts wired together, the processor registry,
the broker, the channel table, the WebSocket factory, and its Resource
tree.
"""

from twisted.internet.defer import Deferred

from lhttp.broker import EmbeddedBroker
from lhttp.channels import DEFAULT_MAX_CHANNEL_LENGTH, Channels, channelList
from lhttp.dispatch import DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_MESSAGES, Dispatcher
from lhttp.errors import BrokerUnavailable, TooManyChannels
from lhttp.filters import standardFilters
from lhttp.hosts import HostPolicy
from lhttp.metrics import Metrics
from lhttp.protocol import LHTTPServerFactory
from lhttp.resource import LHTTPResource
from lhttp.upstream import NoUpstream, UpstreamFilter

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_MAX_SUBSCRIPTIONS = 1000
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEADER_LENGTH = 8192
DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_MAX_PENDING_CONNECTIONS = 1000
DEFAULT_MAX_SEND_BUFFER = 1024 * 1024
DEFAULT_SLOW_CONSUMER_GRACE = 10.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_PING_INTERVAL = 30.0
DEFAULT_PING_TIMEOUT = 20.0
DEFAULT_MAX_PUBLISH_CHANNELS = 64


class LHTTPServer:
    """
    An LHTTP node.

    @ivar dispatcher: the L{lhttp.dispatch.Dispatcher}.
    @ivar broker: the L{lhttp.interfaces.IBroker} (embedded by default).
    @ivar channels: the local L{lhttp.channels.Channels} table.
    @ivar factory: the Autobahn WebSocket server factory.
    @ivar metrics: this node's L{lhttp.metrics.Metrics} (C{GET /metrics}).
    """

    def __init__(
        self,
        broker=None,
        reactor=None,
        maxMessageSize=DEFAULT_MAX_MESSAGE_SIZE,
        maxSubscriptions=DEFAULT_MAX_SUBSCRIPTIONS,
        maxChannelLength=DEFAULT_MAX_CHANNEL_LENGTH,
        publishToken=None,
        upstream=None,
        maxHeaders=DEFAULT_MAX_HEADERS,
        maxHeaderLength=DEFAULT_MAX_HEADER_LENGTH,
        maxConnections=DEFAULT_MAX_CONNECTIONS,
        maxPendingConnections=DEFAULT_MAX_PENDING_CONNECTIONS,
        maxSendBuffer=DEFAULT_MAX_SEND_BUFFER,
        slowConsumerGrace=DEFAULT_SLOW_CONSUMER_GRACE,
        handshakeTimeout=DEFAULT_HANDSHAKE_TIMEOUT,
        pingInterval=DEFAULT_PING_INTERVAL,
        pingTimeout=DEFAULT_PING_TIMEOUT,
        allowedOrigins=(),
        maxQueuedBytes=DEFAULT_MAX_QUEUED_BYTES,
        maxQueuedMessages=DEFAULT_MAX_QUEUED_MESSAGES,
        maxPublishChannels=DEFAULT_MAX_PUBLISH_CHANNELS,
        metricsToken=None,
        allowedHosts=(),
    ):
        """
        @param broker: an L{lhttp.interfaces.IBroker}; default: a new
            L{EmbeddedBroker} (one node, nothing else needed).
        @param reactor: the reactor; default: the global one.
        @param maxMessageSize: bytes; larger WebSocket messages close the
            connection with 1009, larger C{/publish} bodies get 413.
        @param maxSubscriptions: channels one connection may subscribe to.
        @param maxChannelLength: characters in a channel name.
        @param publishToken: if set, C{POST /publish} needs
            C{Authorization: Bearer <publishToken>}.
        @param upstream: an L{lhttp.interfaces.IUpstream} for the
            C{upstream} header (e.g. L{lhttp.upstream.makeUpstream});
            default: off, C{upstream} headers get a 403.
        @param maxHeaders: header lines per message (over: a 400 error reply).
        @param maxHeaderLength: bytes per start or header line (over: 400).
        @param maxConnections: connections at once, WebSockets and those
            still in their HTTP phase (over: 503 at the handshake).
        @param maxPendingConnections: connections still in their HTTP phase
            (not yet WebSockets) at once, under L{lhttp.site.LHTTPSite};
            over it the one in that phase longest is dropped with 503.
        @param maxSendBuffer: bytes queued for a client that does not read,
            beyond the kernel's and the transport's buffers; over it the
            client is closed with 1008 (a slow consumer).
        @param slowConsumerGrace: seconds a slow consumer has to read its
            close frame before the connection is dropped.
        @param handshakeTimeout: seconds for the WebSocket opening handshake,
            and, under L{lhttp.site.LHTTPSite}, for any request to arrive
            whole, from its first byte.
        @param pingInterval: seconds between keep-alive pings (0: none).
        @param pingTimeout: seconds a peer has to answer a ping before it
            is dropped as dead.
        @param allowedOrigins: Origin patterns browsers may connect from,
            besides the node's own origin (C{"*"}: any); see
            L{lhttp.origins}.
        @param maxQueuedBytes: bytes of messages a connection may have
            waiting behind one that waits (upstream slots, a Deferred, a
            cluster subscribe); over it the node stops reading from it.
        @param maxQueuedMessages: the same, in messages.
        @param maxPublishChannels: channels one publish may name (over:
            a 400 error reply, or 400 from C{/publish}).
        @param metricsToken: if set, C{GET /metrics} needs
            C{Authorization: Bearer <metricsToken>}.
        @param allowedHosts: host name patterns (C{*} wildcards; C{"*"}:
            any) requests may call the node by in their C{Host} header,
            besides C{localhost} and the address they connected to; others
            get 403 (DNS rebinding); see L{lhttp.hosts}.
        @raise ValueError: an C{allowedHosts} pattern is not a host name.
        """
        self.maxMessageSize = maxMessageSize
        self.maxSubscriptions = maxSubscriptions
        self.maxChannelLength = maxChannelLength
        self.publishToken = publishToken
        self.metricsToken = metricsToken
        self.maxHeaders = maxHeaders
        self.maxHeaderLength = maxHeaderLength
        self.maxConnections = maxConnections
        self.maxPendingConnections = maxPendingConnections
        self.maxSendBuffer = maxSendBuffer
        self.slowConsumerGrace = slowConsumerGrace
        self.handshakeTimeout = handshakeTimeout
        self.pingInterval = pingInterval
        self.pingTimeout = pingTimeout
        self.allowedOrigins = tuple(allowedOrigins)
        self.maxPublishChannels = maxPublishChannels
        self.hostPolicy = HostPolicy(allowedHosts)
        self.connections = set()
        self.metrics = Metrics(self)
        self.dispatcher = Dispatcher(self.metrics, maxQueuedBytes, maxQueuedMessages)
        for headerFilter in standardFilters():
            self.dispatcher.addFilter(headerFilter)
        # Last, so its request follows unsubscribe (SPEC section 2); user
        # filters are inserted before the built-in ones.
        self.upstream = upstream if upstream is not None else NoUpstream()
        self.dispatcher.addFilter(UpstreamFilter(self.upstream))
        self._userFilters = 0
        self.broker = broker if broker is not None else EmbeddedBroker()
        self.factory = LHTTPServerFactory(self, reactor=reactor)
        self.channels = Channels(self.broker, self.factory.prepareMessage)

    def connectionOpened(self, connection):
        self.connections.add(connection)
        self.dispatcher.connectionOpened(connection)

    def connectionClosed(self, connection):
        self.connections.discard(connection)
        self.dispatcher.connectionClosed(connection)

    def closeAll(self, clock, code=1001, reason="server shutting down", timeout=5.0):
        """
        Close every client WebSocket (1001 "going away" by default) and
        wait until they are closed, or C{timeout} seconds.

        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @return: a L{Deferred} that fires with the number still open then.
        """
        for connection in list(self.connections):
            connection.close(code, reason)
        done = Deferred()

        def check(deadline):
            if not self.connections or clock.seconds() >= deadline:
                done.callback(len(self.connections))
            else:
                clock.callLater(0.05, check, deadline)

        check(clock.seconds() + timeout)
        return done

    def addProcessor(self, command, processor):
        """
        Handle messages whose command is C{command} with an
        L{lhttp.interfaces.IProcessor}.
        """
        self.dispatcher.addProcessor(command, processor)

    def addFilter(self, headerFilter):
        """
        Add an L{lhttp.interfaces.IHeaderFilter}. User filters run before
        the built-in ones (multipart, subscribe, publish, unsubscribe), in
        the order they were added, so they can refuse a message first.
        """
        self.dispatcher.addFilter(headerFilter, self._userFilters)
        self._userFilters += 1

    def channelList(self, channels):
        return channelList(channels, self.maxChannelLength)

    def publishChannels(self, channels):
        """
        The checked channels of a publish.

        @raise lhttp.errors.BadChannel: a name is bad.
        @raise lhttp.errors.TooManyChannels: more than C{maxPublishChannels}.
        """
        names = channelList(channels, self.maxChannelLength)
        if len(names) > self.maxPublishChannels:
            raise TooManyChannels(
                f"a publish names {len(names)} channels; at most {self.maxPublishChannels} are allowed"
            )
        return names

    def publish(self, channels, payload, onFailure=None):
        """
        Publish serialized LHTTP bytes to channels, on every node.

        @param channels: names, or one space-separated string.
        @param onFailure: called with an L{lhttp.errors.LHTTPError} if the
            broker took the publish but could not confirm it later.
        @return: the checked channel names.
        @raise lhttp.errors.BadChannel: a name is bad.
        @raise lhttp.errors.TooManyChannels: too many channels.
        @raise lhttp.errors.BrokerUnavailable: the broker cannot take it.
        """
        names = self.publishChannels(channels)
        if not self.broker.ready:
            raise BrokerUnavailable("the message broker is not connected; publish refused")
        self.broker.publish(names, payload, onFailure)
        self.metrics.publishes += 1
        return names

    def resource(self, metrics=True):
        """
        @param metrics: also serve C{GET /metrics} in the tree; leave it out
            to serve it elsewhere (L{lhttp.resource.metricsRoot}).
        @return: the Resource tree: WebSocket on every path, C{publish}
            for HTTP publishing, C{health}, C{metrics}. Serve it with a
            L{twisted.web.server.Site} or mount it with C{putChild} in your
            own tree.
        """
        return LHTTPResource(self, metrics)
