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
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
    SlowConsumerError,
)
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


# A subject or a Nats-Msg-Id written by hand: printable ASCII, no space.
_isToken = re.compile(r"[!-~]+").fullmatch


class StoredAcks:
    """
    The acknowledgements of history messages written together
    (L{FastJetStream.publishStored}).

    @ivar entries: C{(index, subject, payload, msgId)} as given.
    @ivar results: C{index -> PubAck} of those acknowledged.
    @ivar errors: C{index -> exception} of those refused.
    @ivar done: an asyncio future, resolved (with L{None}) once every
        entry is acknowledged or refused.
    """

    __slots__ = ("entries", "results", "errors", "done", "tokens")

    def __init__(self, entries, loop):
        self.entries = entries
        # The reply tokens awaited (FastJetStream's).
        self.tokens = []
        self.results = {}
        self.errors = {}
        self.done = loop.create_future()
        if not entries:
            self.done.set_result(None)

    def settle(self, index, ack=None, error=None):
        if index in self.results or index in self.errors:
            return
        if error is None:
            self.results[index] = ack
        else:
            self.errors[index] = error
        if len(self.results) + len(self.errors) == len(self.entries) and not self.done.done():
            self.done.set_result(None)

    def unsettled(self):
        """
        @return: the entries neither acknowledged nor refused.
        """
        return [e for e in self.entries if e[0] not in self.results and e[0] not in self.errors]


