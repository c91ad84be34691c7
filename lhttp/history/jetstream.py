"""
History on NATS JetStream, for L{lhttp.brokers.nats.NATSBroker}.

  - One stream (C{--history-stream}, default C{LHTTP_HISTORY}) holds every
    history channel: its subjects are the C{--history} patterns (under the
    C{--nats-prefix}), its limits the largest of theirs (messages per
    subject, age) and C{--history-max-bytes}; a pattern with smaller limits
    has them applied when its history is read. File storage, so it
    survives a nats-server restart.
  - The stream has one owner: a node makes it when it is missing; when it
    exists with other subjects or limits, the node says so in one line and
    refuses to start (L{StreamConflict}), unless it was started with
    C{--history-update-stream}, which changes the stream to its settings.
  - A message's offset is its stream sequence: increasing per channel (not
    by one), the same on every node. The epoch is the stream's creation
    time: it changes when the stream is deleted and made again, and then
    old offsets mean nothing.
  - Nodes publish to history channels with JetStream publishes (an
    acknowledgement per message, a C{Nats-Msg-Id} so a retried publish is
    stored once). The stream re-publishes every message it stores
    (C{RePublish}) to the live subject C{_lhttp_live.<subject>}, with
    C{Nats-Sequence} (its offset) and C{Nats-Last-Sequence} (the offset of
    the previous message on the same subject, the C{prev} of its
    subscribers). A node subscribes to a history channel's live subject
    only while it has local subscribers on it (L{lhttp.brokers.nats}), as
    for plain channels, so a node carries only the channels it serves.
    Original Go nodes publishing plain NATS messages on those subjects are
    stored and re-published too.
  - Gaps are filled by the node (L{live}): it keeps the last offset it saw
    of each channel it serves; a message whose previous offset is newer
    than that is held while the missing ones are read from the stream,
    then all go out in order. After a reconnect, each served channel is
    checked against the stream's newest offset of its subject, so a gap
    with no later message is filled too.
  - Reads are batched direct gets (C{$JS.API.DIRECT.GET.<stream>} with
    C{next_by_subj} and C{batch}, answered by the messages then a 204
    C{EOB}): a recovery reads up to L{recoveryBytes} at once; a larger one
    is counted, then read a batch at a time as its client takes it
    (L{_RestReader}), so it holds about two batches of memory. A read waits (up
    to C{readyTimeout} seconds) until the stream is in place: a client
    reconnecting the moment a restarted node accepts connections would
    otherwise be read from before the node knows the epoch, and told that
    messages may be missing.
"""

import asyncio
import datetime
import itertools
import json
import os
from collections import deque

from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.brokers.connection import LIVE, deferred
from lhttp.codec import missedNotice
from lhttp.errors import BrokerUnavailable, StreamConflict
from lhttp.history.recovery import Recovery, RestOfRecovery
from lhttp.interfaces import IHistory
from lhttp.word import NATS_HEADER, forgedPayload


