"""
Channels: name checks, and the node's table of local subscribers with its
fan-out.

Fan-out frames a payload once (C{prepare}) and writes the same frame to every
subscriber (C{sendPreparedMessage}): per delivery, the work is one write.
"""

from functools import lru_cache

from twisted.internet.defer import Deferred, gatherResults

from lhttp.codec import isText, splitList
from lhttp.history.recovery import LiveHold
from lhttp.history.wire import stamp
from lhttp.errors import BadChannel
from lhttp.names import DEFAULT_MAX_CHANNEL_LENGTH, checkChannel

def channelList(channels, maxLength=DEFAULT_MAX_CHANNEL_LENGTH):
    """
    Turn a space-separated header value or an iterable of names into a list
    of checked, distinct channel names, in order.

    @raise BadChannel: if any name is bad, or there is none.
    """
    if isinstance(channels, str):
        if len(channels) <= _CACHED_VALUE_LENGTH:
            return list(_checkedHeaderValue(channels, maxLength))
        channels = splitList(channels)
    return list(_checkedNames(channels, maxLength))


def _checkedNames(channels, maxLength):
    names = tuple(dict.fromkeys(checkChannel(c, maxLength) for c in channels))
    if not names:
        raise BadChannel("no channel named")
    return names


# A publish checks its header's channels twice (before and after the
# processor) and clients send the same few values over and over: remember
# the last good ones, short values only, so the cache stays small.
_CACHED_VALUE_LENGTH = 1024


@lru_cache(maxsize=1024)
def _checkedHeaderValue(value, maxLength):
    return _checkedNames(splitList(value), maxLength)


