"""
Every option of a node in one place: L{Config}, frozen, each field with its
default, its command-line flag and its help.

L{lhttp.server.LHTTPServer} takes a L{Config}; C{twistd lhttp}'s options
(L{lhttp.options}) are made from its fields; the option table of
docs/options.rst is checked against them (L{optionTable} writes it). A limit changes in one
place::

    from lhttp import Config, LHTTPServer

    server = LHTTPServer(Config(maxSubscriptions=100, allowHosts=("chat.example.com",)))
"""

import resource as _rlimit

import attr

from lhttp.auth.keys import loadPublicKey
from lhttp.auth.permissions import checkRules, parseRule
from lhttp.history.policy import parseRetention
from lhttp.names import DEFAULT_MAX_CHANNEL_LENGTH, checkBucket, checkPrefix
from lhttp.patterns import checkPattern
from lhttp.upstream.urls import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RESPONSE,
    DEFAULT_TIMEOUT,
    HEADER_NAME as _HEADER_NAME,
    AllowList,
    parseStaticHeader,
    parseURL,
)
from lhttp.web.hosts import checkHostPattern

KiB = 1024
MiB = 1024 * 1024

DEFAULT_PORT = 8081
DEFAULT_LISTEN = f"tcp:{DEFAULT_PORT}:interface=127.0.0.1"
DEFAULT_MAX_CONNECTIONS = 10000


def _positive(instance, attribute, value):
    if value is not None and value <= 0:
        raise ValueError(
            f"{attribute.metadata['flag']} must be positive, not {value!r}: give a value above 0")


def _atLeastZero(instance, attribute, value):
    if value < 0:
        raise ValueError(
            f"{attribute.metadata['flag']} must be 0 or more, not {value!r}: give 0 or a value above")


def _field(default, flag, help, *, kind=None, show=None, env=None, short=None,
           repeat=None, validator=None, group="node", secret=False):
    """
    One option.

    @param default: its default (a tuple for a repeatable option).
    @param flag: the command-line flag, e.g. C{"--max-message-size"}.
    @param help: what it does, for C{--help} and the README.
    @param kind: how a command-line value is read: C{int}, C{float},
        C{str}, C{bool} (a flag without a value); default: the default's
        type.
    @param show: the default as people read it (C{"1 MiB"}).
    @param env: an environment variable C{twistd lhttp} reads when the
        flag is not given.
    @param short: a one-letter flag.
    @param repeat: for a repeatable option, a function reading one
        command-line value into one item (raising L{ValueError}).
    @param secret: it holds a secret: never in the L{Config}'s C{repr}.
    """
    metadata = {
        "flag": flag,
        "help": help,
        "kind": kind or (type(default) if default is not None and not repeat else str),
        "show": show,
        "env": env,
        "short": short,
        "repeat": repeat,
        "group": group,
    }
    validators = [validator] if validator else []
    return attr.ib(default=default, metadata=metadata, validator=validators, kw_only=True,
                   converter=tuple if repeat else None, repr=not secret)


def _pair(what, example):
    def read(text):
        name, equals, value = text.partition("=")
        if not equals or not name or not value:
            raise ValueError(f"{what} wants {example}, not {text!r}")
        return (name, value)
    return read


def _same(text):
    return text


def _urls(text):
    """
    Several NATS URLs in one value, comma-separated.
    """
    return [url.strip() for url in text.split(",") if url.strip()]


def _retention(text):
    return parseRetention(text)


def _presencePattern(text):
    return checkPattern(text, "--presence")


def _presencePatterns(instance, attribute, value):
    for pattern in value:
        checkPattern(pattern, attribute.metadata["flag"])


def _channelRules(instance, attribute, value):
    checkRules(value)


def _bucketName(instance, attribute, value):
    checkBucket(value, attribute.metadata["flag"])


def _header(text):
    return parseStaticHeader(text)


