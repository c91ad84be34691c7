"""
C{twistd lhttp}: command-line options into a service tree.

This is the one place that touches the global reactor.
"""

import os
import socket

from twisted.application.service import MultiService, Service
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from lhttp.channels import DEFAULT_MAX_CHANNEL_LENGTH
from lhttp.dispatch import DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_MESSAGES
from lhttp.listening import ListeningService, checkEndpoint
from lhttp.demo import DemoFiles, demoDirectory
from lhttp.hosts import checkHostPattern
from lhttp.plugin import loadFilter, loadProcessor, processorPlugins
from lhttp.resource import metricsRoot
from lhttp.server import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_LENGTH,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PUBLISH_CHANNELS,
    DEFAULT_MAX_PENDING_CONNECTIONS,
    DEFAULT_MAX_SEND_BUFFER,
    DEFAULT_MAX_SUBSCRIPTIONS,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_SLOW_CONSUMER_GRACE,
    LHTTPServer,
)
from lhttp.site import LHTTPSite
from lhttp.upstream import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_RESPONSE,
    AllowList,
    makeUpstream,
    parseStaticHeader,
)
from lhttp.upstream import DEFAULT_TIMEOUT as DEFAULT_UPSTREAM_TIMEOUT

log = Logger()

DEFAULT_PORT = 8081
TOKEN_VARIABLE = "LHTTP_PUBLISH_TOKEN"
METRICS_TOKEN_VARIABLE = "LHTTP_METRICS_TOKEN"
NATS_VARIABLE = "LHTTP_NATS_URL"


