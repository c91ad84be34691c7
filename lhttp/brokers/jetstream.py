"""
History on NATS JetStream, for L{lhttp.brokers.nats.NATSBroker}.

  - One stream (C{--history-stream}, default C{LHTTP_HISTORY}) holds every
    history channel: its subjects are the C{--history} patterns (under the
    C{--nats-prefix}), its limits the largest of theirs (messages per
    subject, age) and C{--history-max-bytes}; a pattern with smaller limits
    has them applied when its history is read. It is created, or updated
    to those limits, when the node connects; file storage, so it survives a
    nats-server restart.
  - A message's offset is its stream sequence: increasing per channel (not
    by one), the same on every node. The epoch is the stream's creation
    time: it changes when the stream is deleted and made again, and then
    old offsets mean nothing.
  - Nodes publish to history channels with JetStream publishes (an
    acknowledgement per message, a C{Nats-Msg-Id} so a retried publish is
    stored once) and receive them through one ordered consumer per
    pattern, which resumes where it left off after a reconnect: a node
    delivers a history channel's messages, its own included, in stream
    order, with their offsets. Original Go nodes publishing plain NATS
    messages on those subjects are stored too.
  - A recovery reads the retained messages of one subject after an offset
    (C{STREAM.MSG.GET} with C{next_by_subj}); it is complete when the
    message at that offset is still retained, so nothing after it was
    dropped. A read waits (up to C{readyTimeout} seconds) until the stream
    and the consumers are in place: a client reconnecting the moment a
    restarted node accepts connections would otherwise be read from before
    the node knows the epoch, and told that messages may be missing.
"""

import asyncio
import datetime
import itertools
import json
import os

from nats.js.api import DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.brokers.nats import deferred
from lhttp.errors import BrokerUnavailable
from lhttp.history import IHistory, Recovery
from lhttp.word import NATS_HEADER, forgedPayload


