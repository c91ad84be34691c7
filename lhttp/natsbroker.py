"""
The NATS broker: many nodes share channels through NATS (SPEC section 6).

Wire-compatible with the original Go nodes: the NATS subject is the channel
name and the payload is the serialized LHTTP message.

- One NATS subscription per channel with local subscribers, removed when
  the last one leaves; fan-out is local.
- The connection is made with C{no_echo}: a node delivers its own publishes
  to its local subscribers itself, once, and NATS does not send them back.
- Nothing is accepted silently: while NATS is not connected, publishes are
  refused (L{BrokerUnavailable}); publishes taken are confirmed by a
  PING/PONG round trip per batch, and a batch that is not confirmed in
  C{flushTimeout} seconds is reported to its publishers.
- Reconnects never stop; NATS hung (no PONG) is detected by pings within
  about C{pingInterval * (maxOutstandingPings + 1)} seconds.
- After a reconnect the node restores its subscriptions, then waits
  C{settle} seconds before it takes publishes again, so the other nodes
  have re-subscribed too; and it tells its local subscribers, per channel,
  that messages published elsewhere during the outage may have been missed
  (an C{LHTTP/1.0 error} notice with status 503 and a C{channel} header).

It needs Twisted's asyncio reactor (nats-py is an asyncio library).
"""

import asyncio
import time

from nats.aio.client import Client as NATS
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.channels import missedNotice
from lhttp.errors import BrokerUnavailable, MessageTooLarge
from lhttp.interfaces import IBroker


def _future(coroutine):
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


class _Batch:
    """
    The publishes taken in one reactor turn, confirmed together.
    """

    __slots__ = ("messages", "failureCallbacks", "waiters")

    def __init__(self):
        self.messages = []
        self.failureCallbacks = []
        self.waiters = []