def natsURLs(text):
    return [u.strip() for u in text.split(",") if u.strip()]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run an LHTTP server: WebSocket clients connect to any path "
        "(ws://host:8081/ or ws://host:8081/chat) and send LHTTP messages; "
        "the subscribe/publish/unsubscribe headers give pub/sub over channels; "
        "backends publish with POST /publish. Processors for commands are "
        "found as Twisted plugins (see lhttp.plugin) or named with --processor."
    )

    optFlags = [
        ["demo", None, "Also serve the chat-room demo and the JavaScript SDK at /demo/."],
        ["no-plugins", None, "Do not load processors from installed Twisted plugins."],
        ["upstream-relay", None, "Send the upstream backend's response back to the sender "
         "(an 'upstream' message with its status); default: only failures are told."],
    ]

    optParameters = [
        ["port", "p", None,
         f"TCP port to listen on, all interfaces (default {DEFAULT_PORT} if no --listen).", int],
        ["publish-token", None, None,
         "Require 'Authorization: Bearer <token>' on POST /publish. "
         f"Default: the {TOKEN_VARIABLE} environment variable; unset means no token."],
        ["metrics-token", None, None,
         "Require 'Authorization: Bearer <token>' on GET /metrics. "
         f"Default: the {METRICS_TOKEN_VARIABLE} environment variable; unset means no token."],
        ["metrics-listen", None, None,
         "Serve GET /metrics on this Twisted endpoint instead of on the --listen ones, "
         "e.g. tcp:9100:interface=127.0.0.1 (a port only the scraper reaches). "
         "Default: /metrics on every --listen endpoint."],
        ["max-message-size", None, DEFAULT_MAX_MESSAGE_SIZE,
         "Largest message in bytes: a larger WebSocket message closes the "
         "connection with 1009, a larger /publish body gets 413.", int],
        ["max-subscriptions", None, DEFAULT_MAX_SUBSCRIPTIONS,
         "Channels one connection may subscribe to (over it: a 429 error reply).", int],
        ["max-channel-length", None, DEFAULT_MAX_CHANNEL_LENGTH,
         "Longest channel name, in characters.", int],
        ["max-headers", None, DEFAULT_MAX_HEADERS,
         "Header lines per message (over it: a 400 error reply).", int],
        ["max-header-length", None, DEFAULT_MAX_HEADER_LENGTH,
         "Bytes per start or header line (over it: a 400 error reply).", int],
        ["max-connections", None, None,
         "Connections at once, WebSockets and those still in their HTTP phase; over it the "
         "handshake gets 503. "
         f"Default: {DEFAULT_MAX_CONNECTIONS}, or less if the open-files limit is lower.", int],
        ["max-publish-channels", None, DEFAULT_MAX_PUBLISH_CHANNELS,
         "Channels one publish may name, over WebSocket or /publish (over it: 400).", int],
        ["max-queued-bytes", None, DEFAULT_MAX_QUEUED_BYTES,
         "Bytes of messages one connection may have waiting while an earlier one waits "
         "(upstream, a Deferred, a cluster subscribe); over it the node stops reading "
         "from that client until half is handled.", int],
        ["max-queued-messages", None, DEFAULT_MAX_QUEUED_MESSAGES,
         "The same in messages.", int],
        ["max-pending-connections", None, DEFAULT_MAX_PENDING_CONNECTIONS,
         "Connections in their HTTP phase (not yet WebSockets: handshakes, /publish) at once. "
         "A new connection over this or --max-connections makes room by dropping the pending "
         "connection whose request started longest ago (a 503 if mid-request); if none can go, "
         "it gets 503 at once.", int],
        ["max-send-buffer", None, DEFAULT_MAX_SEND_BUFFER,
         "Bytes queued for a client that stops reading before it is closed with 1008 (slow consumer).", int],
        ["slow-consumer-grace", None, DEFAULT_SLOW_CONSUMER_GRACE,
         "Seconds a slow consumer has, after it is given up on, before its socket is dropped "
         "(time to read its 1008 close frame).", float],
        ["handshake-timeout", None, DEFAULT_HANDSHAKE_TIMEOUT,
         "Seconds a client has to finish the WebSocket opening handshake, and any HTTP "
         "request (a /publish body too) to arrive whole, from its first byte; then 408 "
         "and the connection is dropped.", float],
        ["ping-interval", None, DEFAULT_PING_INTERVAL,
         "Seconds between keep-alive pings to each client (0: none).", float],
        ["ping-timeout", None, DEFAULT_PING_TIMEOUT,
         "Seconds a client has to answer a ping before it is dropped as dead.", float],
        ["shutdown-timeout", None, 5.0,
         "On SIGTERM, seconds to wait for clients to close after the 1001 close frame.", float],
        ["access-log", None, None, "Write an HTTP access log to this file (default: none)."],
        ["upstream-timeout", None, DEFAULT_UPSTREAM_TIMEOUT,
         "Seconds an upstream request may take, body included (over it: a 504 error reply).", float],
        ["upstream-max-response", None, DEFAULT_MAX_RESPONSE,
         "Largest upstream response body relayed, in bytes (over it: a 502 error reply).", int],
        ["upstream-concurrency", None, DEFAULT_MAX_PENDING,
         "Upstream requests one connection may have in flight; its later messages wait.", int],
        ["nats-prefix", None, "",
         "Put channels under this NATS subject prefix (subject PREFIX.CHANNEL), to share a "
         "NATS account with other services. Default: none, subjects are the channel names, "
         "as the original Go nodes use them."],
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []
        self["processors"] = []
        self["upstream-allow"] = []
        self["upstream-targets"] = []
        self["upstream-headers"] = []
        self["nats"] = []
        self["allow-origin"] = []
        self["allow-host"] = []
        self["filters"] = []

    def opt_allow_origin(self, pattern):
        """Let browser pages from this origin connect, a pattern matched against scheme://host[:port], e.g. https://*.example.com; '*' allows any. Repeatable. By default only the node's own origin and clients that send no Origin (non-browsers) may connect; others get 403 at the handshake."""
        self["allow-origin"].append(pattern)

    def opt_allow_host(self, pattern):
        """Answer to this host name in the Host header, e.g. chat.example.com or *.example.com; '*' allows any. Repeatable. By default only the address a client connected to, localhost, *.localhost, 127.0.0.1 and [::1] are the node's names; a request (WebSocket handshake, /publish, /health...) calling it by another name gets 403, so a DNS rebinding page cannot reach it."""
        try:
            checkHostPattern(pattern)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["allow-host"].append(pattern)

    def opt_filter(self, name):
        """Add a header filter: the dotted name of an IHeaderFilter class, factory or instance, e.g. lhttp_examples.auth.TokenAuthFilter. Repeatable; filters run in the order given, before the built-in ones."""
        self["filters"].append(name)

    def opt_listen(self, description):
        """Listen on a Twisted endpoint, e.g. tcp:8081:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem or unix:/run/lhttp.sock. Repeatable. An endpoint that cannot be opened (in use, no permission) stops the node at startup with exit status 1."""
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_upstream_allow(self, prefix):
        """Allow 'upstream: METHOD URL' to URLs under this prefix: same scheme, host as written, port, and whole path segments, e.g. http://127.0.0.1:8080/api/. Repeatable. Without any, upstream headers get a 403."""
        self["upstream-allow"].append(prefix)

    def opt_upstream_target(self, spec):
        """Name an upstream target: NAME=URL, so clients write 'upstream: POST NAME'. Repeatable."""
        name, equals, url = spec.partition("=")
        if not equals or not name or not url:
            raise usage.UsageError(f"--upstream-target wants NAME=URL, not {spec!r}")
        self["upstream-targets"].append((name, url))

    def opt_upstream_header(self, line):
        """Add 'Name: value' to every upstream HTTP request (e.g. the backend's credentials). Repeatable."""
        try:
            self["upstream-headers"].append(parseStaticHeader(line))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def opt_nats(self, urls):
        """Join a cluster through NATS at these URLs (comma-separated, or repeat the option), e.g. nats://127.0.0.1:4222. Default: the LHTTP_NATS_URL environment variable (keeps credentials out of ps); without either the node uses its embedded broker. Needs the asyncio reactor, which this option installs."""
        self["nats"].extend(natsURLs(urls))

    def opt_processor(self, spec):
        """Handle a command with a processor: COMMAND=dotted.name of an IProcessor class, factory or instance. Repeatable; wins over a plugin for the same command."""
        command, equals, name = spec.partition("=")
        if not equals or not command or not name:
            raise usage.UsageError(f"--processor wants COMMAND=dotted.name, not {spec!r}")
        self["processors"].append((command, name))

    def postOptions(self):
        if not self["nats"]:
            self["nats"] = natsURLs(os.environ.get(NATS_VARIABLE, ""))
        if self["nats"]:
            useAsyncioReactor()
        if self["nats-prefix"]:
            from lhttp.natsbroker import checkPrefix

            try:
                checkPrefix(self["nats-prefix"])
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        if self["max-connections"] is None:
            self["max-connections"] = defaultMaxConnections()
        if self["port"] is not None:
            self["listen"].append(f"tcp:{self['port']}")
        if not self["listen"]:
            self["listen"].append(f"tcp:{DEFAULT_PORT}")
        endpoints = [("listen", description) for description in self["listen"]]
        if self["metrics-listen"]:
            endpoints.append(("metrics-listen", self["metrics-listen"]))
        for name, description in endpoints:
            try:
                checkEndpoint(description)
            except ValueError as e:
                raise usage.UsageError(f"--{name} {e}") from None
        if self["publish-token"] is None:
            self["publish-token"] = os.environ.get(TOKEN_VARIABLE) or None
        if self["metrics-token"] is None:
            self["metrics-token"] = os.environ.get(METRICS_TOKEN_VARIABLE) or None
        try:
            AllowList(self["upstream-allow"], self["upstream-targets"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        if self["upstream-timeout"] <= 0:
            raise usage.UsageError("--upstream-timeout must be positive")
        if self["handshake-timeout"] <= 0:
            raise usage.UsageError("--handshake-timeout must be positive")
        for name in ("max-message-size", "max-subscriptions", "max-channel-length",
                     "max-connections", "max-pending-connections",
                     "upstream-max-response", "upstream-concurrency", "max-publish-channels",
                     "max-queued-bytes", "max-queued-messages"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be a positive integer")


def defaultMaxConnections():
    """
    The default connection limit: L{DEFAULT_MAX_CONNECTIONS}, or what the
    open-files limit leaves room for (each client is a file descriptor).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(1, min(DEFAULT_MAX_CONNECTIONS, soft - 100))


def useAsyncioReactor():
    """
    nats-py runs on asyncio: install Twisted's asyncio reactor, unless a
    reactor is installed already, in which case it must be that one.
    """
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
        return
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise usage.UsageError(
            "--nats needs the asyncio reactor; leave out --reactor, or run "
            "'twistd --reactor=asyncio lhttp --nats ...'"
        )


class BrokerService(Service):
    """
    Starts the broker's connection with the node and leaves cleanly on stop.
    """

    def __init__(self, broker):
        self.broker = broker

    def startService(self):
        Service.startService(self)
        self.broker.start()

    def stopService(self):
        Service.stopService(self)
        return self.broker.stop()


class ClientsService(Service):
    """
    On shutdown, after the listening ports are closed: close every client
    with 1001 ("going away") and wait for them, at most C{timeout} seconds,
    so clients reconnect elsewhere knowing why.
    """

    def __init__(self, server, clock, timeout):
        self.server = server
        self.clock = clock
        self.timeout = timeout

    def stopService(self):
        Service.stopService(self)
        count = len(self.server.connections)
        if not count:
            return None
        log.info("Closing {count} client connection(s) with 1001", count=count)
        return self.server.closeAll(self.clock, timeout=self.timeout).addCallback(self._closed)

    def _closed(self, left):
        if left:
            log.warn("{left} client connection(s) did not close in time; dropped", left=left)


class NodeService(MultiService):
    """
    The node's services; says the node is listening once every port is.
    """

    def __init__(self, server, listen, metricsListen=None):
        """
        @param server: the node's L{LHTTPServer}.
        @param listen: the clients' endpoint descriptions, for the log.
        @param metricsListen: the C{/metrics} endpoint description, or
            L{None}.
        """
        MultiService.__init__(self)
        self.lhttpServer = server
        self._listen = list(listen)
        self._metricsListen = metricsListen

    def startService(self):
        MultiService.startService(self)
        ports = [service for service in self if isinstance(service, ListeningService)]
        gatherResults([port.whenListening() for port in ports]).addCallback(self._listened)

    def _listened(self, ignored):
        broker = self.lhttpServer.broker.describe()
        if self._metricsListen:
            log.info(
                "lhttp node listening on {listen} (/metrics on {metrics}), broker {broker}",
                listen=self._listen, metrics=self._metricsListen, broker=broker,
            )
        else:
            log.info("lhttp node listening on {listen}, broker {broker}", listen=self._listen, broker=broker)


class _QuietSite(LHTTPSite):
    """
    A Site with no per-request access log: publishing is per message, and
    logging each one costs more than the publish.
    """

    def log(self, request):
        pass


def registerProcessors(server, options):
    for name in options["filters"]:
        server.addFilter(loadFilter(name))
    for command, name in options["processors"]:
        server.addProcessor(command, loadProcessor(name))
    if options["no-plugins"]:
        return
    for plugin in processorPlugins():
        if server.dispatcher.getProcessor(plugin.command) is None:
            server.addProcessor(plugin.command, plugin.load())
            log.info(
                "Processor for {command!r} from plugin {plugin}",
                command=plugin.command, plugin=plugin.processor,
            )


def makeSite(root, server, options):
    # Before the upgrade a WebSocket is an HTTP request: the HTTP idle
    # timeout is the handshake timeout (lifted once the WebSocket takes
    # over; see lhttp.resource). No body in the node's tree is useful
    # beyond a message: none is read past that, or kept on disk.
    kwargs = dict(timeout=options["handshake-timeout"], maxBodySize=server.maxMessageSize)
    if options["access-log"]:
        return LHTTPSite(root, server, logPath=options["access-log"], **kwargs)
    return _QuietSite(root, server, **kwargs)


def makeService(options):
    from twisted.internet import reactor

    broker = None
    if options["nats"]:
        from lhttp.natsbroker import NATSBroker

        broker = NATSBroker(
            options["nats"], reactor, name=f"lhttp {socket.gethostname()} pid={os.getpid()}",
            prefix=options["nats-prefix"],
        )
    server = LHTTPServer(
        broker=broker,
        reactor=reactor,
        maxMessageSize=options["max-message-size"],
        maxSubscriptions=options["max-subscriptions"],
        maxChannelLength=options["max-channel-length"],
        publishToken=options["publish-token"],
        maxHeaders=options["max-headers"],
        maxHeaderLength=options["max-header-length"],
        maxConnections=options["max-connections"],
        maxPendingConnections=options["max-pending-connections"],
        maxSendBuffer=options["max-send-buffer"],
        slowConsumerGrace=options["slow-consumer-grace"],
        maxPublishChannels=options["max-publish-channels"],
        maxQueuedBytes=options["max-queued-bytes"],
        maxQueuedMessages=options["max-queued-messages"],
        handshakeTimeout=options["handshake-timeout"],
        pingInterval=options["ping-interval"],
        pingTimeout=options["ping-timeout"],
        allowedOrigins=options["allow-origin"],
        metricsToken=options["metrics-token"],
        allowedHosts=options["allow-host"],
        upstream=makeUpstream(
            reactor,
            options["upstream-allow"],
            options["upstream-targets"],
            timeout=options["upstream-timeout"],
            relay=bool(options["upstream-relay"]),
            maxResponse=options["upstream-max-response"],
            maxPending=options["upstream-concurrency"],
            staticHeaders=options["upstream-headers"],
        ),
    )
    registerProcessors(server, options)
    root = server.resource(metrics=not options["metrics-listen"])
    if options["demo"]:
        root.putChild(b"demo", DemoFiles(demoDirectory()))
    site = makeSite(root, server, options)
    listen = [(description, site) for description in options["listen"]]
    if options["metrics-listen"]:
        listen.append((options["metrics-listen"], _QuietSite(metricsRoot(server), server)))

    # Services stop in reverse order: ports first, then clients (1001),
    # then the broker (drained last, so closing clients can still publish).
    service = NodeService(server, options["listen"], options["metrics-listen"])
    if broker is not None:
        BrokerService(broker).setServiceParent(service)
    ClientsService(server, reactor, options["shutdown-timeout"]).setServiceParent(service)
    for description, factory in listen:
        ListeningService(
            description, serverFromString(reactor, description), factory
        ).setServiceParent(service)
    return service
