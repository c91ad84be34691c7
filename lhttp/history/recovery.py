"""
Recovery: what a history engine answers (L{Recovery}), a stream's epoch,
and the seam between the history read and the live messages
(L{LiveHold}).
"""

import os
import time
from collections import deque

import attr
from twisted.logger import Logger

from lhttp.codec import missedNotice

def newEpoch():
    """
    A new epoch: different for every stream (re)creation or node start.
    """
    return "%x%s" % (int(time.time()), os.urandom(3).hex())


@attr.s(frozen=True, slots=True)
class Recovery:
    """
    What a channel's history holds after an offset.

    @ivar epoch: the stream's epoch now.
    @ivar complete: whether every message after the offset is among
        C{messages} (false: the offset is older than what is retained, or
        its epoch is not the stream's).
    @ivar messages: C{(offset, payload)} in offset order.
    @ivar top: the newest offset of the channel (0: none yet).
    """

    epoch = attr.ib()
    complete = attr.ib()
    messages = attr.ib()
    top = attr.ib()
    # The history could not be read (the engine is not ready): nothing is
    # known of what was missed, which the reply says.
    unavailable = attr.ib(default=False)
    # For L{IHistory.last}: older retained messages were left out (by the
    # count, C{maxBytes}, or C{before}'s page).
    more = attr.ib(default=False)
    # The offset of the channel's message before the first of C{messages}
    # (0: none, or not known).
    prev = attr.ib(default=0)
    # A recovery larger than one read: how many messages it gives in all
    # (L{None}: those of C{messages}), and the reader of those after
    # C{messages} (its C{next()} fires with a L{RestOfRecovery}), read as
    # the client takes them.
    count = attr.ib(default=None)
    rest = attr.ib(default=None)

    @property
    def total(self):
        """
        How many messages the recovery gives (its reply's C{count}).
        """
        return len(self.messages) if self.count is None else self.count


class RestOfRecovery:
    """
    What a reader of a recovery's later messages (L{Recovery.rest}) gives:
    the messages of its next read, in order, as C{(offset, payload)};
    whether some messages may be missing before them (removed from the
    history before they were read, or the read failed: the client is told
    with the channel's notice); and whether these are the last.
    """

    __slots__ = ("messages", "missed", "done")

    def __init__(self, messages, missed=False, done=False):
        self.messages = messages
        self.missed = missed
        self.done = done