@implementer(IHistory)
class JetStreamHistory:
    """
    @ivar policy: the L{lhttp.history.HistoryPolicy}.
    @ivar stream: the stream's name.
    @ivar epoch: the stream's epoch, once connected (else L{None}).
    @ivar ready: whether the stream is in place.
    @ivar requests: the direct get requests made (reads and gap fills).
    @ivar gaps: the gaps seen on live subjects (each filled from the
        stream, or told to the channel's subscribers if it could not be).
    """

    log = Logger()

    # Messages one recovery gives at most: the newest, with
    # recovered:false when there were more (a pattern may keep more).
    maxRead = 10000

    # Messages one direct get request asks for, and the bytes (subjects,
    # headers and payloads) after which nats-server ends the batch early
    # (its own cap, max_pending, is 64 MiB by default).
    batchSize = 10000
    batchBytes = 8 * 1024 * 1024

    # A recovery reads up to this many bytes at once: one larger is read
    # a batch at a time as the client takes it (L{_RestReader}), so a
    # recovery holds about this much of the node's memory, however large.
    recoveryBytes = 1024 * 1024

    # Tries at counting a channel's messages between two offsets while
    # others are published to it (L{_countBetween}).
    countTries = 3

    # A history request for at most this many messages reads them one a
    # request, newest first; for more, it finds where they start and reads
    # them in batches.
    stepLimit = 16

    # Subjects one "newest of each" request names.
    checkSize = 256

    # Seconds one request to JetStream may take.
    requestTimeout = 5.0

    # Seconds a read waits for the history to be ready (connected, stream
    # in place) before it fails.
    readyTimeout = 10.0

    def __init__(self, policy, stream="LHTTP_HISTORY", maxBytes=64 * 1024 * 1024, prefix="",
                 updateStream=False):
        """
        @param updateStream: change an existing stream whose subjects or
            limits differ from this node's (else L{start} fails with
            L{StreamConflict}).
        """
        self.policy = policy
        self.stream = stream
        self.maxBytes = maxBytes
        self.updateStream = updateStream
        self.epoch = None
        self._ready = asyncio.Event()
        self._prefix = prefix
        self._client = None
        self._deliver = None
        # The channels this node serves (subscribed to their live subject),
        # and of each, [the last offset seen, the last offset delivered].
        self._served = set()
        self._seen = {}
        # Channel -> messages held while a gap of it is filled.
        self._filling = {}
        self._ids = itertools.count(1)
        self._node = os.urandom(6).hex()
        self.forged = 0
        self.delivered = 0
        self.requests = 0
        self.gaps = 0
        self.filled = 0
        self.unfilled = 0
        # Seconds before reading a missing predecessor again.
        self.rereadDelay = 0.5

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

    def liveSubject(self, channel):
        """
        Where the stream re-publishes a channel's messages.
        """
        return LIVE + self._prefix + channel

    def messageId(self):
        """
        A C{Nats-Msg-Id} for one publish, unique across nodes.
        """
        return f"{self._node}-{next(self._ids)}"

    def describe(self):
        return {"stream": self.stream, "epoch": self.epoch, "ready": self.ready,
                "delivered": self.delivered, "forged": self.forged, "requests": self.requests,
                "gaps": self.gaps, "filled": self.filled, "unfilled": self.unfilled}

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
            # Reads are direct gets (batched, and backwards with
            # multi_last and up_to_seq, nats-server 2.11+).
            allow_direct=True,
            # Every stored message, to the nodes serving its channel.
            republish=RePublish(src=">", dest=LIVE + ">"),
        )

    def differences(self, existing):
        """
        What in an existing stream's config differs from this node's.

        @return: a list of C{"name stream=... node=..."} texts.
        """
        wanted = self.streamConfig()
        found = []

        def compare(name, theirs, ours):
            if theirs != ours:
                found.append(f"{name} stream={theirs} node={ours}")

        compare("subjects", ",".join(sorted(existing.subjects or ())),
                ",".join(sorted(wanted.subjects)))
        compare("max_msgs_per_subject", existing.max_msgs_per_subject,
                wanted.max_msgs_per_subject)
        compare("max_age", _seconds(existing.max_age), _seconds(wanted.max_age))
        compare("max_bytes", existing.max_bytes, wanted.max_bytes)
        republish = existing.republish
        compare("republish", republish and f"{republish.src}->{republish.dest}",
                f"{wanted.republish.src}->{wanted.republish.dest}")
        compare("allow_direct", bool(existing.allow_direct), True)
        return found

    async def start(self, client, deliver):
        """
        Make the stream (or check it is this node's), read its epoch, and
        check the channels served against it (again after a new
        connection). C{ready} is false until it is done (the broker clears
        it when it calls this).

        @param deliver: C{deliver(channels, payload, position=None)}.
        @raise StreamConflict: the stream differs from this node's settings
            and C{updateStream} is false.
        """
        self._client = client
        self._deliver = deliver
        jsm = client.jsm()
        config = self.streamConfig()
        try:
            info = await jsm.add_stream(config)
        except BadRequestError:
            # It exists with another configuration.
            info = await jsm.stream_info(self.stream)
            differences = self.differences(info.config) or ["other settings"]
            line = (f"The JetStream stream {self.stream} differs from this node's --history "
                    f"settings: {'; '.join(differences)}")
            if not self.updateStream and self.epoch is not None:
                # Changed under this running node (by one started with
                # --history-update-stream): it goes on with the stream as
                # it is.
                self.log.warn("{line}; going on with the stream as it is", line=line)
            elif not self.updateStream:
                raise StreamConflict(
                    f"{line}; not changing it: start every node with the same --history and "
                    f"--history-max-bytes, or once with --history-update-stream to change it")
            else:
                self.log.warn("{line}; changing it (--history-update-stream)", line=line)
                info = await jsm.update_stream(config)
        created = info.created
        if created is None:
            created = (await jsm.stream_info(self.stream)).created
        epoch = _epoch(created)
        if epoch != self.epoch:
            # A new stream: its sequences start again.
            self._seen.clear()
            self._filling.clear()
        self.epoch = epoch
        self.ready = True
        self.log.info("History in JetStream stream {stream} (epoch {epoch})",
                      stream=self.stream, epoch=self.epoch)
        await self.check(list(self._served))

    # Live messages of the channels this node serves.

    def serve(self, channel):
        """
        This node serves C{channel} from now on: its live messages are
        tracked (see L{check}).
        """
        self._served.add(channel)

    def forget(self, channel):
        """
        This node no longer serves C{channel}.
        """
        self._served.discard(channel)
        self._seen.pop(channel, None)
        self._filling.pop(channel, None)

    def live(self, channel, headers, payload):
        """
        A message of C{channel} the stream re-published: delivered with its
        position once every message before it was.

        @param headers: its NATS headers (C{Nats-Sequence},
            C{Nats-Last-Sequence}).
        """
        try:
            sequence = int(headers["Nats-Sequence"])
            last = int(headers.get("Nats-Last-Sequence") or 0)
        except ValueError:
            self.forged += 1
            return
        self.liveAt(channel, sequence, last, payload, NATS_HEADER in headers)

    def liveAt(self, channel, sequence, last, payload, marked=False):
        """
        L{live}, its headers read: C{sequence} and C{last} its
        C{Nats-Sequence} and C{Nats-Last-Sequence}, C{marked} whether it
        has a node's C{Lhttp-Node} NATS header.
        """
        if channel not in self._served:
            # Left meanwhile: no one to deliver it to.
            return
        forged = not marked and forgedPayload(payload)
        held = self._filling.get(channel)
        if held is not None:
            held.append((sequence, last, payload, forged))
            return
        state = self._seen.get(channel)
        if state is None:
            # The first since this node serves it.
            state = self._seen[channel] = [last, last]
        if sequence <= state[0]:
            # Delivered already (read while a gap was filled).
            return
        if last > state[0]:
            self._startFilling(channel, (sequence, last, payload, forged))
            return
        self._emit(channel, state, sequence, payload, forged)

    def _emit(self, channel, state, sequence, payload, forged):
        state[0] = sequence
        if forged:
            # Stored from an original Go node's client: not delivered.
            self.forged += 1
            return
        prev = state[1]
        state[1] = sequence
        self.delivered += 1
        self._deliver((channel,), payload, (self.epoch, sequence, prev))

    def _startFilling(self, channel, entry):
        held = self._filling.get(channel)
        if held is not None:
            held.append(entry)
            return
        held = self._filling[channel] = deque([entry])
        deferred(self._fill(channel, held)).addErrback(
            lambda f: self.log.failure("Filling a gap of {channel}", f, channel=channel))

    async def _fill(self, channel, held):
        """
        Deliver the held messages of C{channel} in order, each after the
        messages before it, read from the stream.
        """
        subject = self.subject(channel)
        try:
            while held and self._filling.get(channel) is held:
                sequence, last, payload, forged = held[0]
                state = self._seen.get(channel)
                if state is None:
                    break
                if sequence <= state[0]:
                    held.popleft()
                    continue
                if last > state[0]:
                    self.gaps += 1
                    # A check (no payload) reads up to its offset included.
                    upTo = sequence if payload is None else sequence - 1
                    try:
                        found = await self._range(subject, state[0] + 1, upTo)
                        if not _has(found, last):
                            # The stream re-published its predecessor (or,
                            # for a check, said it is its newest), but the
                            # read does not have it: a stream that was
                            # just restarted may not serve it yet. Once
                            # more, after a moment, before saying so.
                            await asyncio.sleep(self.rereadDelay)
                            found = await self._range(subject, state[0] + 1, upTo)
                    except Exception as e:
                        self.unfilled += 1
                        self.log.warn(
                            "Could not read the messages of {channel} missed from NATS "
                            "({error}); its subscribers are told",
                            channel=channel, error=str(e) or type(e).__name__)
                        state[0] = max(state[0], min(last, upTo))
                        self._deliver((channel,), missedNotice(channel))
                        continue
                    if self._seen.get(channel) is not state:
                        break
                    for message in found:
                        if message[0] > state[0]:
                            self.filled += 1
                            self._emit(channel, state, message[0], message[3],
                                       forgedPayload(message[3])
                                       and NATS_HEADER not in message[2])
                    if state[0] < last:
                        # Its predecessor (a check's newest) is still not
                        # in the stream (removed by the limits meanwhile,
                        # or lost by the server): the subscribers are
                        # told, never left to find out.
                        self.unfilled += 1
                        self.log.warn(
                            "Messages of {channel} up to offset {last} are not in the stream "
                            "(read {start} to {upTo}); its subscribers are told",
                            channel=channel, last=last, start=state[0] + 1, upTo=upTo)
                        self._deliver((channel,), missedNotice(channel))
                    if state[0] < upTo:
                        # Offsets of other channels, or removed meanwhile.
                        state[0] = upTo
                held.popleft()
                if payload is not None and sequence > state[0]:
                    self._emit(channel, state, sequence, payload, forged)
        finally:
            if self._filling.get(channel) is held:
                del self._filling[channel]

    async def check(self, channels):
        """
        Compare the channels' last offsets seen with the stream's newest of
        each (when the node starts serving them, after a reconnect, or
        messages dropped for a slow consumer), in one request per
        L{checkSize} channels: what is missing is read and delivered. A
        channel seen for the first time starts from the stream's newest.
        """
        channels = [c for c in channels if c in self._served]
        if not channels or not self.ready:
            return
        prefix = len(self._prefix)
        for start in range(0, len(channels), self.checkSize):
            subjects = [self.subject(c) for c in channels[start:start + self.checkSize]]
            try:
                newest = await self._batch({"multi_last": subjects, "batch": len(subjects)})
            except Exception as e:
                self.log.warn("Could not check the channels served against the stream: {error}; "
                              "their subscribers are told messages may be missing",
                              error=str(e) or type(e).__name__)
                for channel in channels:
                    if channel in self._seen and self._deliver is not None:
                        self._deliver((channel,), missedNotice(channel))
                return
            tops = {headers.get("Nats-Subject", "")[prefix:]: sequence
                    for sequence, _, headers, _ in newest}
            for channel in channels[start:start + self.checkSize]:
                if channel not in self._served:
                    continue
                top = tops.get(channel, 0)
                state = self._seen.get(channel)
                if state is None:
                    self._seen[channel] = [top, top]
                elif top > state[0]:
                    self._startFilling(channel, (top, top, None, False))

    # Reading.

    async def _batch(self, request):
        """
        One batched direct get.

        @return: the messages, as C{(sequence, time, headers, payload)}.
        @raise BrokerUnavailable: no answer, or an error status.
        """
        client = self._client
        self.requests += 1
        found = []
        done = asyncio.get_running_loop().create_future()

        async def received(message):
            headers = message.headers or {}
            status = headers.get("Status")
            if status is None:
                found.append((int(headers["Nats-Sequence"]),
                              _time(headers.get("Nats-Time-Stamp")), headers, message.data or b""))
            elif not done.done():
                if status in ("204", "404"):
                    done.set_result(None)
                else:
                    done.set_exception(BrokerUnavailable(
                        f"reading the history: {status} {headers.get('Description', '')}"))

        try:
            inbox = client.new_inbox()
            subscription = await client.subscribe(inbox, cb=received)
            try:
                await client.publish(f"$JS.API.DIRECT.GET.{self.stream}",
                                     json.dumps(request).encode(), reply=inbox)
                await asyncio.wait_for(done, self.requestTimeout)
            finally:
                await subscription.unsubscribe()
        except BrokerUnavailable:
            raise
        except Exception as e:
            # No responders (no stream, or one without direct gets), a
            # timeout, a lost connection: the client is told 503.
            raise BrokerUnavailable(
                f"reading the history: {type(e).__name__} {e}".strip()) from None
        return found

    async def _range(self, subject, start, upTo=None, limit=None):
        """
        The subject's messages from stream sequence C{start} on (up to
        C{upTo} included, at most C{limit}), in batches. A batch ends
        early at L{batchBytes} (or the server's own cap): each message
        says how many of the subject's are left after it
        (C{Nats-Num-Pending}), and the read goes on while some are.
        """
        found = []
        while True:
            want = self.batchSize
            if limit is not None:
                want = min(want, limit - len(found))
            if upTo is not None:
                if start > upTo:
                    break
                want = min(want, upTo - start + 1)
            if want <= 0:
                break
            batch = await self._batch({"seq": start, "next_by_subj": subject, "batch": want,
                                       "max_bytes": self.batchBytes})
            for message in batch:
                if upTo is not None and message[0] > upTo:
                    return found
                found.append(message)
            if not _left(batch, want):
                # The end (an empty batch, or none of the subject's left).
                break
            start = batch[-1][0] + 1
        return found

    # IHistory

    def read(self, channel, since, epoch):
        return deferred(self._read(channel, since, epoch))

    def last(self, channel, count, before=None, maxBytes=None):
        return deferred(self._last(channel, count, before, maxBytes))

    async def _read(self, channel, since, epoch):
        """
        The subject's retained messages after C{since}, in batches (the
        first one also reads the message at C{since}: the recovery is
        complete when it is still there). What one read of
        L{recoveryBytes} does not hold is read as the client takes it
        (L{_lazy}).
        """
        await self._untilReady()
        subject = self.subject(channel)
        sameEpoch = epoch is None or epoch == self.epoch
        if not sameEpoch:
            since = 0
        complete = sameEpoch
        prev = 0
        if since <= 0:
            complete = complete and await self._neverTrimmed(self._client.jsm())
        want = min(self.batchSize, self.maxRead + 2)
        found = await self._batch({"seq": max(since, 1), "next_by_subj": subject,
                                   "batch": want, "max_bytes": self.recoveryBytes})
        after = found[-1][0] + 1 if found else None
        left = _left(found, want)
        if since > 0:
            if found and found[0][0] == since:
                prev = since
                found = found[1:]
            else:
                complete = False
        if left:
            recovery = await self._lazy(channel, subject, found, after, complete, prev)
            if recovery is not None:
                return recovery
            # The channel changed too fast to be counted: read it all.
            found += await self._range(subject, after, limit=self.maxRead + 1 - len(found))
        if len(found) > self.maxRead:
            # More than one recovery gives: the newest of them (the live
            # messages held meanwhile follow on from those), and the
            # client is told some are missing, which it may page back to
            # with a history request.
            newest = await self._previous(subject, None)
            found = (found[-self.maxRead:] if newest is None
                     else await self._window(subject, newest[0], self.maxRead))
            complete = False
        messages, cut = self._retained(channel, found)
        if cut:
            complete = False
            prev = found[cut - 1][0]
        messages = tuple((sequence, payload) for sequence, _, headers, payload in messages
                         if not _forged(headers, payload))
        top = found[-1][0] if found else since
        return Recovery(self.epoch, complete, messages, top, prev=prev if complete else 0)

    async def _lazy(self, channel, subject, found, after, complete, prev):
        """
        A recovery larger than its first read (C{found}; the subject has
        messages from stream sequence C{after} on too): its messages are
        those up to the subject's newest now, counted (the reply says how
        many) and read a batch at a time as the client takes them.

        @return: the L{Recovery}, or L{None} when they could not be
            counted (the channel kept changing): the caller reads them all.
        """
        newest = await self._previous(subject, None)
        if newest is None:
            return None
        top = newest[0]
        start = found[0][0] if found else after
        retention = self.policy.retentionFor(channel)
        oldest = _oldestKept(retention)
        if oldest is not None:
            young = await self._firstSince(subject, oldest)
            if young is None or young > top:
                return Recovery(self.epoch, False, (), top)
            if young > start:
                start = young
                complete = False
        counted = await self._countBetween(subject, start, top)
        if counted is None:
            return None
        if counted[0] > start:
            # Removed by the stream's limits since the first read.
            complete = False
        start, count = counted
        limit = self.maxRead
        if retention is not None and retention.messages < limit:
            limit = retention.messages
        if count > limit:
            start = await self._windowStart(subject, top, limit)
            counted = None if start is None else await self._countBetween(subject, start, top)
            if counted is None:
                return None
            start, count = counted
            complete = False
        if not count:
            return Recovery(self.epoch, False, (), top)
        first = [m for m in found if start <= m[0] <= top]
        messages = tuple((sequence, payload) for sequence, _, headers, payload in first
                         if not _forged(headers, payload))
        rest = None
        if count > len(first):
            cursor = first[-1][0] if first else start
            rest = _RestReader(self, subject, cursor, bool(first), top, count - len(first))
        return Recovery(self.epoch, complete, messages, top, prev=prev if complete else 0,
                        count=count - (len(first) - len(messages)), rest=rest)

    async def _countBetween(self, subject, start, top):
        """
        How many of the subject's messages there are from stream sequence
        C{start} to C{top}: the counts the stream gives are up to its
        newest message, so those after C{top} are counted before and
        after, and the count is taken when nothing was published between.

        @return: C{(the first sequence at or after C{start}, the count)},
            or L{None} after L{countTries} tries.
        """
        for _ in range(self.countTries):
            _, before = await self._countFrom(subject, top + 1)
            first, total = await self._countFrom(subject, start)
            _, later = await self._countFrom(subject, top + 1)
            if before == later:
                if first is None or first > top:
                    return start, 0
                return first, total - later
        return None

    async def _firstSince(self, subject, moment):
        """
        @return: the stream sequence of the subject's first message stored
            at or after C{moment}, or L{None}: one request.
        """
        found = await self._batch({"start_time": moment.isoformat().replace("+00:00", "Z"),
                                   "next_by_subj": subject, "batch": 1})
        return found[0][0] if found else None

    async def _neverTrimmed(self, jsm):
        """
        Whether nothing was ever removed from the stream: then all there
        ever was is there.
        """
        self.requests += 1
        info = await jsm.stream_info(self.stream)
        return (info.state.first_seq or 1) <= 1

    def _retained(self, channel, found):
        """
        The pattern's own limits, where they are smaller than the stream's.

        @return: C{(messages, how many were cut from the start)}.
        """
        retention = self.policy.retentionFor(channel)
        kept = found
        oldest = _oldestKept(retention)
        if oldest is not None:
            kept = [m for m in kept if m[1] is None or m[1] >= oldest]
        if retention is not None and len(kept) > retention.messages:
            kept = kept[-retention.messages:]
        return kept, len(found) - len(kept)

    async def _previous(self, subject, upTo):
        """
        The subject's newest message at or before stream sequence C{upTo}
        (L{None}: the newest of all), in one request.

        @return: C{(sequence, time, headers, payload)}, or L{None}.
        """
        request = {"multi_last": [subject], "batch": 1}
        if upTo is not None:
            request["up_to_seq"] = upTo
        self.requests += 1
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

    async def _newestFirst(self, subject, upTo, want):
        """
        The subject's messages at or before stream sequence C{upTo} (L{None}:
        all), newest first: for more than L{stepLimit} of them, the newest
        C{want + 1} in batches (L{_window}), then (or else) one request a
        message.
        """
        if upTo is not None and want > self.stepLimit:
            window = await self._window(subject, upTo, want + 1)
            for message in reversed(window):
                yield message
            if len(window) < want + 1:
                return
            upTo = window[0][0] - 1
        while upTo is None or upTo >= 1:
            message = await self._previous(subject, upTo)
            if message is None:
                return
            yield message
            upTo = message[0] - 1

    async def _countFrom(self, subject, sequence):
        """
        @return: C{(the subject's first sequence at or after C{sequence},
            how many of its messages are there from it on)}, or
            C{(None, 0)}: one request.
        """
        found = await self._batch({"seq": sequence, "next_by_subj": subject, "batch": 1})
        if not found:
            return None, 0
        first, _, headers, _ = found[0]
        return first, int(headers.get("Nats-Num-Pending") or 0) + 1

    async def _window(self, subject, upTo, want):
        """
        The subject's last C{want} messages at or before stream sequence
        C{upTo}, oldest first (L{_windowStart}), read in batches.
        """
        start = await self._windowStart(subject, upTo, want)
        if start is None:
            return []
        return await self._range(subject, start, upTo, limit=want)

    async def _windowStart(self, subject, upTo, want):
        """
        Where the subject's last C{want} messages at or before stream
        sequence C{upTo} start, found by bisection on the subject's pending
        counts (a request per step, about log2(upTo) of them).

        @return: that sequence, or L{None} when there are none.
        """
        _, after = await self._countFrom(subject, upTo + 1)
        first, total = await self._countFrom(subject, 1)
        if first is None or first > upTo:
            return None
        start = first
        if total - after > want:
            low, high = first, upTo
            while low < high:
                middle = (low + high) // 2
                sequence, count = await self._countFrom(subject, middle)
                inRange = count - after if sequence is not None and sequence <= upTo else 0
                if inRange <= want:
                    high = middle
                else:
                    low = middle + 1
            start = low
        return start

    async def _last(self, channel, count, before=None, maxBytes=None):
        """
        Read backwards from the newest message (or from C{before}), one
        request a message, only as many as asked (C{count}, C{maxBytes}),
        and the pattern's own limits.
        """
        await self._untilReady()
        subject = self.subject(channel)
        retention = self.policy.retentionFor(channel)
        oldest = _oldestKept(retention)
        # Beyond the pattern's count limit (known from the newest only).
        depth = retention.messages if retention is not None and before is None else None
        top = 0
        want = min(count, depth) if depth is not None else count
        if before is not None or want > self.stepLimit:
            newest = await self._previous(subject, None)
            top = newest[0] if newest is not None else 0
            if before is not None and before <= 1:
                return Recovery(self.epoch, False, (), top, more=False)
        found = []
        size = 0
        more = False
        trimmed = False
        prev = 0
        upTo = top if before is None else before - 1
        seen = 0
        async for message in self._newestFirst(subject, upTo or None, want):
            sequence, stamp, headers, payload = message
            if oldest is not None and stamp is not None and stamp < oldest:
                trimmed = True
                break
            if depth is not None and seen >= depth:
                trimmed = True
                break
            if len(found) == count or (maxBytes is not None and size > maxBytes):
                more = True
                prev = sequence
                break
            seen += 1
            if not top:
                top = sequence
            if not _forged(headers, payload):
                found.append((sequence, payload))
                size += len(payload)
        complete = not more and not trimmed and await self._neverTrimmed(self._client.jsm())
        return Recovery(self.epoch, complete, tuple(found[::-1]), top, more=more, prev=prev)


