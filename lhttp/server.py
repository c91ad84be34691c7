"""
L{LHTTPServer}: one node. It wires its parts together from one
L{lhttp.config.Config} and is the one ingress for what clients send::

    bytes (a WebSocket message, a POST /publish body)
      -> LHTTPServer.receive: parse with the node's limits, split
         multipart, count                              (one ingress)
      -> a connection's Pipeline: filters, processor   (lhttp.dispatch)
      -> PubSub: channel checks, broker, channel table (lhttp.pubsub)
      -> Channels.deliver: framed once, one write per subscriber

Each part gets what it needs (a clock, the metrics, the
L{lhttp.interfaces.IPubSub}), not the node.
"""

from twisted.internet.defer import Deferred

from lhttp.auth.control import LocalControl
from lhttp.auth.guard import ChannelGuard, permissionsOn
from lhttp.auth.identity import Users
from lhttp.channels import Channels
from lhttp.codec import parse, parseMultipart
from lhttp.word import refuseForged
from lhttp.config import Config
from lhttp.connection import Connection
from lhttp.dispatch import Dispatcher
from lhttp.errors import LHTTPError
from lhttp.filters import standardFilters
from lhttp.engines import memoryEngines
from lhttp.history.processor import HistoryProcessor
from lhttp.metrics import UNREGISTERED, Metrics, MetricsResource
from lhttp.pubsub import PubSub
from lhttp.upstream.agent import NoUpstream
from lhttp.upstream.filter import UpstreamFilter
from lhttp.web.api import ControlResource
from lhttp.web.hosts import HostPolicy
from lhttp.web.resource import HealthResource, LHTTPResource, PublishResource, metricsRoot
from lhttp.web.site import LHTTPSite
from lhttp.web.websocket import LHTTPServerFactory


def subscriptionVerifier(authenticator):
    """
    How the node checks subscription tokens (C{channel-token}): with its
    JWT verifier's keys, C{sub} optional (an anonymous connection's token
    has none; the guard compares it with the connection's user).

    @return: C{token -> Deferred[claims]}, or L{None} when the node does
        not verify JWTs (the connect proxy): subscription tokens refused.
    """
    from lhttp.auth.jwt import JWTVerifier

    if not isinstance(authenticator, JWTVerifier):
        return None
    return lambda token: authenticator.verify(token, requireSub=False)


