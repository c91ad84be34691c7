"""
Prometheus metrics for one node, served at C{GET /metrics}.

The hot path only adds to plain integers (one dict or attribute update per
message and per publish, one per fan-out for the deliveries it made, never
per delivery); the Prometheus families are built from them when Prometheus
scrapes. Every L{Metrics} has its own
L{prometheus_client.CollectorRegistry}: two servers in one process share
nothing.

Metrics (counters end in C{_total} on the wire):

  - C{lhttp_connections}: open WebSocket connections (gauge).
  - C{lhttp_messages_received_total{command}}: LHTTP messages received, by
    command for commands with a registered processor;
    C{command="(unregistered)"} for every other command (pub/sub-only
    messages, and whatever a client makes up: clients choose commands, so
    only the operator's processors may add label values);
    C{command="(unparsed)"} for messages that did not parse.
  - C{lhttp_messages_sent_total}: messages written to one connection:
    replies, error replies, what processors send (fan-out is counted in
    C{lhttp_deliveries_total}).
  - C{lhttp_publishes_total}: publishes the broker took (WebSocket
    C{publish} headers, C{POST /publish}, processors' C{publish}).
  - C{lhttp_deliveries_total}: copies written to local subscribers.
  - C{lhttp_error_replies_total{status}}: C{LHTTP/1.0 error} replies, by
    status.
  - C{lhttp_http_publish_requests_total{status}}: C{POST /publish} answers,
    by HTTP status.
  - C{lhttp_slow_consumer_disconnects_total}: connections closed because
    they stopped reading and their send buffer filled
    (L{Metrics.slowConsumerDisconnected}).
  - C{lhttp_http_dropped_total{reason}}: connections dropped in their
    HTTP phase, before any WebSocket: C{deadline} (the request did not
    arrive whole within the handshake timeout), C{evicted} (the oldest
    pending one, to make room), C{refused} (no room at all).
  - C{lhttp_pending_connections}: connections in their HTTP phase (gauge).
  - C{lhttp_channels}: channels with local subscribers (gauge).
  - C{lhttp_broker_ready}: 1 while the broker takes publishes (gauge).
  - C{lhttp_broker_info{kind}}: always 1; C{kind} from the broker's
    C{describe()}.
  - C{lhttp_upstream_request_seconds{status}}: upstream request latency
    (histogram; L{Metrics.observeUpstream}).
  - C{process_*}: the process's CPU, memory and file descriptors (Linux).
"""

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource

from lhttp.web.bearer import checkBearer
from lhttp.errors import LHTTPError

UNPARSED = "(unparsed)"
UNREGISTERED = "(unregistered)"

UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """
    One node's counters, and the registry Prometheus scrapes.

    The server and its parts update the plain attributes directly; code
    outside (upstream, the send-buffer limit) calls the methods.

    @ivar registry: this node's L{CollectorRegistry}.
    @ivar connections: open WebSocket connections.
    @ivar received: command (or L{UNREGISTERED}, L{UNPARSED}) -> messages
        received.
    @ivar sent: messages written to one connection.
    @ivar publishes: publishes the broker took.
    @ivar errors: status -> error replies sent.
    @ivar httpPublishes: HTTP status -> C{POST /publish} answers.
    @ivar slowConsumerDisconnects: see L{slowConsumerDisconnected}.
    @ivar httpDropped: reason -> connections dropped in their HTTP phase.
    @ivar pendingConnections: connections in their HTTP phase, kept by
        L{lhttp.web.site.LHTTPSite}.
    """

    def __init__(self, processMetrics=True):
        """
        @param processMetrics: also export C{process_*} metrics.
        """
        self.connections = 0
        self.received = {}
        self.sent = 0
        self.publishes = 0
        self.errors = {}
        self.httpPublishes = {}
        self.slowConsumerDisconnects = 0
        self.httpDropped = {}
        self.pendingConnections = 0
        self._channels = None
        self._broker = None
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        if processMetrics:
            ProcessCollector(registry=self.registry)
        self.upstreamSeconds = Histogram(
            "lhttp_upstream_request_seconds",
            "Time from sending an upstream HTTP request to its response or failure.",
            ["status"],
            registry=self.registry,
            buckets=UPSTREAM_BUCKETS,
        )

    def track(self, channels, broker):
        """
        Read the channel table's deliveries and size and the broker's state
        at scrape time.

        @param channels: the node's L{lhttp.channels.Channels}.
        @param broker: the node's L{lhttp.interfaces.IBroker}.
        """
        self._channels = channels
        self._broker = broker

    def messageReceived(self, command):
        """
        Count one received message.

        @param command: its label: the command if it has a processor,
            L{UNREGISTERED} if not (the caller, which knows the processors,
            decides), or L{None} if the message did not parse.
        """
        received = self.received
        if command is None:
            command = UNPARSED
        received[command] = received.get(command, 0) + 1

    def errorSent(self, status):
        errors = self.errors
        errors[status] = errors.get(status, 0) + 1

    def httpPublishAnswered(self, status):
        answers = self.httpPublishes
        answers[status] = answers.get(status, 0) + 1

    def slowConsumerDisconnected(self):
        """
        The hook for the send-buffer limit: call it when a connection is
        closed because it stopped reading and its buffer filled.
        """
        self.slowConsumerDisconnects += 1

    def httpConnectionDropped(self, reason):
        """
        The hook for L{lhttp.web.site}: a connection was dropped in its HTTP
        phase, for C{reason} (C{"deadline"}, C{"evicted"}, C{"refused"}).
        """
        dropped = self.httpDropped
        dropped[reason] = dropped.get(reason, 0) + 1

    def observeUpstream(self, seconds, status):
        """
        The hook for upstream requests: call it once per request.

        @param seconds: from sending the request to its response or failure.
        @param status: the HTTP status (L{int}), or a short word for a
            failure without one: C{"timeout"}, C{"error"}.
        """
        self.upstreamSeconds.labels(str(status)).observe(seconds)

    def render(self):
        """
        @return: the Prometheus text exposition of every metric (L{bytes}).
        """
        return generate_latest(self.registry)