def _readFile(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {path!r}: {e.strerror}") from None


def _secretFile(path):
    """
    The HMAC secret in a file (a final line break is not part of it).
    """
    return _readFile(path, "JWT secret file").rstrip(b"\r\n").decode("utf-8", "surrogateescape")


def _publicKeyFile(path):
    """
    A PEM public key (or certificate) file, read and checked.
    """
    pem = _readFile(path, "JWT public key file")
    loadPublicKey(pem, path)
    return pem


def _secretGiven(instance, attribute, value):
    if value is not None and not value:
        raise ValueError(f"{attribute.metadata['flag']}: the JWT secret is empty")


def _publicKeys(instance, attribute, value):
    for pem in value:
        loadPublicKey(pem, attribute.metadata["flag"])


def _authURL(instance, attribute, value):
    if value is not None:
        try:
            parseURL(value)
        except ValueError as e:
            raise ValueError(f"{attribute.metadata['flag']} {value!r}: {e}") from None


# Headers that frame or route the request to the connect proxy: the node
# writes its own, a client's must never replace them.
PROXY_HEADERS_REFUSED = frozenset({
    "host", "content-length", "transfer-encoding", "content-type", "connection",
    "keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection",
    "expect",
})


def _headerName(text):
    name = text.strip()
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"--auth-proxy-header wants a header name, not {text!r}")
    if name.lower() in PROXY_HEADERS_REFUSED:
        raise ValueError(f"--auth-proxy-header {name}: the node writes that header of its "
                         "request to the connect proxy itself")
    return name


def _proxyHeaderNames(instance, attribute, value):
    for name in value:
        _headerName(name)


