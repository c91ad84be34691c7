"""
A node's one NATS connection, shared by the broker, its JetStream history
and the JetStream presence engine (issue 20, item 5).

L{NATSConnection} owns the nats-py client:

  - connects in the background, and on failure closes the failed client
    before it makes the next one, after a backoff (C{reconnectWait},
    doubling up to C{maxBackoff}); nats-py then reconnects it for ever;
  - a client nats-py gave up on (closed for good) is replaced, after
    C{reconnectWait};
  - URLs are redacted in logs and in C{describe()}; a problem is said in
    one line, again only when it changes or every C{complainEvery}
    seconds;
  - leaves cleanly (drains) once the last of its users stopped.

Its users (L{NATSConnection.watch}) are told when a client is connected
(C{onConnected(client)}, a new client or nats-py's reconnect), when it is
lost (C{onDisconnected()}) and when NATS dropped messages for one of their
subscriptions (C{onSlowConsumer(error)}). Each keeps its own writes (the
broker's publish queue, presence's write queue) and says its own readiness
(C{ready}, a callable), which C{describe()} reports, one section in
C{/health}.

It needs Twisted's asyncio reactor (nats-py is an asyncio library).
"""

import asyncio
import re
from itertools import count
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client as _NATSClient
from nats.errors import SlowConsumerError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger


# A history channel's live subject: this prefix and the channel's subject.
# The history stream re-publishes each message it stores there, with its
# position in NATS headers (lhttp.history.jetstream); nodes with local
# subscribers of the channel subscribe to it. The node's join and leave on
# a history channel are published there directly, so the stream, which
# keeps the channel's subject, neither stores nor replays them
# (docs/presence.rst): on a live subject, only messages with a stream
# position or the Lhttp-Node NATS header are delivered.
LIVE = "_lhttp_live."


# A header block in its everyday form: no status line, each line a name of
# printable ASCII (no space, no colon), a colon and a value. Anything else
# (a status such as C{NATS/1.0 503} or C{NATS/1.0 100 Idle Heartbeat}, a
# name nats-py would skip) is left to nats-py's own parser.
_PLAIN_HEADERS = re.compile(rb"NATS/1\.0\r\n(?:[!-9;-~]+:[^\r\n]*\r\n)*\r\n").fullmatch
_HEADER_LINE = re.compile(rb"([!-9;-~]+):([^\r\n]*)\r\n").findall
_HEAD_SIZE = len(b"NATS/1.0\r\n")


def parseHeaders(block):
    """
    A NATS header block (C{NATS/1.0\\r\\nName: value\\r\\n...\\r\\n}) as
    nats-py's own parser gives it (C{Client._process_headers}: names as
    sent, values stripped and decoded as UTF-8 with replacement, the last
    of a repeated name, L{None} for none), in a fraction of its time.

    @return: that C{dict}, or L{None} when there is no header, or
        C{NotImplemented} for a block not in the everyday form (a status
        line, a malformed line): nats-py's parser reads those.
    """
    if _PLAIN_HEADERS(block) is None:
        return NotImplemented
    headers = {}
    for name, value in _HEADER_LINE(block, _HEAD_SIZE):
        headers[name.decode()] = value.strip().decode("utf-8", "replace")
    return headers or None


# JetStream's acknowledgement of a publish, in the form nats-server writes
# it; any other (an error, a domain, a counter) is read by nats-py.
_PLAIN_ACK = re.compile(rb'\{"stream":"([^"\\]+)","seq":([0-9]{1,19})(,"duplicate": ?true)?\}').fullmatch


