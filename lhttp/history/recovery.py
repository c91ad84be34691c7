"""
Recovery: what a history engine answers (L{Recovery}), a stream's epoch,
and the seam between the history read and the live messages
(L{LiveHold}).
"""

import os
import time
from collections import deque

import attr

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

    def __init__(self, prepareAt, isSubscribed):
        """
        @param prepareAt: C{prepareAt(payload, channel, offset, epoch,
            prev)} frames a history message once, with its position.
        @param isSubscribed: C{isSubscribed(subscriber, channel)}: whether
            it is still a local subscriber of the channel.
        """
        self.held = {}
        self._prepareAt = prepareAt
        self._isSubscribed = isSubscribed

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
        consumer by its protocol.

        @return: L{None} once all is written, else a L{Deferred} firing
            then (or when the client is gone).
        """
        key = (subscriber, channel)
        recovering = self.held
        held = recovering.get(key)
        if not isinstance(held, deque):
            return None
        messages = iter(recovery.messages)
        last = 0 if recovery.messages else recovery.top
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

        return pump()
