"""
L{LHTTPServer}: one node's parts wired together, the processor registry,
the broker, the channel table, the WebSocket factory, and its Resource
tree.
"""

from lhttp.broker import EmbeddedBroker
from lhttp.channels import DEFAULT_MAX_CHANNEL_LENGTH, Channels, channelList
from lhttp.dispatch import Dispatcher
from lhttp.errors import BrokerUnavailable
from lhttp.filters import standardFilters
from lhttp.metrics import Metrics
from lhttp.protocol import LHTTPServerFactory
from lhttp.resource import LHTTPResource
from lhttp.upstream import NoUpstream, UpstreamFilter

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_MAX_SUBSCRIPTIONS = 1000


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
        """
        self.maxMessageSize = maxMessageSize
        self.maxSubscriptions = maxSubscriptions
        self.maxChannelLength = maxChannelLength
        self.publishToken = publishToken
        self.metrics = Metrics(self)
        self.dispatcher = Dispatcher(self.metrics)
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

    def publish(self, channels, payload, onFailure=None):
        """
        Publish serialized LHTTP bytes to channels, on every node.

        @param channels: names, or one space-separated string.
        @param onFailure: called with an L{lhttp.errors.LHTTPError} if the
            broker took the publish but could not confirm it later.
        @raise lhttp.errors.BadChannel: a name is bad.
        @raise lhttp.errors.BrokerUnavailable: the broker cannot take it.
        """
        names = self.channelList(channels)
        if not self.broker.ready:
            raise BrokerUnavailable("the message broker is not connected; publish refused")
        self.broker.publish(names, payload, onFailure)
        self.metrics.publishes += 1

    def resource(self):
        """
        @return: the Resource tree: WebSocket on every path, C{publish}
            for HTTP publishing. Serve it with a L{twisted.web.server.Site}
            or mount it with C{putChild} in your own tree.
        """
        return LHTTPResource(self)
