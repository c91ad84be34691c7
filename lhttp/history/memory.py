"""
History in memory, for the embedded broker (L{MemoryHistory}).
"""

import itertools
import time
from collections import deque

from twisted.internet.defer import succeed
from zope.interface import implementer

from lhttp.history.recovery import Recovery, newEpoch
from lhttp.interfaces import IHistory

@implementer(IHistory)
class MemoryHistory:
    """
    History in memory, for the embedded broker: per channel a bounded
    deque of C{(offset, time, payload)}, and a byte budget over all of
    them. Offsets come from one node-wide sequence, as JetStream's stream
    sequences do: they increase within a channel, not always by one. The
    epoch is new at every start.
    """

    # Channels whose messages are all gone are forgotten; the highest
    # offset each had is remembered for this many of them (beyond that, a
    # floor for all).
    forgetLimit = 100000

    # What keeping one message costs the node beyond its payload: its
    # entry (a tuple with its offset and time), its bytes object's header,
    # its place in the eviction order, and the allocator's rounding: 270
    # to 415 bytes of RSS per message measured on CPython 3.11
    # (tests/test_history_memory.py, and issue 19). C{maxBytes} bounds
    # payload plus this.
    overhead = 400

    def __init__(self, policy, clock=None, maxBytes=64 * 1024 * 1024):
        """
        @param policy: the L{HistoryPolicy}.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}, for
            the age limit (default: L{time.time}).
        @param maxBytes: memory kept across all channels: payload bytes
            plus L{overhead} per message; the oldest message of all goes
            first.
        """
        self.policy = policy
        self.epoch = newEpoch()
        self.maxBytes = maxBytes
        self.bytes = 0
        self.count = 0
        self.sequence = 0
        self._seconds = clock.seconds if clock is not None else time.time
        self._channels = {}
        self._forgotten = {}
        self._forgottenFloor = 0
        # (channel, offset, size) of every message kept, oldest first: what
        # goes when the byte budget is spent.
        self._order = deque()

    def append(self, channel, retention, payload):
        """
        Keep a message.

        @return: its offset.
        """
        kept = self._channels.get(channel)
        if kept is None:
            kept = self._channels[channel] = _Kept(retention.messages)
            kept.dropped = self._forgotten.pop(channel, self._forgottenFloor)
        self.sequence += 1
        offset = kept.top = self.sequence
        messages = kept.messages
        if len(messages) == messages.maxlen:
            self._drop(kept)
        messages.append((offset, self._seconds(), payload))
        size = len(payload)
        self.bytes += size
        self.count += 1
        order = self._order
        order.append((channel, offset))
        if self.bytes + self.count * self.overhead > self.maxBytes:
            self._evict()
        elif len(order) > 2 * self.count + 1000:
            # Entries of messages the count or age limits dropped.
            channels = self._channels
            self._order = deque(
                entry for entry in order
                if (k := channels.get(entry[0])) is not None and k.messages
                and k.messages[0][0] <= entry[1]
            )
        return offset

    def top(self, channel):
        """
        The newest offset a channel ever had in this epoch (0: none known):
        the C{prev} of its next message.
        """
        kept = self._channels.get(channel)
        if kept is not None:
            return kept.top
        return self._forgotten.get(channel, 0)

    def _drop(self, kept):
        offset, _, payload = kept.messages.popleft()
        kept.dropped = offset
        self.bytes -= len(payload)
        self.count -= 1

    def _evict(self):
        """
        The oldest messages of all go until the byte budget holds; channels
        left empty are forgotten.
        """
        order = self._order
        channels = self._channels
        overhead = self.overhead
        while order and self.bytes + self.count * overhead > self.maxBytes:
            channel, offset = order.popleft()
            kept = channels.get(channel)
            if kept is None or not kept.messages or kept.messages[0][0] != offset:
                continue
            self._drop(kept)
            if not kept.messages:
                self._forget(channel, kept)

    def _forget(self, channel, kept):
        del self._channels[channel]
        forgotten = self._forgotten
        forgotten[channel] = kept.dropped
        if len(forgotten) > self.forgetLimit:
            oldest = next(iter(forgotten))
            self._forgottenFloor = max(self._forgottenFloor, forgotten.pop(oldest))

    def _trim(self, channel):
        kept = self._channels.get(channel)
        if kept is None:
            return None
        retention = self.policy.retentionFor(channel)
        if retention is not None and retention.maxAge is not None:
            oldest = self._seconds() - retention.maxAge
            while kept.messages and kept.messages[0][1] < oldest:
                self._drop(kept)
        return kept

    def _droppedAfter(self, channel, kept):
        if kept is not None:
            return kept.dropped
        return self._forgotten.get(channel, self._forgottenFloor)

    def read(self, channel, since, epoch):
        kept = self._trim(channel)
        sameEpoch = epoch is None or epoch == self.epoch
        if not sameEpoch:
            since = 0
        complete = sameEpoch and since >= self._droppedAfter(channel, kept)
        if kept is None:
            return succeed(Recovery(self.epoch, complete, (), 0))
        prev = kept.dropped
        messages = []
        for offset, _, payload in kept.messages:
            if offset > since:
                messages.append((offset, payload))
            else:
                prev = offset
        return succeed(Recovery(self.epoch, complete, tuple(messages), kept.top,
                                prev=prev if complete else 0))

    def last(self, channel, count, before=None, maxBytes=None):
        kept = self._trim(channel)
        if kept is None:
            return succeed(Recovery(self.epoch, self._droppedAfter(channel, None) == 0, (), 0))
        found = []
        size = 0
        newest = reversed(kept.messages)
        if before is not None:
            newest = itertools.dropwhile(lambda entry: entry[0] >= before, newest)
        more = False
        prev = kept.dropped
        for offset, _, payload in newest:
            if len(found) == count or (maxBytes is not None and size > maxBytes):
                more = True
                prev = offset
                break
            found.append((offset, payload))
            size += len(payload)
        messages = tuple(found[::-1])
        complete = not more and kept.dropped == 0
        return succeed(Recovery(self.epoch, complete, messages, kept.top, more=more, prev=prev))


class _Kept:
    __slots__ = ("messages", "top", "dropped")

    def __init__(self, limit):
        self.messages = deque(maxlen=limit)
        self.top = 0
        # The newest offset no longer kept (0: none was dropped).
        self.dropped = 0
