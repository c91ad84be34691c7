"""
A node's figures for people to look at: the admin page (C{--admin-listen})
and C{lhttp top}.

L{lhttp.metrics.Metrics} keeps counters since start, which is what
Prometheus wants; a person wants how busy the node is now. L{NodeStats}
reads the counters every tick (the heartbeat interval, 2 s by default) and
keeps, for the last few minutes, the rates between ticks: messages in
(received from clients), out (written to one client: replies and
deliveries), deliveries and publishes per second. From the same ring it
says how many slow consumers were closed and how many error replies were
sent in that window.

The busiest channels by rate are sampled so that the hot path pays next to
nothing: L{ChannelSampler} counts the channels of one fan-out in every
C{every} (one integer decrement per fan-out otherwise), and C{every} is
adapted each tick so that at most about L{SAMPLES_PER_TICK} fan-outs are
counted; at a few hundred messages a second every one is counted. The
channels with most subscribers come from one pass over at most
L{SCAN_LIMIT} channels per tick.
"""

import heapq
import itertools
from collections import deque

SAMPLES_PER_TICK = 1000
SCAN_LIMIT = 10000
TOP = 10
MAX_SAMPLED_CHANNELS = 2000

# The counters a tick reads, in the order of a series point after its time.
RATES = ("in", "out", "deliveries", "publishes")


class ChannelSampler:
    """
    Counts the channels of one fan-out in every C{every}, for the busiest
    channels by rate. L{lhttp.channels.Channels.deliver} decrements
    C{countdown} and calls L{sample} when it reaches 0.

    @ivar every: one fan-out in this many is counted.
    @ivar countdown: fan-outs left until the next one counted.
    @ivar counts: channel -> fan-outs counted since the last L{take}, at
        most L{MAX_SAMPLED_CHANNELS} channels (others are not counted
        until the next tick).
    """

    def __init__(self, every=1):
        self.every = every
        self.countdown = every
        self.counts = {}
        self.samples = 0

    def sample(self, channels):
        self.countdown = self.every
        self.samples += 1
        counts = self.counts
        for channel in channels:
            count = counts.get(channel)
            if count is not None:
                counts[channel] = count + 1
            elif len(counts) < MAX_SAMPLED_CHANNELS:
                counts[channel] = 1

    def take(self):
        """
        @return: C{{channel: estimated fan-outs}} since the last call (the
            counts times C{every}); C{every} is then chosen for the next
            tick from how many fan-outs there were in this one.
        """
        counts, every = self.counts, self.every
        fanOuts = self.samples * every
        self.counts = {}
        self.samples = 0
        self.every = max(1, fanOuts // SAMPLES_PER_TICK)
        self.countdown = min(self.countdown, self.every)
        return {channel: count * every for channel, count in counts.items()}


def busiest(counts, top=TOP, scan=SCAN_LIMIT):
    """
    @param counts: an iterable of C{(channel, number)}.
    @return: the C{top} channels with the largest numbers, largest first,
        among the first C{scan} of C{counts}.
    """
    return heapq.nlargest(top, itertools.islice(counts, scan), key=lambda item: item[1])


class NodeStats:
    """
    One node's rates and recent events, from its counters.

    @ivar series: the last C{keep} points C{[time, in, out, deliveries,
        publishes]}: the rates (per second) between two ticks.
    """

    def __init__(self, metrics, channels, clock, keep=150, rateWindow=10.0):
        """
        @param metrics: the node's L{lhttp.metrics.Metrics}.
        @param channels: the node's L{lhttp.channels.Channels}; a
            L{ChannelSampler} is installed on it.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @param keep: how many points the series keeps (150 at 2 s: five
            minutes).
        @param rateWindow: seconds the busiest channels by rate are
            measured over.
        """
        self._metrics = metrics
        self._channels = channels
        self._clock = clock
        self._rateWindow = rateWindow
        self.sampler = ChannelSampler()
        channels.sampler = self.sampler
        self.series = deque(maxlen=keep)
        # (time, slow-consumer closes, error replies) at each tick, as long
        # as the series: the recent events are the difference.
        self._events = deque(maxlen=keep + 1)
        self._channelCounts = deque()
        self._last = None
        self.tick()

    def counters(self):
        """
        @return: C{{name: total since start}} for each of L{RATES}.
        """
        m = self._metrics
        return {
            "in": sum(m.received.values()),
            "out": m.sent + self._channels.deliveries,
            "deliveries": self._channels.deliveries,
            "publishes": m.publishes,
        }

    def tick(self):
        """
        Read the counters: one more point of the series.
        """
        now = self._clock.seconds()
        counters = self.counters()
        m = self._metrics
        self._events.append((now, m.slowConsumerDisconnects, sum(m.errors.values())))
        sampled = self.sampler.take()
        last, self._last = self._last, (now, counters)
        if last is None:
            return
        elapsed = now - last[0]
        if elapsed <= 0:
            return
        self.series.append(
            [round(now, 3)] + [round((counters[name] - last[1][name]) / elapsed, 2) for name in RATES]
        )
        self._channelCounts.append((now, elapsed, sampled))
        while self._channelCounts and self._channelCounts[0][0] <= now - self._rateWindow:
            self._channelCounts.popleft()

    def recent(self):
        """
        @return: C{{"seconds", "slowConsumerCloses", "errors"}}: what
            happened over the series' time span.
        """
        first, last = self._events[0], self._events[-1]
        return {
            "seconds": round(last[0] - first[0], 1),
            "slowConsumerCloses": last[1] - first[1],
            "errors": last[2] - first[2],
        }

    def topByRate(self, top=TOP):
        """
        @return: C{[{"channel", "rate"}]}: the channels with most messages
            per second over the rate window (sampled), busiest first.
        """
        totals = {}
        seconds = 0.0
        for ignored, elapsed, counts in self._channelCounts:
            seconds += elapsed
            for channel, count in counts.items():
                totals[channel] = totals.get(channel, 0) + count
        if not seconds:
            return []
        return [{"channel": channel, "rate": round(count / seconds, 2)}
                for channel, count in busiest(totals.items(), top)]

    def topBySubscribers(self, top=TOP):
        """
        @return: C{[{"channel", "subscribers"}]}: the channels with most
            local subscribers, most first.
        """
        return [{"channel": channel, "subscribers": count}
                for channel, count in busiest(self._channels.counts(), top)]

    def figures(self):
        """
        @return: the node's figures now, as the JSON endpoint and the
            heartbeat carry them (without the series).
        """
        channels = self._channels
        latest = self.series[-1] if self.series else [0] + [0.0] * len(RATES)
        return {
            "connections": self._metrics.connections,
            "subscriptions": channels.subscriptions(),
            "channels": channels.channelCount(),
            "rates": dict(zip(RATES, latest[1:])),
            "totals": self.counters(),
            "recent": self.recent(),
            "topBySubscribers": self.topBySubscribers(),
            "topByRate": self.topByRate(),
        }