class FastJetStream(JetStreamContext):
    """
    nats-py's JetStream context, with cheaper publishes:

      - L{publishStored} writes a run of messages with a C{Nats-Msg-Id}
        at once (one header block formatted by hand, no coroutine, future
        or semaphore per message) and gathers their acknowledgements in
        one L{StoredAcks};
      - an acknowledgement in nats-server's everyday form is read as it
        arrives, without JSON, without a L{nats.aio.msg.Msg} and without a
        trip through the subscription's queue (L{NATS._process_msg}).

    At most C{publish_async_max_pending} acknowledgements are awaited at
    once all the same (more wait until none is). nats-py's own
    C{publish_async} works as before, its acknowledgements read the same
    way.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tokens = count()
        self._maxPending = kwargs.get("publish_async_max_pending", 4000)
        # token (bytes) -> (StoredAcks, index)
        self._stored = {}
        self._storedDrained = asyncio.Event()

    def _pending(self):
        return len(self._publish_async_futures) + len(self._stored)

    async def _room(self):
        if not self._async_reply_prefix:
            await self._init_async_reply()
        while self._pending() >= self._maxPending:
            if self._stored:
                self._storedDrained.clear()
                await self._storedDrained.wait()
            else:
                await self._publish_async_completed_event.wait()

    async def publishStored(self, entries):
        """
        Publish history messages, each with its C{Nats-Msg-Id}, in order.

        @param entries: C{(index, subject, payload, msgId)}: C{index} names
            the entry in the result.
        @return: their L{StoredAcks}; the messages are written (to the
            client's buffer) when this returns.
        @raise nats.errors.Error: as nats-py's C{publish} would, before any
            is written.
        """
        await self._room()
        nc = self._nc
        if nc.is_closed:
            raise ConnectionClosedError
        if nc.is_draining_pubs:
            raise ConnectionDrainingError
        size = sum(len(payload) for _, _, payload, _ in entries)
        if not nc.is_connected and (nc._max_pending_size <= 0
                                    or size + nc._pending_data_size > nc._max_pending_size):
            raise OutboundBufferLimitError
        for _, subject, payload, msgId in entries:
            if len(payload) > nc._max_payload:
                raise MaxPayloadError
            if _isToken(subject) is None or _isToken(msgId) is None:
                raise BadSubjectError
        acks = StoredAcks(entries, asyncio.get_running_loop())
        prefix = self._asyncPrefix
        stored = self._stored
        pending = nc._pending
        written = 0
        tokens = acks.tokens
        for index, subject, payload, msgId in entries:
            token = b"%x" % next(self._tokens)
            stored[token] = (acks, index)
            tokens.append(token)
            head = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msgId.encode()
            command = b"HPUB %s %s%s %d %d\r\n%s%s\r\n" % (
                subject.encode(), prefix, token, len(head), len(head) + len(payload), head, payload)
            pending.append(command)
            written += len(command)
        nc._pending_data_size += written
        nc.stats["out_msgs"] += len(entries)
        nc.stats["out_bytes"] += size
        if nc._max_pending_size > 0 and nc._pending_data_size > nc._max_pending_size:
            await nc._flush_pending(force_flush=True)
        elif nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()
        return acks

    def forget(self, acks):
        """
        Stop awaiting what is unsettled in C{acks} (timed out: the caller
        publishes it again).
        """
        for token in acks.tokens:
            self._takeStored(token)

    def _takeStored(self, token):
        """
        @return: the C{(StoredAcks, index)} awaiting C{token} (L{None}:
            none), no longer awaited.
        """
        waiting = self._stored.pop(token, None)
        if waiting is not None and not self._stored:
            self._storedDrained.set()
        return waiting

    async def _init_async_reply(self):
        self._publish_async_futures = {}
        prefix = self._nc._inbox_prefix[:]
        prefix.extend(b".")
        prefix.extend(self._nc._nuid.next())
        prefix.extend(b".")
        self._async_reply_prefix = prefix
        self._asyncPrefix = bytes(prefix)
        self._replyPrefix = self._asyncPrefix.decode()
        subscription = await self._nc.subscribe(self._replyPrefix + "*", cb=self._handle_async_reply)
        inline = getattr(self._nc, "inline", None)
        if inline is not None:
            inline[subscription._id] = self._ackArrived

    def _ackArrived(self, subject, data, headers):
        """
        An acknowledgement, as it arrives (L{NATS._process_msg}).

        @return: whether it was handled (else it goes the usual way, to
            L{_handle_async_reply}).
        """
        if headers:
            return False
        ack = _PLAIN_ACK(data)
        if ack is None:
            return False
        token = subject[len(self._asyncPrefix):]
        stream, seq, duplicate = ack.groups()
        result = PubAck(stream=stream.decode(), seq=int(seq), duplicate=True if duplicate else None)
        waiting = self._takeStored(token)
        if waiting is not None:
            waiting[0].settle(waiting[1], result)
            return True
        future = self._publish_async_futures.get(token.decode())
        if future is not None and not future.done():
            future.set_result(result)
        return True

    async def _handle_async_reply(self, msg):
        token = msg.subject[len(self._replyPrefix):]
        waiting = self._takeStored(token.encode())
        if waiting is None:
            return await super()._handle_async_reply(msg)
        # Not in the everyday form (an error, a status): read by nats-py,
        # through a future of its own.
        acks, index = waiting
        future = asyncio.get_running_loop().create_future()
        self._publish_async_futures[token] = future
        try:
            await super()._handle_async_reply(msg)
        except Exception as e:
            acks.settle(index, error=e)
            return
        finally:
            self._publish_async_futures.pop(token, None)
        if future.done():
            if future.exception() is not None:
                acks.settle(index, error=future.exception())
            else:
                acks.settle(index, future.result())


class NATS(_NATSClient):
    """
    The nats-py client, reading message headers with L{parseHeaders} (its
    own parser took most of the time of reading a history channel's live
    messages, which carry six headers), and publishing to JetStream with
    L{FastJetStream}.

    @ivar inline: subscription id -> C{handler(subject, data, headers)}:
        a message of that subscription is given to it as it is read (raw:
        C{bytes} subject, header block), before nats-py makes a message
        of it; a handler that returns false leaves it to nats-py.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inline = {}

    async def _process_msg(self, sid, subject, reply, data, headers):
        handler = self.inline.get(sid)
        if handler is not None and handler(subject, data, headers):
            self.stats["in_msgs"] += 1
            self.stats["in_bytes"] += len(data)
            return
        await super()._process_msg(sid, subject, reply, data, headers)

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
