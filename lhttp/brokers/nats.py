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

NATS protocol writes are serialized: one coroutine at a time makes NATS's
subscriptions match the channels with local subscribers (however many
subscribes and unsubscribes arrive while nats-py is paused on a full
buffer), and one writes publishes in the order they were taken. So NATS
holds exactly one subscription per channel with local subscribers, and
every publish reaches each subscriber once.

The NATS connection is the node's one (L{NATSConnection}, shared with the
presence engine): connects, reconnects, redaction and draining are there.

It needs Twisted's asyncio reactor (nats-py is an asyncio library).
"""

import asyncio
import os
import re
import sys
from collections import deque

from nats.js.errors import NoStreamResponseError
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.acks import NATS_ID_HEADER, Receipt, RecentKeys, messageId
from lhttp.brokers.connection import LIVE, NATS, NATSConnection, deferred, redactURL
from lhttp.brokers.control import CONTROL
from lhttp.brokers.heartbeat import HEARTBEAT
from lhttp.codec import missedNotice
from lhttp.errors import BrokerUnavailable, MessageTooLarge, StreamConflict
from lhttp.interfaces import IBroker
from lhttp.names import checkPrefix, subjectPrefix
from lhttp.word import EVENT, NATS_HEADER, forgedPayload, payloadKind



class _Batch:
    """
    The publishes taken in one reactor turn, confirmed together.
    """

    __slots__ = ("messages", "failureCallbacks", "waiters", "receipts")

    def __init__(self):
        # (subject, payload, Nats-Msg-Id for JetStream or None, NATS headers)
        self.messages = []
        self.failureCallbacks = []
        self.waiters = []
        # (onConfirmed, [(channel, index in messages)], duplicate here)
        self.receipts = []


# A re-published message's position (the last of a repeated name, as
# nats-py reads them); any other value is left to nats-py's reading.
_SEQUENCE = re.compile(rb"\r\nNats-Sequence: *([0-9]{1,19}) *\r\n").findall
_LAST_SEQUENCE = re.compile(rb"\r\nNats-Last-Sequence: *([0-9]{1,19}) *\r\n").findall
_NODE_HEADER = b"\r\n" + NATS_HEADER.encode() + b":"


@implementer(IBroker)
class NATSBroker:
    """
    @ivar servers: the NATS server URLs.
    @ivar prefix: the subject prefix (subjects are C{<prefix>.<channel>}),
        or C{""} for subjects that are the channel names themselves (the
        original Go nodes' form).
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
        prefix="",
        clientFactory=NATS,
        history=None,
        recentKeys=None,
        connection=None,
        onRefused=None,
    ):
        """
        @param history: the L{lhttp.history.jetstream.JetStreamHistory} of
            the channels that keep history (made with
            C{subjectPrefix(prefix)}), or L{None}; L{lhttp.engines} makes
            it, so this package does not import the history's.
        @param onRefused: called with the one-line reason when the node
            must not go on (the history stream is another's); default: log
            it, write it to standard error and exit with status 1.
        @param recentKeys: the L{lhttp.acks.RecentKeys} window in which a
            keyed publish on a plain channel is delivered once on this node.
        @param connection: the node's L{NATSConnection}, shared with the
            presence engine; default: one of its own, made with the
            connection parameters above.
        """
        self.servers = list(servers)
        if connection is None:
            connection = NATSConnection(
                servers, reactor, name=name, pingInterval=pingInterval,
                maxOutstandingPings=maxOutstandingPings, connectTimeout=connectTimeout,
                reconnectWait=reconnectWait, clientFactory=clientFactory,
            )
        self.connection = connection
        self.prefix = checkPrefix(prefix) if prefix else ""
        self._subjectPrefix = subjectPrefix(prefix)
        self.history = history
        self._retentionFor = lambda channel: None
        if history is not None:
            self._retentionFor = history.policy.retentionFor
        self._reactor = reactor
        self._onRefused = onRefused or self._refuse
        self._reconnectWait = reconnectWait
        self._flushTimeout = flushTimeout
        self._settle = settle
        self._readyAt = None
        self._interrupted = False
        self._client = None
        self._js = None
        self._deliver = None
        # Channels with local subscribers, and what NATS holds for them.
        self._wanted = set()
        self._subscriptions = {}
        # The subscription sync: one coroutine at a time (_syncing); a
        # change while it runs sets _dirty and it goes round again.
        self._syncing = False
        self._dirty = False
        self._syncWaiters = []
        # Publishes: batches waiting for the one publishing coroutine.
        self._batch = None
        self._outbox = deque()
        self._publishing = False
        self._stopping = False
        self._historyProblem = None
        self._historyAttempts = 0
        self._lastDropNotice = {}
        self.published = 0
        self.received = 0
        self.refused = 0
        self.unconfirmed = 0
        self.retried = 0
        self.forged = 0
        self._lastForgedNotice = -60.0
        self._recent = recentKeys if recentKeys is not None else RecentKeys()
        self.duplicates = 0
        connection.watch("broker", ready=lambda: self.ready, onConnected=self._onConnected,
                         onDisconnected=self._onDisconnected,
                         onSlowConsumer=lambda error: self._messagesDropped(error.subject))
        if self.history is not None:
            connection.watch("history", ready=lambda: self.history.ready)

    # IBroker

    def _connected(self):
        client = self._client
        return client is not None and client.is_connected and not self._stopping

    @property
    def ready(self):
        readyAt = self._readyAt
        return (
            readyAt is not None and self._reactor.seconds() >= readyAt and self._connected()
            and (self.history is None or self.history.ready)
        )

    def describe(self):
        return {
            "kind": "nats",
            "ready": self.ready,
            "servers": [redactURL(url) for url in self.servers],
            "prefix": self.prefix,
            "connected": self._connectedURL(),
            "subscriptions": len(self._subscriptions),
            "reconnects": self.connection.reconnects,
            "published": self.published,
            "received": self.received,
            "refused": self.refused,
            "unconfirmed": self.unconfirmed,
            "retried": self.retried,
            "forged": self.forged,
            "duplicates": self.duplicates,
            **({"history": self.history.describe()} if self.history is not None else {}),
        }

    def _connectedURL(self):
        return self.connection.connectedURL()

    def attach(self, deliver):
        self._deliver = deliver

    def subscribe(self, channel):
        if self._retentionFor(channel) is not None:
            # The stream re-publishes what it stores there, and the nodes
            # publish their events there.
            self.history.serve(channel)
            channel = LIVE + channel
        self._wanted.add(channel)
        if not self._connected():
            # Made once connected (see _restored).
            return None
        if channel in self._subscriptions and not self._syncing:
            return None
        return self._sync(wait=True)

    def unsubscribe(self, channel):
        if self._retentionFor(channel) is not None:
            self.history.forget(channel)
            channel = LIVE + channel
        self._wanted.discard(channel)
        if self._connected() and (channel in self._subscriptions or self._syncing):
            self._sync()

    def publish(self, channels, payload, onFailure=None, key=None, onConfirmed=None):
        if not self.ready:
            self.refused += 1
            raise BrokerUnavailable(
                "not known to be stored: not connected to NATS (nothing was sent); publish it "
                "again with the same idempotency-key"
            )
        if len(payload) > self._client.max_payload:
            raise MessageTooLarge(
                f"the message is {len(payload)} bytes; NATS takes at most {self._client.max_payload}"
            )
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            self._reactor.callLater(0, self._sendBatch)
        prefix = self._subjectPrefix
        retentionFor = self._retentionFor
        messages = batch.messages
        kind = payloadKind(payload)
        natsHeaders = None if kind is None else {NATS_HEADER: kind}
        plain = []
        event = kind == EVENT
        stored = []
        duplicate = False
        for channel in channels:
            identifier = None if key is None else messageId(channel, key)
            if retentionFor(channel) is None:
                headers = natsHeaders
                if identifier is not None:
                    # Every node delivers it once, this one included; it
                    # is sent again all the same, in case the first one
                    # never reached NATS.
                    headers = {**(natsHeaders or {}), NATS_ID_HEADER: identifier}
                    if self._recent.seen(identifier):
                        duplicate = True
                        self.duplicates += 1
                    else:
                        plain.append(channel)
                else:
                    plain.append(channel)
                messages.append((prefix + channel, payload, None, headers))
            elif event:
                # A join or leave on a history channel: to its subscribers,
                # not into its history (its live subject, see LIVE).
                plain.append(channel)
                messages.append((LIVE + prefix + channel, payload, None, natsHeaders))
            else:
                # Stored, then delivered here too from the live subject
                # (if this node serves it), with its offset. The same key is the same Nats-Msg-Id on
                # every node: JetStream stores it once.
                if identifier is None:
                    identifier = self.history.messageId()
                stored.append((channel, len(messages)))
                messages.append((prefix + channel, payload, identifier, None))
        if onFailure is not None:
            batch.failureCallbacks.append(onFailure)
        if onConfirmed is not None:
            batch.receipts.append((onConfirmed, stored, duplicate))
        if plain:
            self._deliver(plain, payload)

    def confirm(self):
        batch = self._batch
        if batch is None:
            return succeed(None)
        waiter = Deferred()
        batch.waiters.append(waiter)
        return waiter

    # Publishing: batches go out one after the other, in the order they
    # were taken, by one coroutine; each is confirmed by its own PING/PONG
    # while the next is written.

    def _sendBatch(self):
        batch, self._batch = self._batch, None
        self._outbox.append(batch)
        if not self._publishing:
            self._publishing = True
            deferred(self._publishAll()).addErrback(
                lambda f: self.log.failure("Publishing to NATS failed", f)
            )

    async def _publishAll(self):
        try:
            while self._outbox:
                batch = self._outbox.popleft()
                client = self._client
                acks = []
                js = self._jetstream(client) if self.history is not None else None
                try:
                    # Runs of history messages go out together; a plain
                    # message between two keeps its place.
                    run = []
                    for index, (subject, payload, msgId, headers) in enumerate(batch.messages):
                        if msgId is None:
                            if run:
                                acks.append(await js.publishStored(run))
                                run = []
                            if headers is None:
                                await client.publish(subject, payload)
                            else:
                                await client.publish(subject, payload, headers=headers)
                        else:
                            run.append((index, subject, payload, msgId))
                    if run:
                        acks.append(await js.publishStored(run))
                except Exception as e:
                    self._unconfirmed(e, batch)
                    continue
                deferred(self._confirm(client, js, acks)).addCallbacks(
                    self._confirmed, self._unconfirmed, (batch,), None, (batch,)
                )
        finally:
            self._publishing = False

    def _jetstream(self, client):
        """
        The JetStream context of a connection: one, kept, as it holds the
        one inbox subscription its acknowledgements come back on.
        """
        js = self._js
        if js is None or js[0] is not client:
            js = self._js = (client, client.jetstream())
        return js[1]

    async def _confirm(self, client, js, acks):
        """
        A batch is confirmed by a PING/PONG after it, and by JetStream's
        acknowledgement of each history message in it. A message not
        acknowledged in time is published once more with the same
        C{Nats-Msg-Id}: stored once, whether or not the first one was.

        @param js: the JetStream context C{acks} came from.
        @return: the JetStream acknowledgements (C{PubAck}), by index in
            the batch's messages.
        """
        try:
            await client.flush(self._flushTimeout)
            if not acks:
                return {}
            await asyncio.wait([a.done for a in acks], timeout=self._flushTimeout)
            results = {}
            for stored in acks:
                for error in stored.errors.values():
                    if isinstance(error, NoStreamResponseError):
                        # Nothing stores history subjects: the stream was
                        # deleted. It is made again (a new epoch) for the
                        # next publishes.
                        self._reactor.callLater(0, self._historyLost)
                    raise error
                results.update(stored.results)
            for stored in acks:
                late = stored.unsettled()
                if not late:
                    continue
                js.forget(stored)
                for index, subject, payload, msgId in late:
                    self.retried += 1
                    results[index] = await js.publish(
                        subject, payload, timeout=self._flushTimeout,
                        headers={"Nats-Msg-Id": msgId})
            return results
        finally:
            # Whatever happened, nothing of this batch is awaited any more
            # (a failed batch left awaited would count against the
            # acknowledgements awaited at once, for ever).
            for stored in acks:
                js.forget(stored)

    def _historyLost(self):
        history = self.history
        if history is None or not history.ready:
            return
        self.log.warn("The JetStream history stream {stream} is gone; making it again "
                      "(a new epoch: older offsets are not recovered)", stream=history.stream)
        self._startHistory()

    def _confirmed(self, results, batch):
        self.published += len(batch.messages)
        epoch = self.history.epoch if self.history is not None else None
        for onConfirmed, stored, duplicate in batch.receipts:
            positions = []
            for channel, index in stored:
                ack = results[index]
                duplicate = duplicate or bool(ack.duplicate)
                positions.append((channel, epoch, ack.seq))
            try:
                onConfirmed(Receipt(positions, duplicate))
            except Exception:
                self.log.failure("Telling a publisher its publish is confirmed")
        for waiter in batch.waiters:
            waiter.callback(None)

    def _unconfirmed(self, failure, batch):
        self.unconfirmed += len(batch.messages)
        reason = getattr(failure, "value", failure)
        self.log.warn(
            "NATS did not confirm {count} published message(s): {error}; their "
            "publishers are told",
            count=len(batch.messages),
            error=str(reason) or type(reason).__name__,
        )
        error = BrokerUnavailable(
            "not known to be stored: NATS did not confirm this publish (it may have reached "
            "some or all subscribers, or none); publish it again with the same idempotency-key"
        )
        for onFailure in batch.failureCallbacks:
            try:
                onFailure(error)
            except Exception:
                self.log.failure("Telling a publisher its publish failed")
        for waiter in batch.waiters:
            waiter.errback(error)

    # Subscriptions: one coroutine makes NATS match the wanted channels.

    def _sync(self, wait=False):
        """
        Make NATS's subscriptions match the wanted channels, soon.

        @param wait: return a L{Deferred} that fires (with L{None}) once
            NATS has every change asked for so far (a PING/PONG after
            them), or once the attempt failed (after logging; the
            subscriptions are made again on reconnect).
        """
        self._dirty = True
        waiter = None
        if wait:
            waiter = Deferred()
            self._syncWaiters.append(waiter)
        if not self._syncing:
            self._syncing = True
            deferred(self._syncAll())
        return waiter

    async def _syncAll(self):
        waiters = []
        try:
            while self._dirty and self._connected():
                self._dirty = False
                waiters, self._syncWaiters = self._syncWaiters, []
                client = self._client
                inline = client.inline
                for channel in [c for c in self._subscriptions if c not in self._wanted]:
                    subscription = self._subscriptions.pop(channel)
                    inline.pop(subscription._id, None)
                    await subscription.unsubscribe()
                served = []
                for channel in [c for c in self._wanted if c not in self._subscriptions]:
                    if channel in self._wanted:
                        subscription = self._subscriptions[channel] = await client.subscribe(
                            self._subject(channel), cb=self._receiver(channel)
                        )
                        if channel.startswith(LIVE):
                            served.append(channel[len(LIVE):])
                            inline[subscription._id] = self._liveReader(channel[len(LIVE):])
                await client.flush(self._flushTimeout)
                if served:
                    # Where each history channel stands: a message the
                    # stream stored but this node missed is seen from then.
                    await self.history.check(served)
                _fire(waiters)
                waiters = []
        except Exception as e:
            # Made again on reconnect (or the next change); the waiting
            # subscribers go on, as after a reconnect.
            self._dirty = True
            self._interrupted = True
            self.log.warn(
                "NATS subscriptions not confirmed ({error}); they are made again on reconnect",
                error=str(e) or type(e).__name__,
            )
        finally:
            self._syncing = False
            _fire(waiters)
            if not self._connected():
                # Nothing more to wait for until the connection is back.
                waiters, self._syncWaiters = self._syncWaiters, []
                _fire(waiters)

    def _subject(self, key):
        """
        The NATS subject of a channel in C{_wanted}: C{LIVE + channel} for
        a history channel.
        """
        if key.startswith(LIVE):
            return LIVE + self._subjectPrefix + key[len(LIVE):]
        return self._subjectPrefix + key

    def _receiver(self, channel):
        live = channel.startswith(LIVE)
        if live:
            channel = channel[len(LIVE):]
        deliver = (channel,)
        history = self.history

        async def received(message):
            self.received += 1
            payload = message.data
            headers = message.headers
            if headers and headers.get(NATS_HEADER) in (CONTROL, HEARTBEAT):
                # A node's command on the control subject, or its
                # announcement on the heartbeat subject, which a channel
                # of that name shares without --nats-prefix: not for its
                # subscribers (lhttp.brokers.control, .heartbeat).
                return
            if live and headers and "Nats-Sequence" in headers:
                # Stored: delivered in stream order, gaps filled.
                history.live(channel, headers, payload)
                return
            if (live or forgedPayload(payload)) and not (headers and NATS_HEADER in headers):
                # On a live subject, only a node's own events count.
                self._forged(channel)
                return
            if headers and NATS_ID_HEADER in headers and self._recent.seen(headers[NATS_ID_HEADER]):
                # A keyed publish sent again: delivered here already.
                self.duplicates += 1
                return
            self._deliver(deliver, payload)

        return received

    def _liveReader(self, channel):
        """
        A history channel's live messages, read as they arrive
        (L{lhttp.brokers.connection.NATS.inline}): the stream's position
        headers are found in the raw header block, and the message goes to
        the history without a nats-py message, a queue or a task of its
        own. A history channel needs no queue: a message NATS drops for
        it is a gap its sequence shows, which the history fills (a plain
        channel's queue is how such a loss is seen, and told).
        A message in another form (no position, a node's own header, a
        malformed value) is left to nats-py and L{_receiver}.
        """
        live = self.history.liveAt

        def read(subject, data, headers):
            if not headers or _NODE_HEADER in headers:
                return False
            sequence = _SEQUENCE(headers)
            if not sequence:
                return False
            last = _LAST_SEQUENCE(headers)
            self.received += 1
            try:
                live(channel, int(sequence[-1]), int(last[-1]) if last else 0, data)
            except Exception:
                # Not into nats-py's reading, which would take it for the
                # connection's fault.
                self.log.failure("Delivering a live message of {channel}", channel=channel)
            return True

        return read

    def _forged(self, channel):
        """
        A message claiming to be a node's that no node of this project
        wrote (an original Go node relays its clients' messages verbatim):
        not delivered, counted, and said in the log at most once a minute.
        """
        self.forged += 1
        now = self._reactor.seconds()
        if now - self._lastForgedNotice >= 60:
            self._lastForgedNotice = now
            self.log.warn(
                "Dropped a message on {channel} from NATS that claims to be a node's "
                "(an lhttp-node header without the Lhttp-Node NATS header): a client of "
                "another node forged it; {count} so far",
                channel=channel, count=self.forged,
            )

    # Connection

    def start(self):
        """
        Connect in the background (the shared connection), retrying for
        ever; C{ready} turns true once connected.
        """
        self._stopping = False
        self.connection.start("broker")

    def _onConnected(self, client):
        """
        The connection is up: a new client (the first, or one replacing a
        client nats-py gave up on), or nats-py reconnected this one.
        """
        if client is not self._client:
            self._client = client
            self._subscriptions = {}
            settle = 0
        else:
            self.log.info("Restoring subscriptions, taking publishes in {settle}s",
                          settle=self._settle)
            settle = self._settle
        # The stream may be new (a new epoch); the consumers go on from
        # the last message delivered.
        self._startHistory()
        self._sync(wait=True).addCallback(self._restored, settle)

    def _startHistory(self):
        """
        Put the history stream and consumers in place (on every connect and
        reconnect: the stream may be new, the epoch with it); tried again
        until it works.
        """
        history = self.history
        if history is None or not self._connected():
            return
        # Publishes wait for it (ready is false until it is done).
        history.ready = False

        def failed(failure):
            if failure.check(StreamConflict):
                self._onRefused(str(failure.value))
                return
            # Said once per problem; tried again with a backoff (1 s
            # doubling up to 5 s) while it lasts.
            problem = self.connection.redacted(failure.value)
            if problem != self._historyProblem:
                self._historyProblem = problem
                self.log.error(
                    "JetStream history not ready ({error}): is nats-server running with -js? "
                    "Publishes are refused until it is; trying again",
                    error=problem,
                )
            self._historyAttempts += 1
            delay = min(5.0, max(self._reconnectWait, 1.0) * 2 ** min(self._historyAttempts - 1, 8))
            self._reactor.callLater(delay, self._startHistory)

        def started(ignored):
            self._historyProblem = None
            self._historyAttempts = 0

        deferred(history.start(self._client, self._deliver)).addCallbacks(started, failed)

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
                # (A history channel's missed messages are read from the
                # stream instead: JetStreamHistory.check.)
                if not channel.startswith(LIVE):
                    self._deliver((channel,), missedNotice(channel))

    def _refuse(self, line):
        """
        The node must not go on: say why in one line, and exit with
        status 1.
        """
        self.log.critical("{line}; exiting", line=line)
        stderr = sys.__stderr__
        if stderr is not None:
            stderr.write(f"lhttp: {line}\n")
            stderr.flush()
        self._reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self._reactor.stop()

    def _messagesDropped(self, subject):
        """
        nats-py dropped messages for a subscription whose queue was full:
        tell that channel's subscribers (at most once a second).
        """
        if subject.startswith(LIVE) and self.history is not None:
            # Read from the stream instead.
            channel = subject[len(LIVE) + len(self._subjectPrefix):]
            deferred(self.history.check([channel]))
            return
        channel = subject[len(self._subjectPrefix):]
        if not subject.startswith(self._subjectPrefix) or channel not in self._subscriptions:
            # Not one of the broker's (presence's, say: the connection is
            # shared).
            return
        now = self._reactor.seconds()
        if now - self._lastDropNotice.get(channel, -1.0) < 1.0:
            return
        self._lastDropNotice[channel] = now
        self.log.warn("NATS dropped messages for {channel}: this node did not keep up",
                      channel=channel)
        self._deliver((channel,), missedNotice(channel))

    def _onDisconnected(self):
        self._readyAt = None
        self._interrupted = True

    def stop(self):
        """
        Done with NATS: the connection is drained (subscriptions and
        pending publishes) once its last user, this broker or presence,
        stopped.

        @return: a L{Deferred} that fires when the connection is closed.
        """
        self._stopping = True
        return self.connection.stop("broker")


def _fire(waiters):
    for waiter in waiters:
        waiter.callback(None)