class LHTTPServer:
    """
    An LHTTP node.

    @ivar config: its L{lhttp.config.Config}.
    @ivar broker: the L{lhttp.interfaces.IBroker} (embedded by default).
    @ivar pubsub: the L{lhttp.interfaces.IPubSub} its parts publish and
        subscribe through.
    @ivar dispatcher: the L{lhttp.dispatch.Dispatcher}: processors and
        filters.
    @ivar factory: the Autobahn WebSocket server factory.
    @ivar metrics: this node's L{lhttp.metrics.Metrics} (C{GET /metrics}).
    @ivar connections: the open L{lhttp.connection.Connection}s.
    @ivar users: the L{lhttp.auth.Users} registry: each authenticated
        user's open connections here.
    @ivar authFilter: the L{lhttp.auth.filter.AuthFilter} when
        authentication is on, else L{None}.
    @ivar control: the L{lhttp.interfaces.IControl} behind C{/api}: this
        node's connections, and the other nodes' through NATS in a
        cluster.
    """

    def __init__(self, config=None, broker=None, reactor=None, upstream=None, presence=None,
                 nats=None, authenticator=None, verifySubscriptionToken=None):
        """
        @param config: the node's L{lhttp.config.Config} (default: the
            defaults).
        @param broker: an L{lhttp.interfaces.IBroker}; default: the
            embedded one, with its history and presence in memory
            (L{lhttp.engines.memoryEngines}: one node, nothing else needed).
        @param reactor: the reactor; default: the global one.
        @param upstream: an L{lhttp.interfaces.IUpstream} for the
            C{upstream} header (L{lhttp.upstream.makeUpstream} makes one
            from the config); default: off, C{upstream} headers get a 403.
        @param presence: an L{lhttp.interfaces.IPresence} for the channels
            of C{config.presence}; default: in memory.
        @param nats: the node's L{lhttp.brokers.connection.NATSConnection}
            (the broker's and presence's), whose state C{/health} shows;
            default: none.
        @param authenticator: an L{lhttp.interfaces.IAuthenticator};
            default: the one C{config}'s C{--auth-*} options describe, or
            none (authentication off).
        @param verifySubscriptionToken: C{token -> Deferred[claims]}, for
            the C{channel-token} header (L{lhttp.auth.guard}); default:
            the node's JWT verifier when it authenticates with JWTs, else
            subscription tokens are refused.
        """
        self.nats = nats
        self.config = config = config if config is not None else Config()
        self.metrics = Metrics()
        if broker is None:
            engines = memoryEngines(config, reactor)
            broker = engines.broker
            if presence is None:
                presence = engines.presence
        self.broker = broker
        self.hostPolicy = HostPolicy(config.allowHosts)
        self.connections = set()
        self.users = Users()
        self.factory = LHTTPServerFactory(self._open, config, self.metrics, reactor=reactor)
        self.channels = Channels(self.broker, self.factory.prepareMessage)
        self.metrics.track(self.channels, self.broker)
        self.pubsub = PubSub(
            self.broker, self.channels, self.metrics, config.maxChannelLength,
            config.maxPublishChannels,
        )
        self.dispatcher = Dispatcher(
            self.receive, self.metrics, config.maxQueuedBytes, config.maxQueuedMessages
        )
        # Authentication, first of all filters (user filters included):
        # nothing else sees a message of a connection that has not
        # authenticated.
        from lhttp.auth.filter import install as installAuth

        self.authFilter = installAuth(self, authenticator)
        self._userFilters = 0 if self.authFilter is None else 1
        if verifySubscriptionToken is None and self.authFilter is not None:
            verifySubscriptionToken = subscriptionVerifier(self.authFilter.authenticator)
        # Channel permissions (docs/security.rst): the L{ChannelGuard}
        # when on, before the built-in filters; None (no cost) when off.
        self.guard = None
        if permissionsOn(config, authenticated=self.authFilter is not None):
            self.guard = ChannelGuard(config.channels, verifySubscriptionToken,
                                      clock=self.factory.reactor)
            self.dispatcher.addFilter(self.guard)
            if self.authFilter is not None:
                self.authFilter.guard = self.guard
        for headerFilter in standardFilters():
            self.dispatcher.addFilter(headerFilter)
        # Last, so its request follows unsubscribe (SPEC section 2); user
        # filters are inserted before the built-in ones.
        self.upstream = upstream if upstream is not None else NoUpstream()
        # Autobahn's factory resolves the reactor (the global one if none
        # was given): the clock upstream requests are timed with.
        self.dispatcher.addFilter(UpstreamFilter(self.upstream, self.factory.reactor, self.metrics))
        self.control = LocalControl(self.users)
        if nats is not None:
            from lhttp.brokers.control import NATSControl

            self.control = NATSControl(self.control, nats, self.factory.reactor, config.natsPrefix)
        history = self.broker.history
        if history is not None:
            self.dispatcher.addProcessor(
                "history", HistoryProcessor(history, self.pubsub.checkChannels, config.maxMessageSize,
                                            self.guard),
                builtin=True,
            )
        # Who is subscribed (--presence, --presence-events; --demo's
        # rooms announce joins): the lhttp.presence.PresenceFilter, or None.
        self.presence = None
        if config.presence or config.presenceEvents or config.demo:
            from lhttp.presence import install

            self.presence = install(self, presence)
            # With authentication, presence names the authenticated user
            # only, never what anything else put in data["user"].
            self.presence.identified = self.authFilter is not None

    # The one ingress.

    def receive(self, data):
        """
        Bytes from a client, a WebSocket message or a C{POST /publish} body,
        into a message: parsed with the node's header limits, its
        C{multipart} body split with the same limits, and counted.

        @rtype: L{lhttp.codec.Message}
        @raise lhttp.errors.LHTTPError: what is wrong with it, with its
            C{command} when that could be read.
        """
        config = self.config
        try:
            message = parse(data, config.maxHeaders, config.maxHeaderLength)
            try:
                refuseForged(message)
            except LHTTPError as error:
                error.command = message.command
                raise
            offsets = message.getHeader("multipart")
            if offsets is not None:
                try:
                    message.parts = parseMultipart(
                        message.body, offsets, config.maxHeaders, config.maxHeaderLength
                    )
                except LHTTPError as error:
                    error.command = message.command
                    raise
        except LHTTPError:
            self.metrics.messageReceived(None)
            raise
        command = message.command
        self.metrics.messageReceived(
            command if self.dispatcher.getProcessor(command) is not None else UNREGISTERED
        )
        return message

    # Connections (the WebSocket factory's open).

    def _open(self, writer, peer, handshake):
        connection = Connection(
            writer, self.pubsub, self.metrics, self.config.maxSubscriptions, peer, handshake
        )
        self.connections.add(connection)
        return self.dispatcher.open(connection, writer, self._closed)

    def _closed(self, connection):
        self.connections.discard(connection)
        user = connection.identity.user
        if user is not None:
            self.users.remove(user, connection)

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

    # Processors and filters.

    def addProcessor(self, command, processor):
        """
        Handle messages whose command is C{command} with an
        L{lhttp.interfaces.IProcessor}.
        """
        self.dispatcher.addProcessor(command, processor)

    def addFilter(self, headerFilter):
        """
        Add an L{lhttp.interfaces.IHeaderFilter}. User filters run before
        the built-in ones (subscribe, publish, unsubscribe, upstream), in
        the order they were added, so they can refuse a message first.
        """
        self.dispatcher.addFilter(headerFilter, self._userFilters)
        self._userFilters += 1

    # Publishing from code.

    def publish(self, channels, command, headers=(), body=b""):
        """
        Publish a new message to channels, on every node: what
        L{lhttp.interfaces.IConnection.publish} and
        L{lhttp.publisher.publish} do too.

        @param channels: names, or one space-separated string.
        @return: the checked channel names.
        @raise lhttp.errors.LHTTPError: a bad channel name, too many
            channels, or the broker cannot take it.
        """
        return self.pubsub.publish(channels, command, headers, body)

    def publishBytes(self, channels, payload, onFailure=None):
        """
        Publish a serialized LHTTP message, verbatim, to channels.

        @param onFailure: called with an L{lhttp.errors.LHTTPError} if the
            broker took the publish but could not confirm it later.
        @return: the checked channel names.
        """
        return self.pubsub.publishBytes(channels, payload, onFailure)

    # The HTTP side.

    def resource(self, metrics=True):
        """
        The node's Resource tree: WebSocket upgrades on every path,
        C{publish}, C{api}, C{health} and C{metrics} for HTTP. Serve it with
        L{site}, or mount it with C{putChild} in your own tree.

        @param metrics: serve C{GET /metrics} in it (L{False} when it is
            served on a port of its own: L{metricsResource}).
        """
        root = LHTTPResource(self.factory, self.hostPolicy)
        config = self.config
        root.putChild(b"publish", PublishResource(
            self.receive, self.pubsub, self.metrics, config.publishToken, config.maxMessageSize,
            self.guard,
        ))
        root.putChild(b"api", ControlResource(
            self.control, config.publishToken, config.maxMessageSize, config.maxChannelLength))
        root.putChild(b"health", HealthResource(
            self.broker, self.presence.engine if self.presence is not None else None, self.nats))
        if metrics:
            root.putChild(b"metrics", MetricsResource(self.metrics, config.metricsToken))
        return root

    def describe(self):
        """
        @return: C{{"ready", "broker", "presence"}}: whether the broker takes
            publishes and what the broker (its history included) and the
            presence engine say of themselves, as C{/health} shows them.
        """
        presence = self.presence.engine if self.presence is not None else None
        return {
            "ready": bool(self.broker.ready),
            "broker": self.broker.describe(),
            "presence": presence.describe() if presence is not None else None,
        }

    def metricsResource(self):
        """
        The tree of a port that serves only C{GET /metrics}.
        """
        return metricsRoot(self.metrics, self.config.metricsToken)

    def site(self, root=None, **kwargs):
        """
        The L{twisted.web.server.Site} to serve a tree with this node's
        limits on the HTTP phase (L{lhttp.web.site.LHTTPSite}): bodies
        judged by their head and never spooled, a deadline per request, a
        cap on connections that are not WebSockets yet.

        @param root: the tree (default: L{resource}); mount L{resource} in
            yours to serve your pages and the node on one port.
        @param kwargs: for L{LHTTPSite} (C{logPath}, C{maxBodySize}...).
        """
        kwargs.setdefault("reactor", self.factory.reactor)
        return LHTTPSite(
            root if root is not None else self.resource(),
            self.config,
            webSockets=self.factory.getConnectionCount,
            metrics=self.metrics,
            **kwargs,
        )
