"""
Presence cluster-wide, in a NATS JetStream key-value bucket.

One key per subscribed connection and channel,
C{<channel, escaped>.<client id>} (L{lhttp.presence.policy.escapeChannel}),
its value C{{"user": ...}} as JSON. The bucket keeps one revision per key
and drops what is older than the TTL (C{--presence-ttl}); every node
writes its own entries again every third of it, so a node that crashed
(nothing deletes its entries) has its clients gone from every list within
the TTL. A C{presence} request reads the channel's keys with an ordered
consumer that stops at the message the server says is the last pending.

It uses the node's one NATS connection
(L{lhttp.brokers.connection.NATSConnection}, shared with the broker and
its history; made and kept there: reconnects never stop, URLs are
redacted in logs), or one of its own when given none. Its writes are its
own: they go out in order, one coroutine at a time, apart from the
broker's publishes; the latest write of a key replaces one still waiting,
so what waits is bounded by the entries and while NATS is away nothing is
lost that the next refresh does not put back.
"""

import asyncio
import json
from collections import OrderedDict

from nats.js.api import DeliverPolicy
from nats.js.errors import BadRequestError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.brokers.connection import NATS, NATSConnection, deferred
from lhttp.errors import BrokerUnavailable, LHTTPError
from lhttp.interfaces import IPresence
from lhttp.presence.engine import Member
from lhttp.names import checkBucket
from lhttp.presence.policy import escapeChannel

# Writes sent together before their acknowledgements are awaited.
BATCH = 64

# The header nats-server (2.11 and later) puts on the markers it writes
# when a key's message expires or is removed.
MARKER_REASON = "Nats-Marker-Reason"


def keyFor(channel, client):
    """
    The key of a client's entry for a channel.
    """
    return f"{escapeChannel(channel)}.{client}"