class FastJetStream(JetStreamContext):
    """
    nats-py's JetStream context, with a cheaper C{publish_async}: the
    reply token is a counter (nats-py draws random bytes for each, a
    system call), the future is the loop's, and no semaphore is taken per
    message; at most C{publish_async_max_pending} acknowledgements are
    awaited at once all the same (more wait until none is). An
    acknowledgement in nats-server's everyday form is read without JSON.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tokens = count()
        self._maxPending = kwargs.get("publish_async_max_pending", 4000)

    async def publish_async(self, subject, payload=b"", wait_stall=None, stream=None,
                            headers=None, msg_ttl=None):
        if stream is not None or msg_ttl is not None or wait_stall is not None:
            return await super().publish_async(subject, payload, wait_stall, stream, headers,
                                               msg_ttl)
        if not self._async_reply_prefix:
            await self._init_async_reply()
        futures = self._publish_async_futures
        completed = self._publish_async_completed_event
        while len(futures) >= self._maxPending:
            await completed.wait()
        # nats-py's _handle_async_reply finds the future by what follows
        # its reply prefix.
        token = "%x" % next(self._tokens)
        future = asyncio.get_running_loop().create_future()

        def done(future):
            futures.pop(token, None)
            if not futures:
                completed.set()

        future.add_done_callback(done)
        futures[token] = future
        completed.clear()
        await self._nc.publish(subject, payload, reply=self._replyPrefix + token, headers=headers)
        return future

    async def _init_async_reply(self):
        await super()._init_async_reply()
        self._replyPrefix = self._async_reply_prefix.decode()

    async def _handle_async_reply(self, msg):
        ack = None if msg.headers else _PLAIN_ACK(msg.data)
        if ack is None:
            return await super()._handle_async_reply(msg)
        future = self._publish_async_futures.get(msg.subject[len(self._replyPrefix):])
        if future is None or future.done():
            return
        stream, seq, duplicate = ack.groups()
        future.set_result(PubAck(stream=stream.decode(), seq=int(seq),
                                 duplicate=True if duplicate else None))


class NATS(_NATSClient):
    """
    The nats-py client, reading message headers with L{parseHeaders} (its
    own parser took most of the time of reading a history channel's live
    messages, which carry six headers), and publishing to JetStream with
    L{FastJetStream}.
    """

    async def _process_headers(self, headers):
        if headers:
            parsed = parseHeaders(headers)
            if parsed is not NotImplemented:
                return parsed
        return await super()._process_headers(headers)

    def jetstream(self, **options):
        return FastJetStream(self, **options)


def deferred(coroutine):
    """
    Run an asyncio coroutine (nats-py's) on Twisted's asyncio reactor.

    @return: a L{Deferred} of its result.
    """
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def redactURL(url):
    """
    A NATS URL fit for logs and C{/health}: a password or token in it is
    replaced by C{***}.
    """
    if not isinstance(url, str):
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    redacted = f"{user}:***" if colon else "***"
    return urlunsplit(parts._replace(netloc=f"{redacted}@{hostport}"))


def redactedError(error, servers):
    """
    An error's text with any server URL in it redacted.
    """
    text = str(error) or type(error).__name__
    for url in servers:
        redacted = redactURL(url)
        if redacted != url:
            text = text.replace(url, redacted)
    return text


class _User:
    __slots__ = ("name", "ready", "onConnected", "onDisconnected", "onSlowConsumer")

    def __init__(self, name, ready, onConnected, onDisconnected, onSlowConsumer):
        self.name = name
        self.ready = ready
        self.onConnected = onConnected
        self.onDisconnected = onDisconnected
        self.onSlowConsumer = onSlowConsumer


class NATSConnection:
    """
    @ivar servers: the NATS server URLs.
    @ivar client: the nats-py client now (connected or not), or L{None}
        before L{start}.
    @ivar connects: how many times a client was made (the first and every
        replacement): nats-py's own reconnects are C{reconnects}.
    """

    log = Logger()

    def __init__(self, servers, reactor, name="lhttp", pingInterval=1, maxOutstandingPings=2,
                 connectTimeout=2, reconnectWait=0.5, maxBackoff=5.0, complainEvery=10.0,
                 clientFactory=NATS):
        """
        @param name: the connection's name, shown by nats-server (C{/connz}).
        @param maxBackoff: the longest wait, in seconds, between two
            attempts to connect.
        @param complainEvery: seconds between two log lines about the same
            connection problem.
        """
        self.servers = list(servers)
        self._reactor = reactor
        self._name = name
        self._pingInterval = pingInterval
        self._maxOutstandingPings = maxOutstandingPings
        self._connectTimeout = connectTimeout
        self._reconnectWait = reconnectWait
        self._maxBackoff = maxBackoff
        self._complainEvery = complainEvery
        self._clientFactory = clientFactory
        self.client = None
        self.connects = 0
        self._users = []
        self._running = set()
        self._stopping = False
        self._stopped = None
        self._abandoned = None
        self._retry = None
        self._attempts = 0
        self._errors = 0
        self._problem = None
        self._lastComplaint = None

    # Users

    def watch(self, name, ready=None, onConnected=None, onDisconnected=None, onSlowConsumer=None):
        """
        Add a user of the connection.

        @param name: its name in C{describe()} (C{broker}, C{history},
            C{presence}).
        @param ready: a callable saying whether it is ready, or L{None}.
        @param onConnected: called with the client once it is connected (a
            new client, or nats-py reconnected it).
        @param onDisconnected: called when the connection is lost.
        @param onSlowConsumer: called with nats-py's C{SlowConsumerError}.
        """
        self._users.append(_User(name, ready, onConnected, onDisconnected, onSlowConsumer))

    @property
    def connected(self):
        client = self.client
        return client is not None and client.is_connected and not self._stopping

    def connectedURL(self):
        """
        @return: the URL connected to now, redacted, or L{None}.
        """
        client = self.client
        if client is None or client.connected_url is None:
            return None
        return redactURL(client.connected_url.geturl())

    @property
    def reconnects(self):
        client = self.client
        return client.stats["reconnects"] if client is not None else 0

    def redacted(self, error):
        return redactedError(error, self.servers)

    def describe(self):
        """
        @return: the connection's state and its users' readiness, for
            C{/health}.
        """
        document = {
            "connected": self.connectedURL(),
            "servers": [redactURL(url) for url in self.servers],
            "reconnects": self.reconnects,
            "connects": self.connects,
            "ready": {user.name: bool(user.ready()) for user in self._users
                      if user.ready is not None},
        }
        if self._problem is not None:
            document["problem"] = self._problem
        return document

    # Life

    def start(self, user="node"):
        """
        Connect in the background (once, however many users start it),
        retrying for ever.

        @param user: who starts it; the connection is left once every
            user that started it stopped (L{stop}).
        """
        self._running.add(user)
        if self.client is not None and not self._stopping:
            return
        self._stopping = False
        self._stopped = None
        self._connect()

    def stop(self, user="node"):
        """
        A user is done with the connection; the last one leaves NATS
        cleanly (drains subscriptions and pending writes).

        @return: a L{Deferred} that fires when that user may go on (at
            once while others still use the connection; once it is
            closed for the last).
        """
        self._running.discard(user)
        if self._running:
            return succeed(None)
        if self._stopped is not None:
            return self._stopped
        self._stopping = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        client = self.client
        if client is None or client.is_closed:
            return succeed(None)
        if client.is_connected:
            d = deferred(client.drain())
        else:
            d = deferred(client.close())
        d.addErrback(lambda f: self.log.warn("Leaving NATS: {e}", e=f.getErrorMessage()))
        self._stopped = d
        return d

    # The client

    def _connect(self):
        self._retry = None
        if self._stopping:
            return
        client = self.client = self._clientFactory()
        self.connects += 1
        d = deferred(client.connect(
            servers=self.servers,
            name=self._name,
            no_echo=True,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self._reconnectWait,
            connect_timeout=self._connectTimeout,
            ping_interval=self._pingInterval,
            max_outstanding_pings=self._maxOutstandingPings,
            skip_subject_validation=True,
            error_cb=self._onError,
            disconnected_cb=self._onDisconnected,
            reconnected_cb=self._onReconnected,
            closed_cb=self._closedCallback(client),
        ))
        d.addCallbacks(self._onConnected, self._connectFailed, (client,), None, (client,))

    def _onConnected(self, ignored, client):
        if client is not self.client:
            return
        self.log.info("Connected to NATS at {url}", url=self.connectedURL())
        self._solved()
        self._tell("onConnected", client)

    def _connectFailed(self, failure, client):
        if self._stopping or client is not self.client:
            return
        self._attempts += 1
        delay = min(self._maxBackoff, self._reconnectWait * 2 ** min(self._attempts - 1, 16))
        self._say("Connecting to NATS failed ({error}); trying again, waiting up to {most}s "
                  "between attempts; publishes and presence requests are refused until then",
                  failure.value)

        def again(ignored=None):
            if not self._stopping:
                self._retry = self._reactor.callLater(delay, self._connect)

        if not client.is_closed:
            # The next client only once this one is closed: never two at
            # once (the connection storm of issue 19).
            self._abandoned = client
            deferred(client.close()).addBoth(again)
        else:
            again()

    async def _onError(self, error):
        if isinstance(error, SlowConsumerError):
            self._tell("onSlowConsumer", error)
            return
        self._errors += 1
        self._say("NATS: {error} ({attempts} failed attempt(s) so far; still trying "
                  "{servers}; publishes are refused until connected)", error,
                  attempts=self._errors, servers=[redactURL(url) for url in self.servers])

    async def _onDisconnected(self):
        if not self._stopping:
            self.log.warn("Disconnected from NATS; publishes are refused until it is back")
        self._tell("onDisconnected")

    async def _onReconnected(self):
        client = self.client
        self.log.info("Reconnected to NATS at {url}", url=self.connectedURL())
        self._solved()
        # Out of nats-py's callback: the users' work runs on its own.
        self._reactor.callLater(0, self._tellIfCurrent, client)

    def _tellIfCurrent(self, client):
        if client is self.client and self.connected:
            self._tell("onConnected", client)

    def _closedCallback(self, client):
        async def closed():
            # Not one closed on purpose (stopping, a failed connect), nor
            # an older one: nats-py gave up on it.
            if self._stopping or client is not self.client or client is self._abandoned:
                return
            self.log.error("The NATS connection closed for good; starting a new one")
            self._tell("onDisconnected")
            self._retry = self._reactor.callLater(self._reconnectWait, self._connect)

        return closed

    def _tell(self, what, *args):
        for user in list(self._users):
            callback = getattr(user, what)
            if callback is None:
                continue
            try:
                callback(*args)
            except Exception:
                self.log.failure("NATS: telling the {user} {what}", user=user.name, what=what)

    # One line per problem

    def _say(self, text, error, **fields):
        """
        Log a connection problem in one line: again only when it changes,
        or every C{complainEvery} seconds while it lasts.
        """
        problem = self.redacted(error)
        now = self._reactor.seconds()
        if problem == self._problem and self._lastComplaint is not None \
                and now - self._lastComplaint < self._complainEvery:
            return
        self._problem = problem
        self._lastComplaint = now
        self.log.warn(text, error=problem, most=self._maxBackoff, **fields)

    def _solved(self):
        self._attempts = 0
        self._errors = 0
        self._problem = None
        self._lastComplaint = None