class LiveHold:
    """
    The recovery seam of a node's channels, one small unit: a subscriber
    that asked to recover has its live messages held (L{holdLive}) while
    its history is read; then the history goes out, then what was held
    and is newer, and it goes live (L{recovered}): no gap and no duplicate
    at the seam.

    @ivar held: C{(subscriber, channel)} -> a L{deque} of C{(offset,
        prepared, size)} held while it recovers, or, once recovered, the
        last offset it was given (a late live copy of what the history
        gave is then not sent twice).
    """

    def __init__(self, prepareAt, isSubscribed, prepare):
        """
        @param prepareAt: C{prepareAt(payload, channel, offset, epoch,
            prev)} frames a history message once, with its position.
        @param isSubscribed: C{isSubscribed(subscriber, channel)}: whether
            it is still a local subscriber of the channel.
        @param prepare: C{prepare(payload, binary)} frames any other message.
        """
        self.held = {}
        self._prepareAt = prepareAt
        self._isSubscribed = isSubscribed
        self._prepare = prepare

    def holdLive(self, subscriber, channel):
        """
        Hold C{subscriber}'s live messages of C{channel} until
        L{recovered}. A recovery asked again before the last one ended
        (an SDK that saw a live gap) starts afresh: what was held goes, as
        the new recovery reads it again.
        """
        if (subscriber, channel) in self.held:
            self.release(subscriber, channel)
        self.held[(subscriber, channel)] = deque()

    def offer(self, subscriber, channel, offset, prepared, size):
        """
        A live message of C{channel} for C{subscriber}, which is recovering
        it or has just recovered it: held, dropped as a duplicate, or sent.
        """
        key = (subscriber, channel)
        held = self.held[key]
        if held.__class__ is int:
            # Recovered up to that offset; a late live copy of what the
            # history gave is not sent twice.
            if offset > held:
                del self.held[key]
                subscriber.sendPreparedMessage(prepared)
            return
        held.append((offset, prepared, size))
        if not subscriber.hold(size):
            # More held for it than it may have waiting: a slow consumer,
            # being closed.
            self.release(subscriber, channel)

    def release(self, subscriber, channel):
        """
        Stop holding C{subscriber}'s live messages of C{channel}: they are
        dropped, and no longer count as waiting for it.
        """
        held = self.held.pop((subscriber, channel), None)
        if isinstance(held, deque) and held:
            subscriber.hold(-sum(entry[2] for entry in held))

    def isRecovering(self, subscriber, channel):
        """
        Whether C{subscriber}'s live messages of C{channel} are held (it
        did not leave meanwhile).
        """
        return isinstance(self.held.get((subscriber, channel)), deque)

    def recovered(self, subscriber, channel, recovery):
        """
        Write the history read for C{subscriber} (a L{Recovery}), then
        what arrived live meanwhile past it, and go live.

        The writing is paced by the client's reading: whenever its
        transport asks to pause, it stops until the transport resumes
        (C{subscriber.whenWritable}), so a client that reads gets all of
        it however large, and one that stops reading is closed as a slow
        consumer by its protocol. So is the reading of a recovery larger
        than one read (C{recovery.rest}): its next messages are read once
        the last ones are written.

        @return: L{None} once all is written, else a L{Deferred} firing
            then (or when the client is gone).
        """
        key = (subscriber, channel)
        recovering = self.held
        held = recovering.get(key)
        if not isinstance(held, deque):
            return None
        messages = iter(recovery.messages)
        rest = recovery.rest
        last = 0 if recovery.messages or rest is not None else recovery.top
        # Each recovered message's predecessor in the channel.
        prev = recovery.prev
        epoch = recovery.epoch
        prepareAt = self._prepareAt
        hold = subscriber.hold

        def pump(writable=True):
            nonlocal last, prev
            while True:
                if recovering.get(key) is not held:
                    # It left the channel (or closed) meanwhile.
                    return None
                if not writable:
                    del recovering[key]
                    return None
                if not subscriber.writable:
                    return subscriber.whenWritable().addCallback(pump)
                item = next(messages, None)
                if item is not None:
                    offset, payload = item
                    subscriber.sendPreparedMessage(prepareAt(payload, channel, offset, epoch, prev))
                    last = prev = offset
                elif rest is not None:
                    return rest.next().addCallbacks(more, failed)
                elif held:
                    offset, prepared, size = held.popleft()
                    hold(-size)
                    if offset > last:
                        subscriber.sendPreparedMessage(prepared)
                        last = offset
                else:
                    break
            del recovering[key]
            if last and self._isSubscribed(subscriber, channel):
                recovering[key] = last
            return None

        def more(read):
            nonlocal messages, rest, prev
            if read.missed and recovering.get(key) is held:
                notice = missedNotice(channel, MISSED_IN_RECOVERY)
                subscriber.sendPreparedMessage(self._prepare(notice, False))
                # The next one's predecessor is not known.
                prev = 0
            messages = iter(read.messages)
            if read.done:
                # What was held live and is newer than the last one written
                # goes next (one the history could not give included).
                rest = None
            return pump()

        def failed(failure):
            log.failure("Reading the rest of a recovery of {channel} failed",
                        failure, channel=channel)
            return more(RestOfRecovery((), missed=True, done=True))

        return pump()


log = Logger()

MISSED_IN_RECOVERY = (
    "Messages of this recovery were removed from the history (by its limits) before they "
    "could be read, or the history could not be read: some may be missing here."
)