def _forged(headers, payload):
    """
    Whether a stored message claims the node's word without the node's
    NATS header (an original Go node relayed a client's): never sent.
    """
    return forgedPayload(payload) and NATS_HEADER not in headers


def _oldestKept(retention):
    """
    The oldest time a pattern's age limit keeps (L{None}: no age limit).
    """
    if retention is None or retention.maxAge is None:
        return None
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=retention.maxAge)


def _left(batch, asked):
    """
    How many of the subject's messages follow a batch (its last message's
    C{Nats-Num-Pending}; a server that does not say: a full batch may
    have more).
    """
    if not batch:
        return 0
    pending = batch[-1][2].get("Nats-Num-Pending")
    if pending is None:
        return 1 if len(batch) >= asked else 0
    return int(pending) if pending.isdigit() else 0


class _RestReader:
    """
    The later messages of a recovery (L{Recovery.rest}), read a batch at
    a time when the recovery asks for them: once the messages before are
    written, as fast as its client reads.

    Each read starts at the last message read: while that one is still in
    the stream, no message after it was removed (a stream removes its
    oldest first); when it is gone, messages may have been removed before
    they were read, which the recovery tells its client. One read is made
    ahead of what is asked (while the messages before are written), so a
    recovery holds at most two reads of the node's memory.
    """

    def __init__(self, history, subject, cursor, overlap, top, left):
        """
        @param cursor: the stream sequence to read from: the last read
            (C{overlap}), or the first to read.
        @param top: the last stream sequence of the recovery.
        @param left: how many messages are left to read.
        """
        self._history = history
        self._subject = subject
        self._cursor = cursor
        self._overlap = overlap
        self._top = top
        self._left = left
        self._ahead = deferred(self._next())

    def next(self):
        """
        @return: a L{Deferred} firing with the L{RestOfRecovery} of the
            next batch.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            ahead = deferred(self._next())

        def readAhead(read):
            if not read.done:
                self._ahead = deferred(self._next())
            return read

        return ahead.addCallback(readAhead)

    async def _next(self):
        history = self._history
        overlap = self._overlap
        try:
            batch = await history._batch({
                "seq": self._cursor, "next_by_subj": self._subject,
                "batch": min(history.batchSize, self._left + overlap),
                "max_bytes": history.recoveryBytes})
        except Exception as e:
            # Read ahead, it may have no one waiting for it: said here.
            history.log.warn("Reading the rest of a recovery of {subject} failed: {error}",
                             subject=self._subject, error=f"{type(e).__name__} {e}")
            history.unfilled += 1
            return RestOfRecovery((), missed=True, done=True)
        missed = False
        if overlap:
            if batch and batch[0][0] == self._cursor:
                batch = batch[1:]
            else:
                missed = True
        self._overlap = True
        messages = []
        done = not batch
        for sequence, _, headers, payload in batch:
            if sequence > self._top:
                done = True
                break
            self._cursor = sequence
            self._left -= 1
            if not _forged(headers, payload):
                messages.append((sequence, payload))
        if self._left <= 0 or self._cursor >= self._top:
            done = True
        elif done:
            # Fewer than counted: removed before they were read.
            missed = True
        if missed:
            history.unfilled += 1
        return RestOfRecovery(tuple(messages), missed, done)


def _seconds(duration):
    """
    A stream's C{max_age} (seconds, nats-py) as a number people read.
    """
    return None if not duration else round(float(duration), 3)


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


def _has(found, sequence):
    """
    Whether a read (C{(sequence, ...)} tuples) holds C{sequence}.
    """
    return any(message[0] == sequence for message in found)