@implementer(IPresence)
class JetStreamPresence(Service):
    """
    A presence engine on JetStream key-value, and the service that opens
    its bucket on the NATS connection and refreshes this node's entries.

    @ivar bucket: the bucket's name.
    @ivar ttl: seconds an entry lives unless written again.
    @ivar beforeStop: callables run first when the service stops.
    """

    log = Logger()

    def __init__(self, servers, reactor, bucket="LHTTP_PRESENCE", ttl=15.0, name="lhttp presence",
                 connectTimeout=2, reconnectWait=0.5, timeout=5.0, clientFactory=NATS,
                 maxBackoff=30.0, connection=None):
        """
        @param servers: NATS URLs.
        @param timeout: seconds a JetStream request, or a write waited for
            by a subscribing client, may take.
        @param maxBackoff: the longest wait, in seconds, between attempts to
            connect or to open the bucket.
        @param connection: the node's L{NATSConnection}, shared with the
            broker; default: one of its own.
        """
        self.servers = list(servers)
        if connection is None:
            connection = NATSConnection(
                servers, reactor, name=name, connectTimeout=connectTimeout,
                reconnectWait=reconnectWait, maxBackoff=maxBackoff, clientFactory=clientFactory,
            )
        self.connection = connection
        self.bucket = checkBucket(bucket)
        self.ttl = ttl
        self._reactor = reactor
        self._reconnectWait = reconnectWait
        self._timeout = timeout
        self._client = None
        self._kv = None
        self._js = None
        self._stopping = False
        # This node's entries: key -> value, written again every ttl/3.
        self._local = {}
        # Writes waiting: key -> [value or None (delete), waiters].
        self._pending = OrderedDict()
        self._writing = False
        self._broken = False
        self._complained = False
        self._opening = False
        self._retry = None
        self._announced = False
        self._problem = None
        self._bucketAttempts = 0
        self._maxBackoff = maxBackoff
        # Called first when the service stops (the presence filter's
        # leaveAll).
        self.beforeStop = []
        self._refresher = LoopingCall(self.refresh)
        self._refresher.clock = reactor
        self.written = 0
        self.failed = 0
        connection.watch("presence", ready=self._connected, onConnected=self._onConnected,
                         onDisconnected=self._onDisconnected)

    # IPresence

    def join(self, channel, member):
        key = keyFor(channel, member.client)
        value = json.dumps({"user": member.user} if member.user is not None else {}).encode()
        self._local[key] = value
        return self._write(key, value)

    def leave(self, channel, client):
        key = keyFor(channel, client)
        self._local.pop(key, None)
        return self._write(key, None)

    def members(self, channel):
        if not self._connected():
            return fail(BrokerUnavailable(
                "the presence store (NATS JetStream) is not reachable now; try again"
            ))
        return deferred(self._list(escapeChannel(channel))).addErrback(self._listFailed)

    async def _list(self, token):
        """
        The channel's entries: the last message of each of its keys, read
        with an ordered consumer of our own, until the message the server
        says is the last pending one. Not the key-value watcher: its "the
        current values are done" marker comes too early when the server
        delivered the values before the watcher looked at what was
        pending (nats-io/nats.py#842), and the list then missed clients.
        """
        prefix = f"$KV.{self.bucket}."
        done = asyncio.get_running_loop().create_future()
        entries = {}

        async def received(message):
            key = message.subject[len(prefix):]
            headers = message.headers or {}
            if headers.get(KV_OP) in (KV_DEL, KV_PURGE) or MARKER_REASON in headers:
                entries.pop(key, None)
            else:
                entries[key] = message.data
            if message.metadata.num_pending == 0 and not done.done():
                done.set_result(None)

        subscription = await self._js.subscribe(
            f"{prefix}{token}.*", stream=f"KV_{self.bucket}", cb=received,
            ordered_consumer=True, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=5.0,
        )
        try:
            info = await subscription.consumer_info()
            if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
                # The server has nothing for it, and sent nothing.
                if not done.done():
                    done.set_result(None)
            await asyncio.wait_for(asyncio.shield(done), self._timeout)
        finally:
            await subscription.unsubscribe()
        members = []
        for key, value in entries.items():
            try:
                user = json.loads(value or b"{}").get("user")
            except (ValueError, AttributeError):
                user = None
            members.append(Member(key.rpartition(".")[2], user))
        return sorted(members)

    def _listFailed(self, failure):
        if isinstance(failure.value, LHTTPError):
            return failure
        self.log.warn("Reading presence failed: {error}",
                      error=self.connection.redacted(failure.value))
        raise BrokerUnavailable("the presence store (NATS JetStream) did not answer; try again")

    # Writes

    def _connected(self):
        client = self._client
        return (self._kv is not None and client is not None and client.is_connected
                and not self._stopping)

    def _write(self, key, value):
        """
        Queue a write; the L{Deferred} fires once it is done, failed, or
        C{timeout} seconds passed (L{None} while NATS is away: the write
        waits for the connection, the client does not).
        """
        old = self._pending.pop(key, None)
        waiters = old[1] if old is not None else []
        waiter = None
        if self._connected():
            waiter = Deferred()
            waiters.append(waiter)
            self._reactor.callLater(self._timeout, _fire, [waiter])
        self._pending[key] = [value, waiters]
        self._kick()
        return waiter

    def _kick(self):
        if not self._writing and self._connected() and self._pending:
            self._writing = True
            deferred(self._writeAll()).addErrback(
                lambda f: self.log.failure("Writing presence failed", f)
            )

    async def _writeAll(self):
        try:
            while self._pending and self._connected():
                batch = []
                while self._pending and len(batch) < BATCH:
                    batch.append(self._pending.popitem(last=False))
                kv = self._kv
                results = await asyncio.gather(
                    *[kv.put(key, value) if value is not None else kv.delete(key)
                      for key, (value, waiters) in batch],
                    return_exceptions=True,
                )
                for (key, (value, waiters)), result in zip(batch, results):
                    if isinstance(result, Exception):
                        self._writeFailed(result)
                    else:
                        self.written += 1
                    _fire(waiters)
        finally:
            self._writing = False

    def _writeFailed(self, error):
        # A put is made again by the next refresh; a delete not made
        # expires with the TTL. The bucket is checked again then (a
        # nats-server that lost it, say).
        self.failed += 1
        self._broken = True
        if not self._complained:
            self._complained = True
            self.log.warn(
                "Writing presence to JetStream failed ({error}); retrying every {every}s",
                error=self.connection.redacted(error), every=self.ttl / 3,
            )

    def refresh(self):
        """
        Write every entry of this node again, so none expires while its
        client is connected.
        """
        if self._broken and self._connected():
            # A write failed: make sure of the bucket first.
            self._broken = False
            self._kv = None
            self._openBucketNow()
            return
        self._refreshNow()

    def _refreshNow(self):
        pending = self._pending
        for key, value in self._local.items():
            if key not in pending:
                pending[key] = [value, []]
        self._kick()

    # The connection

    def startService(self):
        Service.startService(self)
        self._stopping = False
        self.connection.start("presence")
        self._refresher.start(self.ttl / 3, now=False)

    def describe(self):
        """
        @return: a JSON-able L{dict} of this engine's state, for C{/health}.
        """
        description = {
            "kind": "jetstream", "ready": self._connected(), "bucket": self.bucket,
            "connected": self.connection.connectedURL(), "written": self.written, "failed": self.failed,
        }
        if self._problem is not None:
            description["problem"] = self._problem
        return description

    # The bucket is opened on each connection (a new client, or nats-py
    # reconnected: the server may have lost it), again with a backoff
    # while JetStream is not there (a nats-server without -js); each
    # problem is said once, in one line. The connection itself is
    # L{NATSConnection}'s.

    def _backoff(self, attempts):
        return min(self._maxBackoff, self._reconnectWait * 2 ** min(attempts, 16))

    def _onConnected(self, client):
        self._client = client
        self._complained = False
        # The server may have lost the bucket (no file store): make sure
        # of it, then write every entry again.
        self._kv = None
        self._openBucketNow()

    async def _openBucket(self):
        """
        Create the bucket, or give the one there this TTL.
        """
        js = self._client.jetstream(timeout=self._timeout)
        try:
            kv = await js.create_key_value(bucket=self.bucket, ttl=self.ttl, history=1)
        except BadRequestError:
            # It exists with another configuration (another TTL).
            info = await js.stream_info(f"KV_{self.bucket}")
            info.config.max_age = self.ttl
            await js.update_stream(info.config)
            kv = await js.key_value(self.bucket)
        self._js = js
        self._kv = kv

    def _openBucketNow(self):
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()
        client = self._client
        if self._opening or self._stopping or client is None or not client.is_connected:
            # Opened once (re)connected.
            return
        self._opening = True
        d = deferred(self._openBucket())
        d.addBoth(self._openEnded)
        d.addCallbacks(self._opened, self._bucketFailed)

    def _openEnded(self, result):
        self._opening = False
        return result

    def _opened(self, ignored):
        self._bucketAttempts = 0
        self._complained = False
        if self._problem is not None or not self._announced:
            self._announced = True
            self.log.info("Presence in JetStream bucket {bucket} (TTL {ttl}s) at {url}",
                          bucket=self.bucket, ttl=self.ttl, url=self.connection.connectedURL())
        self._problem = None
        self._refreshNow()

    def _bucketFailed(self, failure):
        if self._stopping:
            return
        self._bucketAttempts += 1
        self._say("Presence: the JetStream bucket cannot be opened ({error}): is JetStream "
                  "on (nats-server -js)? Presence requests get 503 until it is; trying again "
                  "with a backoff up to {most}s", failure.value)
        if self._retry is None or not self._retry.active():
            self._retry = self._reactor.callLater(
                self._backoff(self._bucketAttempts), self._openBucketNow)

    def _say(self, text, error):
        """
        Log a problem once: again only when it changes (or once it was
        solved and came back).
        """
        problem = self.connection.redacted(error)
        if problem != self._problem:
            self._problem = problem
            self.log.error(text, error=problem, most=self._maxBackoff)

    def _onDisconnected(self):
        # Nobody waits for a write while NATS is away: the writes stay
        # queued for the reconnect.
        for value, waiters in self._pending.values():
            _fire(waiters)
            del waiters[:]

    def stopService(self):
        """
        Write what waits (the leaves of the clients closed at shutdown),
        then leave NATS (the shared connection is drained once the broker
        stopped too).
        """
        Service.stopService(self)
        # Its clients leave first (their entries deleted, their leaves
        # published while the broker, stopped after this, still runs).
        for hook in self.beforeStop:
            try:
                hook()
            except Exception:
                self.log.failure("Presence: before stopping")
        if self._refresher.running:
            self._refresher.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        client = self._client
        if client is None or client.is_closed:
            self._stopping = True
            return self.connection.stop("presence")
        d = Deferred()
        deadline = self._reactor.seconds() + self._timeout

        def check():
            if (not self._pending and not self._writing) or not self._connected() \
                    or self._reactor.seconds() >= deadline:
                d.callback(None)
            else:
                self._reactor.callLater(0.05, check)

        check()

        def close(ignored):
            # The connection is left once the broker is done with it too.
            self._stopping = True
            return self.connection.stop("presence")

        return d.addCallback(close).addErrback(
            lambda f: self.log.warn("Presence: leaving NATS: {e}", e=f.getErrorMessage())
        )


def _fire(waiters):
    for waiter in waiters:
        if not waiter.called:
            waiter.callback(None)
