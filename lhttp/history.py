"""
Message history per channel, and recovery after a reconnect.

A channel matching a C{--history} pattern keeps its recent messages. Each
message published on it gets a per-channel, increasing I{offset} within a
stream I{epoch}; subscribers receive it with C{channel}, C{offset} and
C{epoch} headers added after the start line (L{stamp}), so a client always
knows its position::

    LHTTP/1.0 chat
    channel:room.42
    offset:17
    epoch:m3x9a1
    publish:room.42
    ...

A client that comes back subscribes with C{since} (and C{epoch}): it gets
a C{recovery} reply saying whether nothing was lost
(C{recovered:true|false}), then every retained message after that offset,
in order, then live messages, with no gap and no duplicate at the seam.

Engines (L{IHistory}): L{MemoryHistory} on the embedded broker (bounded,
in memory; a restart is a new epoch), JetStream on NATS
(L{lhttp.brokers.nats}).
"""

import itertools
import os
import re
import time
from collections import deque

import attr
from twisted.internet.defer import succeed
from zope.interface import Attribute, Interface, implementer

from lhttp.codec import Message, Part, serializeMultipart
from lhttp.errors import BadHeader

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parseDuration(text):
    """
    C{"90"}, C{"90s"}, C{"15m"}, C{"1h"}, C{"7d"} in seconds.

    @raise ValueError: anything else.
    """
    found = _DURATION.match(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration (90, 90s, 15m, 1h, 7d)")
    return float(found.group(1)) * _UNITS[found.group(2)]


@attr.s(frozen=True, slots=True)
class Retention:
    """
    What a history pattern keeps: the last C{messages} messages of each
    channel, and none older than C{maxAge} seconds (L{None}: no age limit).
    """

    pattern = attr.ib()
    messages = attr.ib()
    maxAge = attr.ib(default=None)


def parseRetention(text):
    """
    Read one C{--history} value: C{PATTERN=N}, C{PATTERN=N,AGE} or
    C{PATTERN=AGE}, e.g. C{room.*=100,1h}. Patterns are NATS subject
    patterns: C{*} matches one dot-separated token, C{>} the rest.

    @rtype: L{Retention}
    @raise ValueError: a malformed value.
    """
    pattern, sep, limits = text.partition("=")
    pattern = pattern.strip()
    if not sep or not pattern or not limits.strip():
        raise ValueError(f"--history wants PATTERN=N[,AGE] (e.g. 'room.*=100,1h'), not {text!r}")
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if not token or (">" in token and (token != ">" or i != len(tokens) - 1)) or ("*" in token and token != "*"):
            raise ValueError(f"--history pattern {pattern!r}: tokens are names, '*', or a final '>'")
    messages, maxAge = None, None
    for item in limits.split(","):
        item = item.strip()
        if item.isdigit():
            messages = int(item)
        else:
            maxAge = parseDuration(item)
    if messages is None:
        messages = 1000
    if messages < 1 or (maxAge is not None and maxAge <= 0):
        raise ValueError(f"--history {text!r}: limits must be positive")
    return Retention(pattern, messages, maxAge)


def matches(pattern, channel):
    """
    Whether a channel name matches a NATS-style pattern.
    """
    want = pattern.split(".")
    have = channel.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


class HistoryPolicy:
    """
    Which channels keep history, and how much: the first matching
    L{Retention} wins.
    """

    def __init__(self, retentions=()):
        self.retentions = tuple(
            r if isinstance(r, Retention) else parseRetention(r) for r in retentions
        )
        self._cache = {}

    def __bool__(self):
        return bool(self.retentions)

    def retentionFor(self, channel):
        """
        @return: the L{Retention} for C{channel}, or L{None}.
        """
        try:
            return self._cache[channel]
        except KeyError:
            pass
        found = next((r for r in self.retentions if matches(r.pattern, channel)), None)
        if len(self._cache) < 10000:
            self._cache[channel] = found
        return found


def stamp(payload, channel, offset, epoch):
    """
    A published message as a history channel's subscribers get it: the
    C{channel}, C{offset} and C{epoch} headers first, before the
    message's own (which a client cannot use to fake a position: a
    header is looked up by its first occurrence).
    """
    end = payload.find(b"\r\n")
    if end < 0:
        return payload
    head = b"channel:%s\r\noffset:%d\r\nepoch:%s\r\n" % (channel.encode(), offset, epoch.encode())
    return payload[: end + 2] + head + payload[end + 2 :]


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


class IHistory(Interface):
    """
    A history engine: keeps recent messages of history channels.
    """

    policy = Attribute("The L{HistoryPolicy}: which channels keep history.")

    def read(channel, since, epoch):
        """
        @param since: an offset (0: from the start of what is retained).
        @param epoch: the epoch C{since} belongs to, or L{None}.
        @return: a L{Deferred} firing with a L{Recovery}.
        """

    def last(channel, count):
        """
        @return: a L{Deferred} firing with a L{Recovery} of the last
            C{count} messages (C{complete} says whether they are all
            there were).
        """


@implementer(IHistory)
class MemoryHistory:
    """
    History in memory, for the embedded broker: per channel a bounded
    deque of C{(offset, time, payload)}; the epoch is new at every start.
    """

    def __init__(self, policy, clock=None):
        """
        @param policy: the L{HistoryPolicy}.
        @param clock: C{seconds()}, for the age limit (default: the
            reactor's notion via L{time.time}).
        """
        self.policy = policy
        self.epoch = newEpoch()
        self._seconds = clock.seconds if clock is not None else time.time
        self._channels = {}

    def append(self, channel, retention, payload):
        """
        Keep a message.

        @return: its offset.
        """
        kept = self._channels.get(channel)
        if kept is None:
            kept = self._channels[channel] = _Kept(retention.messages)
        kept.top += 1
        kept.messages.append((kept.top, self._seconds(), payload))
        return kept.top

    def _trim(self, channel):
        kept = self._channels.get(channel)
        if kept is None:
            return None
        retention = self.policy.retentionFor(channel)
        if retention is not None and retention.maxAge is not None:
            oldest = self._seconds() - retention.maxAge
            while kept.messages and kept.messages[0][1] < oldest:
                kept.messages.popleft()
        return kept

    def read(self, channel, since, epoch):
        kept = self._trim(channel)
        if kept is None:
            return succeed(Recovery(self.epoch, epoch in (None, self.epoch) and since == 0, (), 0))
        first = kept.messages[0][0] if kept.messages else kept.top + 1
        sameEpoch = epoch is None or epoch == self.epoch
        if not sameEpoch:
            since = 0
        complete = sameEpoch and since >= first - 1
        messages = tuple((offset, payload) for offset, _, payload in kept.messages if offset > since)
        return succeed(Recovery(self.epoch, complete, messages, kept.top))

    def last(self, channel, count):
        kept = self._trim(channel)
        if kept is None:
            return succeed(Recovery(self.epoch, True, (), 0))
        messages = tuple((offset, payload) for offset, _, payload in itertools.islice(
            reversed(kept.messages), count))[::-1]
        first = messages[0][0] if messages else kept.top + 1
        return succeed(Recovery(self.epoch, first == 1, messages, kept.top))


class _Kept:
    __slots__ = ("messages", "top")

    def __init__(self, limit):
        self.messages = deque(maxlen=limit)
        self.top = 0


def parseSince(value, names):
    """
    Read a C{since} or C{epoch} header for the channels of a C{subscribe}
    header: a bare value applies to every channel; C{name=value} pairs,
    space-separated, to one each.

    @return: C{{channel: value}}.
    @raise BadHeader: a pair for a channel not subscribed to, or a
        malformed value.
    """
    if value is None:
        return {}
    items = value.split()
    if len(items) == 1 and "=" not in items[0]:
        return {name: items[0] for name in names}
    found = {}
    for item in items:
        name, sep, rest = item.rpartition("=")
        if not sep or name not in names or not rest:
            raise BadHeader(f"{item!r}: want CHANNEL=VALUE for a channel of the subscribe header")
        found[name] = rest
    return found


def offsetOf(text):
    """
    @raise BadHeader: not a non-negative integer.
    """
    if not text.isdigit():
        raise BadHeader(f"an offset is a non-negative integer, not {text!r}")
    return int(text)


def historyReply(channel, recovery, command="history"):
    """
    The reply to a C{history} request: the messages as the parts of a
    multipart body, each part's headers giving its offset.

    @rtype: L{Message}
    """
    parts = [Part([("offset", str(offset))], stamp(payload, channel, offset, recovery.epoch))
             for offset, payload in recovery.messages]
    headers = [
        ("channel", channel),
        ("epoch", recovery.epoch),
        ("offset", str(recovery.top)),
        ("count", str(len(parts))),
        ("complete", "true" if recovery.complete else "false"),
    ]
    body = b""
    if parts:
        offsets, body = serializeMultipart(parts)
        headers.append(("multipart", offsets))
    return Message(command, headers, body)


def recoveryReply(channel, recovery, since, command):
    """
    What a subscriber that asked to recover gets first: whether nothing
    was lost, and what follows.
    """
    return Message("recovery", [
        ("channel", channel),
        ("recovered", "true" if recovery.complete else "false"),
        ("epoch", recovery.epoch),
        ("since", str(since)),
        ("count", str(len(recovery.messages))),
        ("offset", str(recovery.top)),
        ("command", command),
    ], b"")