@implementer(IHistory)
class JetStreamHistory:
    """
    @ivar policy: the L{lhttp.history.HistoryPolicy}.
    @ivar stream: the stream's name.
    @ivar epoch: the stream's epoch, once connected (else L{None}).
    @ivar ready: whether the stream and the consumers are in place.
    """

    log = Logger()

    # Messages one read gives at most (the per-pattern count limits are
    # smaller in practice).
    maxRead = 10000

    # Seconds one request to JetStream may take.
    requestTimeout = 5.0

    # Seconds a read waits for the history to be ready (connected, stream
    # and consumers in place) before it fails.
    readyTimeout = 10.0

    def __init__(self, policy, stream="LHTTP_HISTORY", maxBytes=64 * 1024 * 1024, prefix="",
                 heartbeat=1.0):
        self.policy = policy
        self.stream = stream
        self.maxBytes = maxBytes
        self.epoch = None
        self._ready = asyncio.Event()
        self._prefix = prefix
        self._heartbeat = heartbeat
        self._client = None
        self._consumers = []
        # The last stream sequence delivered, per pattern: a consumer made
        # again starts after it.
        self._delivered = {}
        self._ids = itertools.count(1)
        self._node = os.urandom(6).hex()
        self.forged = 0
        self.delivered = 0

    @property
    def ready(self):
        return self._ready.is_set()

    @ready.setter
    def ready(self, value):
        if value:
            self._ready.set()
        else:
            self._ready.clear()

    async def _untilReady(self):
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), self.readyTimeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailable(
                f"the history (JetStream stream {self.stream}) is not ready") from None

    def subject(self, channel):
        return self._prefix + channel

    def messageId(self):
        """
        A C{Nats-Msg-Id} for one publish, unique across nodes.
        """
        return f"{self._node}-{next(self._ids)}"

    def describe(self):
        return {"stream": self.stream, "epoch": self.epoch, "ready": self.ready,
                "delivered": self.delivered, "forged": self.forged}

    # Setting up, on every (re)connect.

    def streamConfig(self):
        retentions = self.policy.retentions
        ages = [r.maxAge for r in retentions]
        return StreamConfig(
            name=self.stream,
            subjects=[self._prefix + r.pattern for r in retentions],
            max_msgs_per_subject=max(r.messages for r in retentions),
            max_age=None if None in ages else max(ages),
            max_bytes=self.maxBytes,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            duplicate_window=120,
            # History requests read backwards, one message a request
            # (DIRECT.GET multi_last with up_to_seq, nats-server 2.11+).
            allow_direct=True,
        )

    async def start(self, client, deliver):
        """
        Make or update the stream, read its epoch, and start the consumers
        (again after a new connection). C{ready} is false until it is done
        (the broker clears it when it calls this).

        @param deliver: C{deliver(channels, payload, position)}.
        """
        self._client = client
        jsm = client.jsm()
        config = self.streamConfig()
        try:
            info = await jsm.add_stream(config)
        except BadRequestError:
            # It exists with other limits: the options win.
            info = await jsm.update_stream(config)
        created = info.created
        if created is None:
            created = (await jsm.stream_info(self.stream)).created
        epoch = _epoch(created)
        if epoch != self.epoch:
            # A new stream: its sequences start again.
            self._delivered.clear()
        self.epoch = epoch
        js = client.jetstream()
        for consumer in self._consumers:
            try:
                await consumer.unsubscribe()
            except Exception:
                pass
        self._consumers = []
        for retention in self.policy.retentions:
            self._consumers.append(await self._consume(js, retention.pattern, deliver))
        self.ready = True
        self.log.info("History in JetStream stream {stream} (epoch {epoch})",
                      stream=self.stream, epoch=self.epoch)

    async def _consume(self, js, pattern, deliver):
        prefix = len(self._prefix)
        last = self._delivered.get(pattern)
        if last is None:
            policy, start = DeliverPolicy.NEW, None
        else:
            policy, start = DeliverPolicy.BY_START_SEQUENCE, last + 1
        delivered = self._delivered

        async def received(message):
            sequence = message.metadata.sequence.stream
            if sequence <= delivered.get(pattern, 0):
                # From a consumer this one replaced, after a reconnect.
                return
            delivered[pattern] = sequence
            payload = message.data
            if forgedPayload(payload) and not (message.headers and NATS_HEADER in message.headers):
                # Stored from an original Go node's client: not delivered.
                self.forged += 1
                return
            self.delivered += 1
            deliver((message.subject[prefix:],), payload, (self.epoch, sequence))

        from nats.js.api import ConsumerConfig

        config = ConsumerConfig(opt_start_seq=start) if start else None
        return await js.subscribe(
            self._prefix + pattern, cb=received, stream=self.stream, ordered_consumer=True,
            deliver_policy=policy, idle_heartbeat=self._heartbeat, config=config,
        )

    # IHistory

    def read(self, channel, since, epoch):
        return deferred(self._read(channel, since, epoch))

    def last(self, channel, count, before=None, maxBytes=None):
        return deferred(self._last(channel, count, before, maxBytes))

    async def _next(self, jsm, subject, sequence):
        try:
            return await jsm.get_msg(self.stream, seq=sequence, subject=subject, next=True)
        except NotFoundError:
            return None

    async def _read(self, channel, since, epoch):
        await self._untilReady()
        jsm = self._client.jsm()
        subject = self.subject(channel)
        sameEpoch = epoch is None or epoch == self.epoch
        if not sameEpoch:
            since = 0
        complete = sameEpoch
        found = []
        if since > 0:
            first = await self._next(jsm, subject, since)
            if first is None or first.seq != since:
                complete = False
                if first is not None:
                    found.append(first)
            cursor = (found[-1].seq if found else since) + 1
        else:
            complete = complete and await self._neverTrimmed(jsm)
            cursor = 1
        await self._readFrom(jsm, subject, cursor, found)
        messages, trimmed = self._retained(channel, found)
        complete = complete and not trimmed
        top = messages[-1][0] if messages else since
        return Recovery(self.epoch, complete, messages, top)

    async def _readFrom(self, jsm, subject, cursor, found):
        """
        Append the subject's retained messages from sequence C{cursor} on
        to C{found}, up to L{maxRead} in all.
        """
        while len(found) < self.maxRead:
            message = await self._next(jsm, subject, cursor)
            if message is None:
                return
            found.append(message)
            cursor = message.seq + 1

    async def _neverTrimmed(self, jsm):
        """
        Whether nothing was ever removed from the stream: then all there
        ever was is there.
        """
        info = await jsm.stream_info(self.stream)
        return (info.state.first_seq or 1) <= 1

    def _retained(self, channel, found):
        """
        The pattern's own limits, where they are smaller than the stream's.

        @return: C{(messages, trimmed)}.
        """
        retention = self.policy.retentionFor(channel)
        kept = found
        if retention is not None and retention.maxAge is not None:
            oldest = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
                seconds=retention.maxAge)
            kept = [m for m in kept if m.time is None or m.time >= oldest]
        if retention is not None and len(kept) > retention.messages:
            kept = kept[-retention.messages:]
        return tuple((m.seq, m.data or b"") for m in kept), len(kept) != len(found)

    async def _previous(self, subject, upTo):
        """
        The subject's newest message at or before stream sequence C{upTo}
        (L{None}: the newest of all), in one request.

        @return: C{(sequence, time, headers, payload)}, or L{None}.
        """
        request = {"multi_last": [subject], "batch": 1}
        if upTo is not None:
            request["up_to_seq"] = upTo
        try:
            reply = await self._client.request(
                f"$JS.API.DIRECT.GET.{self.stream}", json.dumps(request).encode(),
                timeout=self.requestTimeout)
        except Exception as e:
            # No responders (no stream, or one without direct gets), a
            # timeout, a lost connection: the client is told 503.
            raise BrokerUnavailable(
                f"reading the history of {subject}: {type(e).__name__} {e}".strip()) from None
        headers = reply.headers or {}
        status = headers.get("Status")
        if status == "404" or status == "204":
            return None
        if status is not None:
            raise BrokerUnavailable(
                f"reading the history of {subject}: {status} {headers.get('Description', '')}")
        sequence = int(headers["Nats-Sequence"])
        return sequence, _time(headers.get("Nats-Time-Stamp")), headers, reply.data or b""

    async def _last(self, channel, count, before=None, maxBytes=None):
        """
        Read backwards from the newest message (or from C{before}), one
        request a message, only as many as asked (C{count}, C{maxBytes}),
        and the pattern's own limits.
        """
        await self._untilReady()
        subject = self.subject(channel)
        retention = self.policy.retentionFor(channel)
        oldest = None
        if retention is not None and retention.maxAge is not None:
            oldest = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
                seconds=retention.maxAge)
        # Beyond the pattern's count limit (known from the newest only).
        depth = retention.messages if retention is not None and before is None else None
        top = 0
        if before is not None:
            newest = await self._previous(subject, None)
            top = newest[0] if newest is not None else 0
            if before <= 1:
                return Recovery(self.epoch, False, (), top, more=False)
        found = []
        size = 0
        more = False
        trimmed = False
        upTo = None if before is None else before - 1
        seen = 0
        while True:
            message = await self._previous(subject, upTo)
            if message is None:
                break
            sequence, stamp, headers, payload = message
            if oldest is not None and stamp is not None and stamp < oldest:
                trimmed = True
                break
            if depth is not None and seen >= depth:
                trimmed = True
                break
            if len(found) == count or (maxBytes is not None and size > maxBytes):
                more = True
                break
            seen += 1
            if not top:
                top = sequence
            if not (forgedPayload(payload) and NATS_HEADER not in headers):
                found.append((sequence, payload))
                size += len(payload)
            if sequence <= 1:
                break
            upTo = sequence - 1
        complete = not more and not trimmed and await self._neverTrimmed(self._client.jsm())
        return Recovery(self.epoch, complete, tuple(found[::-1]), top, more=more)


def _time(text):
    """
    A C{Nats-Time-Stamp} (RFC 3339, nanoseconds) as an aware datetime, or
    L{None}.
    """
    if not text:
        return None
    try:
        head, _, fraction = text.rstrip("Z").partition(".")
        return datetime.datetime.fromisoformat(
            head + ("." + fraction[:6] if fraction else "")).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def _epoch(created):
    """
    A stream's epoch: its creation time, in microseconds, as hex.
    """
    if created is None:
        return "0"
    if created.tzinfo is None:
        created = created.replace(tzinfo=datetime.timezone.utc)
    return "%x" % int(created.timestamp() * 1000000)