class Channels:
    """
    The local subscribers of each channel on this node.

    It tells the broker when a channel gets its first local subscriber and
    when it loses its last, and the broker calls L{deliver} for what must
    reach them.

    @ivar broker: the L{lhttp.interfaces.IBroker}.
    """

    def __init__(self, broker, prepare):
        """
        @param prepare: C{prepare(payload, isBinary)} frames a payload once,
            e.g. L{autobahn.websocket.protocol.WebSocketFactory.prepareMessage}.
        """
        self.broker = broker
        self._prepare = prepare
        self._subscribers = {}
        # Channel -> tuple of subscribers, rebuilt on the first delivery
        # after a change, so iteration is safe while subscribers come and go.
        self._snapshots = {}
        # Channel -> the broker's Deferred for a subscription in flight.
        self._pending = {}
        # Every delivery ever made, for lhttp_deliveries_total.
        self.deliveries = 0
        # What arrives live while a subscriber recovers; its table
        # ((subscriber, channel) -> what is held) is looked up here on
        # every history delivery.
        self.recovery = LiveHold(self._prepareAt, self._isSubscribed, self._prepare)
        self._recovering = self.recovery.held
        # The busiest channels by rate, for the admin page: a
        # lhttp.stats.ChannelSampler, or None (not measured).
        self.sampler = None
        broker.attach(self.deliver)

    def add(self, subscriber, names):
        """
        Add a subscriber to channels.

        @param names: checked channel names.
        @return: L{None}, or a L{Deferred} that fires once the broker's
            subscriptions to them are in place cluster-wide.
        """
        waits = []
        for channel in names:
            subscribers = self._subscribers.get(channel)
            if subscribers is None:
                subscribers = self._subscribers[channel] = {}
                pending = self.broker.subscribe(channel)
                if pending is not None:
                    self._pending[channel] = pending
                    pending.addBoth(self._settled, channel, pending)
            subscribers[subscriber] = None
            self._snapshots.pop(channel, None)
            pending = self._pending.get(channel)
            if pending is not None:
                waiter = Deferred()
                pending.addBoth(lambda ignored, waiter=waiter: waiter.callback(None))
                waits.append(waiter)
        if not waits:
            return None
        return gatherResults(waits).addCallback(lambda ignored: None)

    def _settled(self, ignored, channel, pending):
        # The channel may have been left and subscribed again since: only
        # this subscription's entry goes.
        if self._pending.get(channel) is pending:
            del self._pending[channel]

    def remove(self, subscriber, names):
        """
        Remove a subscriber from channels (those it is not on are skipped).
        """
        for channel in names:
            subscribers = self._subscribers.get(channel)
            if subscribers is None or subscriber not in subscribers:
                continue
            del subscribers[subscriber]
            self._snapshots.pop(channel, None)
            if self._recovering:
                self.recovery.release(subscriber, channel)
            if not subscribers:
                del self._subscribers[channel]
                self.broker.unsubscribe(channel)

    def subscriberCount(self, channel):
        return len(self._subscribers.get(channel, ()))

    def names(self):
        """
        @return: the channels with local subscribers.
        """
        return list(self._subscribers)

    def channelCount(self):
        return len(self._subscribers)

    def counts(self):
        """
        @return: an iterator of C{(channel, local subscribers)}, to be
            consumed before the table changes.
        """
        return ((channel, len(subscribers)) for channel, subscribers in self._subscribers.items())

    def subscriptions(self):
        """
        @return: the number of (subscriber, channel) pairs here.
        """
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    def deliver(self, channels, payload, position=None):
        """
        Write C{payload} to every local subscriber of each channel: one copy
        per channel a subscriber is on, framed once.

        @param position: for a message of a history channel (then
            C{channels} is that one channel), C{(epoch, offset, prev)}: it
            goes out with its position (L{lhttp.history.stamp}).
        @return: the number of deliveries.
        """
        sampler = self.sampler
        if sampler is not None:
            sampler.countdown -= 1
            if not sampler.countdown:
                sampler.sample(channels)
        if position is not None:
            return self._deliverAt(channels[0], payload, position)
        prepared = None
        count = 0
        snapshots = self._snapshots
        for channel in channels:
            targets = snapshots.get(channel)
            if targets is None:
                subscribers = self._subscribers.get(channel)
                if not subscribers:
                    continue
                targets = snapshots[channel] = tuple(subscribers)
            if prepared is None:
                prepared = self._prepare(payload, not isText(payload))
            for subscriber in targets:
                subscriber.sendPreparedMessage(prepared)
            count += len(targets)
        self.deliveries += count
        return count

    def _deliverAt(self, channel, payload, position):
        targets = self._snapshots.get(channel)
        if targets is None:
            subscribers = self._subscribers.get(channel)
            if not subscribers:
                return 0
            targets = self._snapshots[channel] = tuple(subscribers)
        if len(position) == 3:
            epoch, offset, prev = position
        else:
            (epoch, offset), prev = position, 0
        prepared = self._prepareAt(payload, channel, offset, epoch, prev)
        recovering = self._recovering
        if recovering:
            for subscriber in targets:
                if (subscriber, channel) in recovering:
                    self.recovery.offer(subscriber, channel, offset, prepared, len(payload))
                else:
                    subscriber.sendPreparedMessage(prepared)
        else:
            # No one recovers (the usual case): the plain fan-out's loop.
            for subscriber in targets:
                subscriber.sendPreparedMessage(prepared)
        count = len(targets)
        self.deliveries += count
        return count

    def _isSubscribed(self, subscriber, channel):
        return subscriber in self._subscribers.get(channel, ())

    def _prepareAt(self, payload, channel, offset, epoch, prev):
        """
        A history channel's message framed once, with its position.
        """
        stamped = stamp(payload, channel, offset, epoch, prev)
        return self._prepare(stamped, not isText(stamped))

    # The recovery seam (L{lhttp.history.recovery.LiveHold}): hold live
    # messages, write the history read, merge, go live.

    def holdLive(self, subscriber, channel):
        """
        See L{lhttp.history.recovery.LiveHold.holdLive}.
        """
        self.recovery.holdLive(subscriber, channel)

    def isRecovering(self, subscriber, channel):
        """
        See L{lhttp.history.recovery.LiveHold.isRecovering}.
        """
        return self.recovery.isRecovering(subscriber, channel)

    def recovered(self, subscriber, channel, recovery):
        """
        See L{lhttp.history.recovery.LiveHold.recovered}.
        """
        return self.recovery.recovered(subscriber, channel, recovery)