@attr.s(frozen=True, slots=True)
class Config:
    """
    A node's options. Every field is keyword-only, has a default, and is
    checked when the L{Config} is made (L{ValueError} naming the flag).
    """

    # Where it listens.
    listen = _field(
        (), "--listen", "Listen on a Twisted endpoint: tcp:8081:interface=0.0.0.0, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/run/lhttp.sock. Repeatable; "
        "an endpoint that cannot be opened stops the node at startup with exit status 1.",
        repeat=_same, show=DEFAULT_LISTEN, short="l", group="service",
    )
    port = _field(
        None, "--port", "Also listen on this TCP port on all interfaces (set a publish token "
        "before exposing a node).", kind=int, short="p", group="service",
        validator=_positive, show="none",
    )
    demo = _field(False, "--demo", "Serve the chat-room demo and the JavaScript SDK at /demo/ "
                  "(its rooms, room.*, get join/leave events unless --presence-events is given).",
                  group="service")
    accessLog = _field(None, "--access-log", "Write an HTTP access log to this file.", kind=str,
                       show="none", group="service")
    shutdownTimeout = _field(
        5.0, "--shutdown-timeout", "On SIGTERM, seconds clients have to close after the "
        "1001 close frame.", show="5 s", validator=_atLeastZero, group="service",
    )
    metricsListen = _field(
        None, "--metrics-listen", "Serve GET /metrics on this endpoint only (e.g. "
        "tcp:9100:interface=127.0.0.1), not on the clients' ports.", kind=str,
        show="the clients' ports", group="service",
    )
    adminListen = _field(
        None, "--admin-listen", "Serve the admin page (the cluster's nodes and their figures, "
        "live) and its JSON at /admin/ on this endpoint only (e.g. "
        "tcp:9101:interface=127.0.0.1).", kind=str, show="off", group="service",
    )
    heartbeatInterval = _field(
        2.0, "--heartbeat-interval", "Seconds between a node's announcements to the cluster "
        "(on NATS, for the admin page); a node silent for three is dropped from it.",
        show="2 s", validator=_positive, group="service",
    )

    # What it runs.
    processors = _field(
        (), "--processor", "Handle command C with processor NAME, as C=NAME (the dotted name "
        "of an IProcessor class, factory or instance). Repeatable; wins over a plugin.",
        repeat=_pair("--processor", "COMMAND=dotted.name"), show="none",
    )
    filters = _field(
        (), "--filter", "Add a header filter: the dotted name of an IHeaderFilter class, "
        "factory or instance. Repeatable; they run in this order, before the built-in ones.",
        repeat=_same, show="none",
    )
    plugins = _field(
        True, "--no-plugins", "Do not load processors from Twisted plugins (installed, or in "
        "./twisted/plugins).", show="load them",
    )

    # Messages.
    maxMessageSize = _field(
        MiB, "--max-message-size", "Bytes per message: larger closes the WebSocket with "
        "1009, a larger /publish body gets 413.", show="1 MiB", validator=_positive,
    )
    maxHeaders = _field(100, "--max-headers", "Header lines per message or multipart part "
                        "(over: 400, too many headers).", validator=_positive)
    maxHeaderLength = _field(8 * KiB, "--max-header-length", "Bytes per start or header line "
                             "(over: 400, header too long).", show="8 KiB", validator=_positive)
    maxSubscriptions = _field(1000, "--max-subscriptions", "Channels one connection may "
                              "subscribe to (over: 429).", validator=_positive)
    maxChannelLength = _field(DEFAULT_MAX_CHANNEL_LENGTH, "--max-channel-length", "Characters in a channel name "
                              "(over: 400, bad channel name).", validator=_positive)
    maxPublishChannels = _field(64, "--max-publish-channels", "Channels one publish may name, "
                                "over WebSocket or /publish (over: 400).", validator=_positive)
    maxQueuedBytes = _field(
        MiB, "--max-queued-bytes", "Bytes of messages a connection may have waiting behind "
        "one that waits (upstream, a Deferred, a cluster subscribe); over it the node stops "
        "reading from that client until half are handled.", show="1 MiB", validator=_positive,
    )
    maxQueuedMessages = _field(1000, "--max-queued-messages", "The same, in messages.",
                               validator=_positive)

    # Connections.
    maxConnections = _field(
        None, "--max-connections", "WebSockets and connections in their HTTP phase at once; "
        "over it the oldest pending one makes room, or the new one gets 503.", kind=int,
        show="10000 or the open-files limit less 100", validator=_positive,
    )
    maxPendingConnections = _field(
        1000, "--max-pending-connections", "Connections not yet WebSockets (handshakes, "
        "/publish) at once; over it the one whose request started longest ago is dropped.",
        validator=_positive,
    )
    handshakeTimeout = _field(10.0, "--handshake-timeout", "Seconds a request (a WebSocket "
                              "handshake, a /publish body) has to arrive whole (over: 408); "
                              "with authentication, also seconds a WebSocket has to "
                              "authenticate (over: close 4401).",
                              show="10 s", validator=_positive)
    pingInterval = _field(30.0, "--ping-interval", "Seconds between keep-alive pings "
                          "(0: none).", show="30 s", validator=_atLeastZero)
    pingTimeout = _field(20.0, "--ping-timeout", "Seconds a client has to answer a ping "
                         "before it is dropped as dead.", show="20 s", validator=_positive)
    maxSendBuffer = _field(MiB, "--max-send-buffer", "Bytes queued for a client that stops "
                           "reading before it is closed with 1008 (a slow consumer).",
                           show="1 MiB", validator=_positive)
    slowConsumerGrace = _field(10.0, "--slow-consumer-grace", "Seconds a slow consumer has "
                               "to read its 1008 close frame before its socket is dropped.",
                               show="10 s", validator=_atLeastZero)

    # Who may talk to it.
    allowOrigins = _field(
        (), "--allow-origin", "Let browser pages from this origin connect (scheme://host[:port], "
        "* wildcards; * for any). Repeatable. Default: the node's own origin and clients "
        "that send no Origin.", repeat=_same, show="own origin",
    )
    allowHosts = _field(
        (), "--allow-host", "Answer to this name in the Host header too (* wildcards; * for "
        "any). Repeatable. Default: the address connected to, localhost, *.localhost.",
        repeat=_same, show="own addresses",
    )
    publishToken = _field(None, "--publish-token", "Require 'Authorization: Bearer T' on "
                          "POST /publish.", kind=str, env="LHTTP_PUBLISH_TOKEN", show="none",
                          group="token", secret=True)
    metricsToken = _field(None, "--metrics-token", "Require 'Authorization: Bearer T' on "
                          "GET /metrics.", kind=str, env="LHTTP_METRICS_TOKEN", show="none",
                          group="token", secret=True)
    adminToken = _field(None, "--admin-token", "Require 'Authorization: Bearer T' on the admin "
                        "page's JSON (open the page as /admin/#token=T).", kind=str,
                        env="LHTTP_ADMIN_TOKEN", show="none", group="token", secret=True)

    # Channel permissions (docs/security.rst).
    channels = _field(
        (), "--channel", "Who may subscribe to (sub), publish to (pub), read the history "
        "(history) or presence (presence) of channels matching PATTERN, as "
        "'PATTERN=ACTION:WHO[|WHO...][,ACTION:WHO...]', WHO one of anyone, users, members, "
        "owner, token, nobody (e.g. 'user.{sub}=sub:owner,pub:nobody'). Repeatable; the "
        "first matching rule decides; once any is given, what no rule allows is refused (403; "
        "docs/security.rst).",
        repeat=parseRule, show="none", validator=_channelRules, group="auth",
    )

    # The cluster.
    nats = _field(
        (), "--nats", "Join a cluster through NATS at these URLs (comma-separated or "
        "repeated). Installs the asyncio reactor.", repeat=_urls, env="LHTTP_NATS_URL",
        show="embedded broker",
    )
    natsPrefix = _field(
        "", "--nats-prefix", "Put channels under this NATS subject prefix (PREFIX.channel), "
        "to share a NATS account; the original Go nodes use none.", show="none",
    )

    # History.
    history = _field(
        (), "--history", "Keep the last N messages (and none older than AGE: 90s, 15m, 1h, "
        "7d) of channels matching PATTERN (room.*, news.>), as PATTERN=N[,AGE] (or "
        "PATTERN=AGE: the last 1000); clients recover them (docs/history.rst). Repeatable. In memory, or JetStream with --nats.",
        repeat=_retention, show="none",
    )
    historyStream = _field(
        "LHTTP_HISTORY", "--history-stream", "The JetStream stream of the history, with "
        "--nats (made at startup; see --history-update-stream).",
    )
    historyMaxBytes = _field(
        64 * MiB, "--history-max-bytes", "Bytes of history kept, in memory or in the "
        "stream; the oldest go first.", show="64 MiB",
        validator=_positive,
    )
    historyUpdateStream = _field(
        False, "--history-update-stream", "With --nats: change the history stream's "
        "subjects and limits to this node's --history and --history-max-bytes when they "
        "differ; without it a node whose settings differ from the stream's refuses to start.",
        kind=bool,
    )

    # Presence.
    presence = _field(
        (), "--presence", "List who is subscribed to channels matching PATTERN, cluster-wide "
        "(docs/presence.rst). Repeatable. In memory, or JetStream key-value with --nats.",
        repeat=_presencePattern, show="none", validator=_presencePatterns,
    )
    presenceEvents = _field(
        (), "--presence-events", "Send join and leave messages to the subscribers of channels "
        "matching PATTERN. Repeatable.", repeat=_presencePattern, show="none",
        validator=_presencePatterns,
    )
    presenceTTL = _field(
        15.0, "--presence-ttl", "Seconds a crashed node's presence entries last, with --nats.",
        show="15 s", validator=_positive,
    )
    presenceBucket = _field(
        "LHTTP_PRESENCE", "--presence-bucket", "The JetStream key-value bucket of presence, "
        "with --nats.", validator=_bucketName,
    )

    # Upstream.
    upstreamAllow = _field(
        (), "--upstream-allow", "Allow 'upstream: METHOD URL' under this URL prefix. "
        "Repeatable; without any, upstream headers get 403.", repeat=_same, show="none",
    )
    upstreamTargets = _field(
        (), "--upstream-target", "Name an upstream target, NAME=URL, so clients write "
        "'upstream: POST NAME'. Repeatable.",
        repeat=_pair("--upstream-target", "NAME=URL"), show="none",
    )
    upstreamHeaders = _field(
        (), "--upstream-header", "Add 'Name: value' to every upstream request (the backend's "
        "credentials). Repeatable.", repeat=_header, show="none",
    )
    upstreamTimeout = _field(DEFAULT_TIMEOUT, "--upstream-timeout", "Seconds an upstream request may "
                             "take, body included (over: 504).", show="10 s",
                             validator=_positive)
    upstreamRelay = _field(False, "--upstream-relay", "Send the backend's response back to "
                           "the sender (default: only failures are told).")
    upstreamMaxResponse = _field(DEFAULT_MAX_RESPONSE, "--upstream-max-response", "Largest upstream "
                                 "response relayed, in bytes (over: 502).", show="64 KiB",
                                 validator=_positive)
    upstreamConcurrency = _field(DEFAULT_CONCURRENCY, "--upstream-concurrency", "Upstream requests one "
                                 "connection may have in flight; its later messages wait.",
                                 validator=_positive)

    # Authentication (docs/authentication.rst).
    authJwtSecret = _field(
        None, "--auth-jwt-secret-file", "Authenticate connections with JWTs signed with the "
        "HMAC secret in this file (HS256, HS384, HS512); clients send 'LHTTP/1.0 connect' "
        "with a 'token' header first.", kind=_secretFile, env="LHTTP_AUTH_JWT_SECRET",
        show="none", validator=_secretGiven, group="auth", secret=True,
    )
    authJwtPublicKeys = _field(
        (), "--auth-jwt-public-key", "Authenticate connections with JWTs signed with the "
        "private key of this PEM public key (RSA: RS*, PS*; EC: ES*; Ed25519, Ed448: "
        "EdDSA). Repeatable.", repeat=_publicKeyFile, show="none", validator=_publicKeys,
        group="auth",
    )
    authJwksURL = _field(
        None, "--auth-jwks-url", "Authenticate connections with JWTs signed with the keys "
        "of this JWKS document (fetched, cached, fetched again for an unknown kid at most "
        "every 30 s).", kind=str, show="none", validator=_authURL, group="auth",
    )
    authAudience = _field(None, "--auth-audience", "Accept only JWTs whose 'aud' names this "
                          "audience.", kind=str, show="any", group="auth")
    authIssuer = _field(None, "--auth-issuer", "Accept only JWTs whose 'iss' is this issuer.",
                        kind=str, show="any", group="auth")
    authLeeway = _field(5.0, "--auth-leeway", "Seconds of clock difference allowed on a "
                        "JWT's exp, nbf and iat.", show="5 s", validator=_atLeastZero,
                        group="auth")
    authProxy = _field(
        None, "--auth-proxy", "Authenticate connections by POSTing their handshake's cookies "
        "(and --auth-proxy-header headers) to this URL of the application's backend.",
        kind=str, show="none", validator=_authURL, group="auth",
    )
    authProxyHeaders = _field(
        (), "--auth-proxy-header", "Also send this handshake header to the connect proxy "
        "(Cookie always is; its value is the client's: trust it no more than a cookie). "
        "Repeatable.", repeat=_headerName, show="Cookie", validator=_proxyHeaderNames,
        group="auth",
    )
    authProxyTimeout = _field(5.0, "--auth-proxy-timeout", "Seconds the connect proxy has to "
                              "answer (over: 503, close 4503).", show="5 s",
                              validator=_positive, group="auth")
    authRefreshGrace = _field(10.0, "--auth-refresh-grace", "Seconds a connection whose "
                              "credential expired keeps working, waiting for a 'refresh' "
                              "(then: close 4419).", show="10 s", validator=_atLeastZero,
                              group="auth")
    authAnonymous = _field(False, "--auth-anonymous", "With authentication on, let "
                           "connections that never send 'connect' in, as anonymous, instead "
                           "of refusing their messages.", group="auth")

    def __attrs_post_init__(self):
        _checkPatterns(self)

    @property
    def authMethod(self):
        """
        @return: how connections authenticate: C{"jwt"}, C{"proxy"}, or
            L{None} (off).
        """
        if self.authProxy is not None:
            return "proxy"
        if self.authJwtSecret is not None or self.authJwtPublicKeys or self.authJwksURL:
            return "jwt"
        return None

    def endpoints(self):
        """
        @return: the endpoint descriptions clients connect to: C{listen}
            and C{port}, or the loopback default if neither is set.
        """
        endpoints = list(self.listen)
        if self.port is not None:
            endpoints.append(f"tcp:{self.port}")
        return endpoints or [DEFAULT_LISTEN]

    def connectionLimit(self):
        """
        @return: C{maxConnections}, or by default 10000 or what the
            open-files limit leaves room for (each client is a file
            descriptor).
        """
        if self.maxConnections is not None:
            return self.maxConnections
        soft, hard = _rlimit.getrlimit(_rlimit.RLIMIT_NOFILE)
        if soft == _rlimit.RLIM_INFINITY:
            return DEFAULT_MAX_CONNECTIONS
        return max(1, min(DEFAULT_MAX_CONNECTIONS, soft - 100))