@implementer(IBroker)
class NATSBroker:
    """
    @ivar servers: the NATS server URLs.
    """

    log = Logger()

    def __init__(
        self,
        servers,
        reactor,
        name="lhttp",
        pingInterval=1,
        maxOutstandingPings=2,
        connectTimeout=2,
        reconnectWait=0.5,
        flushTimeout=3,
        settle=2.0,
        clientFactory=NATS,
    ):
        self.servers = list(servers)
        self._reactor = reactor
        self._name = name
        self._pingInterval = pingInterval
        self._maxOutstandingPings = maxOutstandingPings
        self._connectTimeout = connectTimeout
        self._reconnectWait = reconnectWait
        self._flushTimeout = flushTimeout
        self._settle = settle
        self._readyAt = None
        self._interrupted = False
        self._clientFactory = clientFactory
        self._client = None
        self._deliver = None
        self._wanted = set()
        self._subscriptions = {}
        self._batch = None
        self._stopping = False
        self._failedAttempts = 0
        self._lastComplaint = 0.0
        self.published = 0
        self.received = 0
        self.refused = 0
        self.unconfirmed = 0

    # IBroker

    def _connected(self):
        client = self._client
        return client is not None and client.is_connected and not self._stopping

    @property
    def ready(self):
        readyAt = self._readyAt
        return readyAt is not None and self._reactor.seconds() >= readyAt and self._connected()

    def describe(self):
        client = self._client
        return {
            "kind": "nats",
            "ready": self.ready,
            "servers": self.servers,
            "connected": self._connectedURL(),
            "subscriptions": len(self._subscriptions),
            "reconnects": client.stats["reconnects"] if client else 0,
            "published": self.published,
            "received": self.received,
            "refused": self.refused,
            "unconfirmed": self.unconfirmed,
        }

    def _connectedURL(self):
        client = self._client
        if client is None or client.connected_url is None:
            return None
        return client.connected_url.geturl()

    def attach(self, deliver):
        self._deliver = deliver

    def subscribe(self, channel):
        self._wanted.add(channel)
        if self._connected() and channel not in self._subscriptions:
            return self._sync()
        return None

    def unsubscribe(self, channel):
        self._wanted.discard(channel)
        if self._connected() and channel in self._subscriptions:
            self._sync()

    def publish(self, channels, payload, onFailure=None):
        if not self.ready:
            self.refused += 1
            raise BrokerUnavailable("not connected to NATS; publish refused, nothing was sent")
        if len(payload) > self._client.max_payload:
            raise MessageTooLarge(
                f"the message is {len(payload)} bytes; NATS takes at most {self._client.max_payload}"
            )
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            self._reactor.callLater(0, self._sendBatch)
        for channel in channels:
            batch.messages.append((channel, payload))
        if onFailure is not None:
            batch.failureCallbacks.append(onFailure)
        self._deliver(channels, payload)

    def confirm(self):
        batch = self._batch
        if batch is None:
            return succeed(None)
        waiter = Deferred()
        batch.waiters.append(waiter)
        return waiter

    # Publishing

    def _sendBatch(self):
        batch, self._batch = self._batch, None
        client = self._client
        d = _future(self._publishAll(client, batch.messages))
        d.addCallbacks(self._confirmed, self._unconfirmed, (batch,), None, (batch,))

    async def _publishAll(self, client, messages):
        for subject, payload in messages:
            await client.publish(subject, payload)
        await client.flush(self._flushTimeout)

    def _confirmed(self, ignored, batch):
        self.published += len(batch.messages)
        for waiter in batch.waiters:
            waiter.callback(None)

    def _unconfirmed(self, failure, batch):
        self.unconfirmed += len(batch.messages)
        self.log.warn(
            "NATS did not confirm {count} published message(s): {error}; their "
            "publishers are told",
            count=len(batch.messages),
            error=failure.getErrorMessage() or failure.type.__name__,
        )
        error = BrokerUnavailable(
            "NATS did not confirm this publish; it may not have reached other nodes"
        )
        for onFailure in batch.failureCallbacks:
            try:
                onFailure(error)
            except Exception:
                self.log.failure("Telling a publisher its publish failed")
        for waiter in batch.waiters:
            waiter.errback(error)

    # Subscriptions

    def _sync(self):
        """
        Make NATS's subscriptions match the wanted channels.

        @return: a L{Deferred} firing when NATS has them (a PING/PONG
            later), with L{None}; or with L{None} after logging, if NATS
            could not confirm them (they are made again on reconnect).
        """
        return _future(self._syncNow()).addErrback(self._syncFailed)

    async def _syncNow(self):
        client = self._client
        changed = False
        for channel in list(self._subscriptions):
            if channel not in self._wanted:
                subscription = self._subscriptions.pop(channel)
                await subscription.unsubscribe()
                changed = True
        for channel in list(self._wanted):
            if channel not in self._subscriptions:
                self._subscriptions[channel] = await client.subscribe(channel, cb=self._received)
                changed = True
        if changed:
            await client.flush(self._flushTimeout)

    def _syncFailed(self, failure):
        self._interrupted = True
        self.log.warn(
            "NATS subscriptions not confirmed ({error}); they are made again on reconnect",
            error=failure.getErrorMessage() or failure.type.__name__,
        )

    async def _received(self, message):
        self.received += 1
        self._deliver((message.subject,), message.data)

    # Connection

    def start(self):
        """
        Connect in the background, retrying for ever; C{ready} turns true
        once connected.
        """
        self._stopping = False
        self._connect()

    def _connect(self):
        self._client = self._clientFactory()
        self._subscriptions = {}
        d = _future(self._client.connect(
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
            closed_cb=self._onClosed,
        ))
        d.addCallbacks(self._onConnected, self._connectFailed)

    def _onConnected(self, ignored):
        self.log.info("Connected to NATS at {url}", url=self._connectedURL())
        self._failedAttempts = 0
        self._sync().addCallback(self._restored, 0)

    def _restored(self, ignored, settle):
        """
        Subscriptions are in place: take publishes after C{settle} seconds,
        and tell local subscribers about the outage, if there was one.
        """
        if not self._connected():
            return
        self._readyAt = self._reactor.seconds() + settle
        if self._interrupted:
            self._interrupted = False
            for channel in sorted(self._wanted):
                self._deliver((channel,), missedNotice(channel))

    def _connectFailed(self, failure):
        if self._stopping:
            return
        self.log.error(
            "Connecting to NATS failed ({error}); trying again", error=failure.getErrorMessage()
        )
        self._reactor.callLater(self._reconnectWait, self._connect)

    async def _onError(self, error):
        self._failedAttempts += 1
        now = time.monotonic()
        if self._failedAttempts == 1 or now - self._lastComplaint > 10:
            self._lastComplaint = now
            self.log.warn(
                "NATS: {error!r} ({attempts} failed attempt(s) so far; still trying "
                "{servers}; publishes are refused until connected)",
                error=error, attempts=self._failedAttempts, servers=self.servers,
            )

    async def _onDisconnected(self):
        self._readyAt = None
        self._interrupted = True
        if not self._stopping:
            self.log.warn("Disconnected from NATS; publishes are refused until it is back")

    async def _onReconnected(self):
        self._failedAttempts = 0
        self.log.info(
            "Reconnected to NATS at {url}; restoring subscriptions, taking publishes in {settle}s",
            url=self._connectedURL(), settle=self._settle,
        )
        self._reactor.callLater(0, lambda: self._sync().addCallback(self._restored, self._settle))

    async def _onClosed(self):
        if not self._stopping:
            self.log.error("The NATS connection closed for good; starting a new one")
            self._reactor.callLater(self._reconnectWait, self._connect)

    def stop(self):
        """
        Leave NATS cleanly: drain subscriptions and pending publishes.

        @return: a L{Deferred} that fires when the connection is closed.
        """
        self._stopping = True
        client = self._client
        if client is None or client.is_closed:
            return succeed(None)
        if client.is_connected:
            d = _future(client.drain())
        else:
            d = _future(client.close())
        return d.addErrback(lambda f: self.log.warn("Leaving NATS: {e}", e=f.getErrorMessage()))