def _counter(name, documentation, value):
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def _gauge(name, documentation, value, labels=None):
    family = GaugeMetricFamily(name, documentation, labels=list(labels or ()))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _labelled(name, documentation, label, counts):
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items(), key=lambda item: str(item[0])):
        family.add_metric([str(value)], count)
    return family


class _Collector:
    """
    Builds the families of L{Metrics}' plain counters at scrape time.
    """

    def __init__(self, metrics):
        self._metrics = metrics

    def collect(self):
        m = self._metrics
        yield _gauge("lhttp_connections", "Open WebSocket connections.", m.connections)
        yield _labelled(
            "lhttp_messages_received", "LHTTP messages received, by command.",
            "command", m.received,
        )
        yield _counter(
            "lhttp_messages_sent",
            "Messages written to one connection (replies, error replies, processor sends).",
            m.sent,
        )
        yield _counter("lhttp_publishes", "Publishes the broker took.", m.publishes)
        yield _labelled(
            "lhttp_error_replies", "LHTTP error replies sent, by status.", "status", m.errors,
        )
        yield _labelled(
            "lhttp_http_publish_requests", "POST /publish answers, by HTTP status.",
            "status", m.httpPublishes,
        )
        yield _counter(
            "lhttp_slow_consumer_disconnects",
            "Connections closed because they stopped reading and their send buffer filled.",
            m.slowConsumerDisconnects,
        )
        yield _labelled(
            "lhttp_http_dropped", "Connections dropped in their HTTP phase, by reason.",
            "reason", m.httpDropped,
        )
        yield _gauge(
            "lhttp_pending_connections", "Connections in their HTTP phase, not yet WebSockets.",
            m.pendingConnections,
        )
        channels, broker = m._channels, m._broker
        if channels is None:
            return
        yield _counter(
            "lhttp_deliveries", "Copies of published messages written to local subscribers.",
            channels.deliveries,
        )
        yield _gauge(
            "lhttp_channels", "Channels with local subscribers.", len(channels.names())
        )
        yield _gauge(
            "lhttp_broker_ready", "1 while the broker takes publishes.", 1 if broker.ready else 0
        )
        try:
            kind = str(broker.describe().get("kind", "unknown"))
        except Exception:
            kind = "unknown"
        yield _gauge("lhttp_broker_info", "The broker in use.", 1, {"kind": kind})


class MetricsResource(Resource):
    """
    C{GET /metrics}: the Prometheus text exposition of a L{Metrics}.

    With a token, a scrape needs C{Authorization: Bearer <token>} (401
    without, 403 wrong): metrics tell an outsider how busy the node is and
    which processors it runs.
    """

    isLeaf = True

    def __init__(self, metrics, token=None):
        """
        @param metrics: the L{Metrics} to serve.
        @param token: the bearer token scrapers must show, or L{None}.
        """
        Resource.__init__(self)
        self._metrics = metrics
        self._token = token

    def render_GET(self, request):
        try:
            checkBearer(request, self._token, "metrics")
        except LHTTPError as error:
            request.setResponseCode(error.status)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"{error.status} {error.reason}: {error.detail}\n".encode("utf-8")
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return self._metrics.render()