def _checkPatterns(config):
    """
    What one field's validator cannot see alone: names and URLs that must
    parse, checked once, so a node never starts with a bad one.
    """
    for pattern in config.allowHosts:
        checkHostPattern(pattern)
    AllowList(config.upstreamAllow, config.upstreamTargets)
    if config.natsPrefix:
        checkPrefix(config.natsPrefix)
    if config.authProxy is not None and (
        config.authJwtSecret is not None or config.authJwtPublicKeys or config.authJwksURL
    ):
        raise ValueError(
            "--auth-proxy and --auth-jwt-*/--auth-jwks-url (or $LHTTP_AUTH_JWT_SECRET) are two "
            "authentication methods; a node uses one"
        )
    if config.authAnonymous and config.authMethod is None:
        raise ValueError("--auth-anonymous needs an authentication method (--auth-jwt-*, "
                         "--auth-jwks-url or --auth-proxy)")


def options():
    """
    @return: every option's C{attr.Attribute}, in the order of L{Config}.
    """
    return attr.fields(Config)


def showDefault(field):
    """
    A field's default as people read it.
    """
    meta = field.metadata
    if meta["show"] is not None:
        return meta["show"]
    if meta["kind"] is bool:
        return "off" if not field.default else "on"
    return str(field.default)


def optionTable():
    """
    @return: the option table of docs/options.rst (reStructuredText), one row
        per option: the flag, its default, what it does.
    """
    rows = [("option", "default", "meaning")]
    for field in options():
        meta = field.metadata
        flag = meta["flag"]
        if meta["kind"] is not bool:
            flag += " " + _metavar(field)
        env = f" Default from ${meta['env']}." if meta["env"] else ""
        # reStructuredText: a bare * would start emphasis, a | a substitution.
        meaning = (meta["help"] + env).replace("*", "\\*").replace("|", "\\|")
        rows.append((f"``{flag}``", showDefault(field), meaning))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    rule = "  ".join(["=" * widths[0], "=" * widths[1], "=" * 72])
    lines = [rule]
    for number, (flag, default, meaning) in enumerate(rows):
        words = meaning.split()
        chunks, line = [], ""
        for word in words:
            if line and len(line) + 1 + len(word) > 72:
                chunks.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        chunks.append(line)
        lines.append(f"{flag:<{widths[0]}}  {default:<{widths[1]}}  {chunks[0]}".rstrip())
        indent = " " * (widths[0] + widths[1] + 4)
        lines.extend(indent + chunk for chunk in chunks[1:])
        if number == 0:
            lines.append(rule)
    lines.append(rule)
    return "\n".join(lines) + "\n"


def _metavar(field):
    name = field.metadata["flag"]
    if name in ("--processor",):
        return "C=NAME"
    if name in ("--upstream-target",):
        return "NAME=URL"
    if name in ("--channel",):
        return "RULE"
    if name in ("--upstream-header",):
        return "'NAME: VALUE'"
    if name in ("--auth-jwt-secret-file", "--auth-jwt-public-key"):
        return "PATH"
    if name in ("--auth-jwks-url", "--auth-proxy"):
        return "URL"
    if name in ("--auth-proxy-header",):
        return "NAME"
    kind = field.metadata["kind"]
    if kind is int:
        return "N"
    if kind is float:
        return "SECONDS"
    return "VALUE"
