"""
C{twistd lhttp}'s service tree, made from the parsed options
(L{lhttp.options.Options}): the node, its listening ports, the broker's
connection and a graceful shutdown.

This is the one place that touches the global reactor.

Services stop in reverse order: ports first, then clients (1001), then
presence (its clients' entries deleted), then the broker; the node's one
NATS connection is drained last, so closing clients can still publish.

A port that cannot be opened (in use, no permission, a bad socket path)
stops C{twistd lhttp} at startup with one line saying which and why,
instead of a logged traceback and a process that runs on without it.
"""

import os
import socket
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


class ListenFailed(SystemExit, Exception):
    """
    A port could not be opened; the process should exit with status 1.

    It is a L{SystemExit}, so the interpreter exits with status 1 and no
    traceback. It is also an L{Exception}, so twistd's handling of a failed
    start runs on its way out: twistd removes its pid file and, when
    daemonizing, tells the waiting parent through its status pipe (the
    parent prints C{str()} of it and exits with 1).

    @ivar message: the one-line explanation.
    """

    def __init__(self, message):
        SystemExit.__init__(self, 1)
        self.message = message

    def __str__(self):
        return self.message


def describeError(error):
    """
    @return: the short reason of a failed listen, e.g. C{"address already
        in use"}, without Twisted's wrapping.
    """
    socketError = getattr(error, "socketError", error)
    text = getattr(socketError, "strerror", None) or str(error)
    return text[:1].lower() + text[1:]


def checkEndpoint(description):
    """
    Parse an endpoint description without listening, so a typo is reported
    while options are read.

    @raise ValueError: with a one-line reason, if it is not a server
        endpoint description (or names files that cannot be read).
    """
    try:
        # No reactor is needed to parse: the endpoint only keeps it.
        serverFromString(None, description)
    except Exception as error:
        raise ValueError(f"{description!r} is not a server endpoint: {describeError(error)}") from None


class ListeningService(StreamServerEndpointService):
    """
    Listens on one endpoint; failing to is fatal, and reported in one line.

    twistd calls L{privilegedStartService} before the reactor runs, so the
    failure surfaces as L{ListenFailed} out of twistd's startup, for the
    endpoints that listen at once (C{tcp}, C{ssl}, C{unix}).

    @ivar description: the endpoint description, as the operator wrote it.
    @ivar port: the L{twisted.internet.interfaces.IListeningPort} once
        listening, else L{None}.
    """

    def __init__(self, description, endpoint, factory, stderr=None):
        """
        @param description: the endpoint description, for messages.
        @param endpoint: the L{twisted.internet.interfaces.IStreamServerEndpoint}.
        @param factory: the protocol factory to serve.
        @param stderr: where the one-line error goes; default: the
            process's original standard error (twistd redirects
            C{sys.stderr} into its log).
        """
        StreamServerEndpointService.__init__(self, endpoint, factory)
        self.description = description
        self.port = None
        self._stderr = stderr
        self._waiting = []

    def privilegedStartService(self):
        """
        Listen now; raise L{ListenFailed} if the endpoint cannot.
        """
        self._raiseSynchronously = True
        try:
            StreamServerEndpointService.privilegedStartService(self)
        except Exception as error:
            raise self._failed(error) from None
        self._waitingForPort.addCallback(self._listening)

    def _failed(self, error):
        reason = describeError(error)
        log.critical(
            "Cannot listen on {endpoint}: {reason}; exiting", endpoint=self.description, reason=reason
        )
        message = f"lhttp: cannot listen on {self.description}: {reason}"
        stderr = self._stderr if self._stderr is not None else sys.__stderr__
        if stderr is not None:
            stderr.write(message + "\n")
            stderr.flush()
        return ListenFailed(message)

    def _listening(self, port):
        self.port = port
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)
        return port

    def whenListening(self):
        """
        @return: a L{Deferred} that fires with the listening port once
            there is one.
        """
        if self.port is not None:
            return succeed(self.port)
        d = Deferred()
        self._waiting.append(d)
        return d


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


class HeartbeatService(Service):
    """
    Every heartbeat interval: read the node's counters into its rates
    (L{lhttp.stats.NodeStats.tick}) and announce the node to the cluster
    (L{lhttp.brokers.heartbeat.NATSHeartbeat}), if it has one.
    """

    def __init__(self, stats, heartbeat, clock, interval):
        self._stats = stats
        self._heartbeat = heartbeat
        self._clock = clock
        self._interval = interval
        self._loop = None

    def beat(self):
        self._stats.tick()
        if self._heartbeat is not None:
            self._heartbeat.announce()

    def startService(self):
        Service.startService(self)
        self._loop = LoopingCall(self.beat)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False)

    def stopService(self):
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()


def makeAdmin(server, reactor, connection):
    """
    The node's figures for the admin page and its announcements to the
    cluster: with C{--admin-listen}, or on NATS (so that another node's
    page lists this one).

    @param server: the node's L{lhttp.server.LHTTPServer}.
    @param connection: its L{lhttp.brokers.connection.NATSConnection}, or
        L{None}.
    @return: C{(roster, service)}: the node's L{lhttp.roster.Roster} and
        the L{HeartbeatService} that keeps it.
    """
    from lhttp.roster import Roster
    from lhttp.stats import NodeStats

    config = server.config
    interval = config.heartbeatInterval
    # Five minutes of rates.
    stats = NodeStats(server.metrics, server.channels, reactor, keep=max(2, int(300 / interval)))
    roster = Roster(stats, reactor, server.describe, interval, cluster=connection is not None,
                    listen=config.endpoints())
    heartbeat = None
    if connection is not None:
        from lhttp.brokers.heartbeat import NATSHeartbeat

        heartbeat = NATSHeartbeat(connection, roster, config.natsPrefix,
                                  listen=bool(config.adminListen))
    return roster, HeartbeatService(stats, heartbeat, reactor, interval)


class NodeService(MultiService):
    """
    The node's services; says what the node runs once every port listens.

    @ivar lhttpServer: the node's L{lhttp.server.LHTTPServer}.
    """

    def __init__(self, server):
        MultiService.__init__(self)
        self.lhttpServer = server

    def startService(self):
        MultiService.startService(self)
        ports = [service for service in self if isinstance(service, ListeningService)]
        gatherResults([port.whenListening() for port in ports]).addCallback(self._listened, ports)

    def _listened(self, ignored, ports):
        server = self.lhttpServer
        processors = {command: _described(p) for command, p in sorted(server.dispatcher.processors.items())}
        filters = [_described(f) for f in server.dispatcher.filters]
        log.info(
            "lhttp node listening on {listen}; broker {broker}; processors {processors}; "
            "filters {filters}",
            listen=[port.description for port in ports],
            broker=server.broker.describe(),
            processors=processors,
            filters=filters,
        )


def _described(obj):
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def registerProcessors(server, filters, processors, plugins):
    """
    Add the operator's filters and processors to the node, then those of
    Twisted plugins for the commands still without one.

    @param filters: loaded L{lhttp.interfaces.IHeaderFilter}s.
    @param processors: C{(command, processor)}, loaded.
    @param plugins: L{lhttp.interfaces.IProcessorPlugin}s.
    """
    for headerFilter in filters:
        server.addFilter(headerFilter)
    for command, processor in processors:
        server.addProcessor(command, processor)
    for plugin in plugins:
        if server.dispatcher.getProcessor(plugin.command) is None:
            server.addProcessor(plugin.command, plugin.load())


def makeService(options):
    """
    @param options: parsed L{lhttp.options.Options}.
    @return: the node's L{NodeService}.
    """
    from twisted.internet import reactor

    from lhttp.engines import makeEngines
    from lhttp.plugin import processorPlugins
    from lhttp.server import LHTTPServer
    from lhttp.upstream.agent import makeUpstream
    from lhttp.web.demo import DemoFiles, DemoNicknames, demoDirectory

    config = options.config
    engines = makeEngines(config, reactor, name=f"lhttp {socket.gethostname()} pid={os.getpid()}")
    connection = engines.nats
    broker = presence = None
    if connection is not None:
        # Services of their own, stopped in order (see the module's
        # docstring); the embedded engines need none.
        broker = engines.broker
        presence = engines.presence if config.presence else None
    server = LHTTPServer(config, broker=engines.broker, reactor=reactor,
                         upstream=makeUpstream(reactor, config), presence=engines.presence,
                         nats=connection)
    registerProcessors(
        server, options.filters, options.processors,
        processorPlugins() if config.plugins else [],
    )
    root = server.resource(metrics=not config.metricsListen)
    if config.demo:
        root.putChild(b"demo", DemoFiles(demoDirectory()))
        server.addFilter(DemoNicknames())
    # No body in the node's tree is useful beyond a message: none is read
    # past that, or kept on disk.
    site = server.site(root, maxBodySize=config.maxMessageSize, logPath=config.accessLog)
    listen = [(description, site) for description in config.endpoints()]
    if config.metricsListen:
        listen.append((config.metricsListen, server.site(server.metricsResource())))
    heartbeat = None
    if config.adminListen or connection is not None:
        from lhttp.web.admin import adminRoot

        roster, heartbeat = makeAdmin(server, reactor, connection)
        if config.adminListen:
            listen.append((config.adminListen, server.site(
                adminRoot(roster, server.hostPolicy, config.adminToken), maxBodySize=0)))

    service = NodeService(server)
    if broker is not None:
        BrokerService(broker).setServiceParent(service)
    if presence is not None:
        # Stops after the clients closed, so their leaves are written.
        presence.setServiceParent(service)
    if heartbeat is not None:
        heartbeat.setServiceParent(service)
    ClientsService(server, reactor, config.shutdownTimeout).setServiceParent(service)
    for description, factory in listen:
        ListeningService(
            description, serverFromString(reactor, description), factory
        ).setServiceParent(service)
    return service
