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

from lhttp.codec import Part, serializeMultipart
from lhttp.errors import BadHeaderValue, Forbidden, NoHistory
from lhttp.interfaces import IProcessor
from lhttp.word import nodeMessage

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
    checkPattern(pattern, "--history")
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


def checkPattern(text, flag):
    """
    A NATS-style channel pattern: dot-separated tokens, each a name, C{*}
    (one token) or, last, C{>} (the rest).

    @return: the pattern, stripped.
    @raise ValueError: a malformed pattern.
    """
    pattern = text.strip()
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        if (
            not token
            or any(c.isspace() for c in token)
            or (">" in token and (token != ">" or not last))
            or ("*" in token and token != "*")
        ):
            raise ValueError(
                f"{flag} pattern {text!r}: tokens are names, '*', or a final '>' (room.*, news.>)"
            )
    return pattern


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
        from lhttp.patterns import PatternTable

        self.retentions = tuple(
            r if isinstance(r, Retention) else parseRetention(r) for r in retentions
        )
        # One compiled match per channel not asked recently, whatever
        # channels others named (a bounded LRU, not a cache that stops
        # filling).
        self._table = PatternTable([r.pattern for r in self.retentions], self.retentions)

    def __bool__(self):
        return bool(self.retentions)

    def retentionFor(self, channel):
        """
        @return: the L{Retention} for C{channel}, or L{None}.
        """
        return self._table.lookup(channel)


# What stamp adds, and only the node may set on a published message.
POSITION_HEADERS = ("offset", "epoch", "prev")


def stamp(payload, channel, offset, epoch, prev=0):
    """
    A published message as a history channel's subscribers get it: the
    node's mark C{lhttp-node:position} first (L{lhttp.word}), then the
    C{channel}, C{offset}, C{epoch} and C{prev} headers, before the
    message's own (which a client cannot use to fake a position: a header
    is looked up by its first occurrence, and only the mark says the
    position is the node's).

    @param prev: the offset of the channel's previous message in the same
        epoch (0: none, or not known): a receiver that last saw an offset
        below it missed something.
    """
    end = payload.find(b"\r\n")
    if end < 0:
        return payload
    head = b"lhttp-node:position\r\nchannel:%s\r\noffset:%d\r\nepoch:%s\r\nprev:%d\r\n" % (
        channel.encode(), offset, epoch.encode(), prev)
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
    # The history could not be read (the engine is not ready): nothing is
    # known of what was missed, which the reply says.
    unavailable = attr.ib(default=False)
    # For L{IHistory.last}: older retained messages were left out (by the
    # count, C{maxBytes}, or C{before}'s page).
    more = attr.ib(default=False)
    # The offset of the channel's message before the first of C{messages}
    # (0: none, or not known).
    prev = attr.ib(default=0)


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

    def last(channel, count, before=None, maxBytes=None):
        """
        @param before: only messages with an offset below it (L{None}: up
            to the newest).
        @param maxBytes: stop reading once the payloads read pass this
            many bytes (the message that passes it is among those given,
            so a caller knows it did not fit).
        @return: a L{Deferred} firing with a L{Recovery} of the last
            C{count} messages (C{complete} says whether they are all
            there were, C{more} whether older ones are retained).
        """


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


# An offset, a count, a limit: ASCII digits only (str.isdigit takes '²' and
# Arabic-Indic digits), at most 19 of them.
_isNumber = re.compile(r"[0-9]{1,19}").fullmatch
# An epoch as the node gives it (hex), with room for what other engines use.
_isEpoch = re.compile(r"[0-9A-Za-z_-]{1,64}").fullmatch
MAX_OFFSET = 2 ** 63 - 1


def parseSince(value, names, header="since"):
    """
    Read a C{since} or C{epoch} header for the channels of a C{subscribe}
    header: a bare value applies to every channel; C{name=value} pairs,
    space-separated, to one each.

    @return: C{{channel: value}}.
    @raise BadHeaderValue: a pair for a channel not subscribed to, or a
        malformed value.
    """
    if value is None:
        return {}
    items = value.split()
    if len(items) > len(names):
        raise BadHeaderValue(header, "at most one value per channel of the subscribe header")
    if len(items) == 1 and "=" not in items[0]:
        return {name: items[0] for name in names}
    found = {}
    for item in items:
        name, sep, rest = item.rpartition("=")
        if not sep or name not in names or not rest:
            raise BadHeaderValue(
                header, f"{item[:80]!r}: want CHANNEL=VALUE for a channel of the subscribe header")
        found[name] = rest
    return found


def offsetOf(text, header="since"):
    """
    @param header: the header it came in, named by the error.
    @raise BadHeaderValue: not a non-negative integer of ASCII digits
        below 2**63.
    """
    if not isinstance(text, str) or not _isNumber(text) or int(text) > MAX_OFFSET:
        raise BadHeaderValue(
            header,
            f"an offset is a non-negative integer (ASCII digits, below 2**63), not {str(text)[:40]!r}")
    return int(text)


def epochOf(text):
    """
    @raise BadHeaderValue: not an epoch (1 to 64 ASCII letters, digits,
        C{-} or C{_}).
    """
    if text is None:
        return None
    if not isinstance(text, str) or not _isEpoch(text):
        raise BadHeaderValue(
            "epoch", f"an epoch is 1 to 64 ASCII letters, digits, '-' or '_', not {str(text)[:40]!r}")
    return text


def recoveryPlan(names, since, epoch):
    """
    What a subscribe asks to recover: C{since} and C{epoch} as header
    values (see L{parseSince}) or already C{{channel: value}} / a single
    value.

    @return: C{{channel: (since, epoch)}}, empty without C{since}.
    @raise BadHeaderValue: a malformed value (the reason names the header).
    """
    if since is None:
        return {}
    offsets = _perChannel(since, names, "since")
    epochs = _perChannel(epoch, names, "epoch")
    return {name: (offsetOf(str(value)), epochOf(epochs.get(name)))
            for name, value in offsets.items()}


def _perChannel(value, names, header):
    if value is None:
        return {}
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise BadHeaderValue(
                header, f"{sorted(unknown)[0]!r} is not among the channels subscribed to")
        return dict(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return {name: str(value) for name in names}
    if not isinstance(value, str):
        raise BadHeaderValue(header, f"not a header value: {value!r}"[:80])
    return parseSince(value, names, header)


def historyReply(channel, recovery, command="history", maxSize=None):
    """
    The reply to a C{history} request: the messages as the parts of a
    multipart body, each part's headers giving its offset.

    With C{maxSize}, the reply holds the newest of C{recovery.messages}
    that fit in that many bytes; when older retained messages are left
    out (C{recovery.more}, or cut here) it says C{more:true} and
    C{before:<offset>}, the offset to ask the page before with. A message
    too large to fit a reply alone is left out and named by
    C{skipped:<offset>}.

    @rtype: L{Message}
    """
    epoch = recovery.epoch
    headers = [
        ("channel", channel),
        ("epoch", epoch),
        ("offset", str(recovery.top)),
    ]
    # The headers' own size, with room for count, complete, more, before,
    # skipped and multipart (one offset of at most 20 characters a part).
    budget = None
    if maxSize is not None:
        budget = maxSize - 256 - sum(len(n) + len(v) + 3 for n, v in headers) - len(command)
    parts = []
    used = 0
    cut = recovery.more
    skipped = None
    oldest = None
    messages = recovery.messages
    for index in range(len(messages) - 1, -1, -1):
        offset, payload = messages[index]
        prev = messages[index - 1][0] if index else recovery.prev
        part = Part([("offset", str(offset))], stamp(payload, channel, offset, epoch, prev))
        if budget is not None:
            size = len(part.body) + 2 * len(str(offset)) + 32
            if used + size > budget:
                if not parts:
                    skipped = offset
                    oldest = offset
                    cut = cut or len(recovery.messages) > 1
                else:
                    cut = True
                break
            used += size
        parts.append(part)
        oldest = offset
    parts.reverse()
    headers += [
        ("count", str(len(parts))),
        ("complete", "true" if recovery.complete and not cut else "false"),
    ]
    if cut and oldest is not None:
        headers += [("more", "true"), ("before", str(oldest))]
    if skipped is not None:
        headers.append(("skipped", str(skipped)))
    body = b""
    if parts:
        offsets, body = serializeMultipart(parts)
        headers.append(("multipart", offsets))
    return nodeMessage(command, headers, body)


def recoveryReply(channel, recovery, since, command):
    """
    What a subscriber that asked to recover gets first: whether nothing
    was lost, and what follows.
    """
    headers = [
        ("channel", channel),
        ("recovered", "true" if recovery.complete else "false"),
    ]
    if recovery.epoch is not None:
        headers.append(("epoch", recovery.epoch))
    else:
        # No history kept for it, or it could not be read: a client keeps
        # its position only in the second case.
        headers.append(("history", "unavailable" if recovery.unavailable else "none"))
    headers += [
        ("since", str(since)),
        ("count", str(len(recovery.messages))),
        ("offset", str(recovery.top)),
        ("command", command),
    ]
    return nodeMessage("recovery", headers, b"")


@implementer(IProcessor)
class HistoryProcessor:
    """
    The C{history} request: C{channel} names a history channel the asker
    is subscribed to, C{limit} how many of its last messages (default and
    at most L{maxLimit}), C{before} an offset to read the page before.
    The reply (L{historyReply}) carries them as multipart parts, within
    C{maxSize} bytes.
    """

    maxLimit = 1000

    def __init__(self, history, checkChannels, maxSize=1024 * 1024):
        """
        @param history: the L{IHistory}.
        @param checkChannels: L{lhttp.interfaces.IPubSub.checkChannels}.
        @param maxSize: the largest message the node sends
            (C{--max-message-size}).
        """
        self._history = history
        self._checkChannels = checkChannels
        self._maxSize = maxSize

    def onOpen(self, connection):
        pass

    def onClose(self, connection):
        pass

    def onMessage(self, connection, message):
        value = message.getHeader("channel")
        if value is None:
            raise BadHeaderValue("channel", "a history request names its channel in a channel header")
        names = self._checkChannels(value)
        if len(names) != 1:
            raise BadHeaderValue("channel", "a history request names one channel")
        channel = names[0]
        if self._history.policy.retentionFor(channel) is None:
            raise NoHistory(f"{channel!r} keeps no history (see --history)")
        limit = message.getHeader("limit")
        if limit is None:
            count = self.maxLimit
        else:
            count = offsetOf(limit, "limit")
            if not 1 <= count <= self.maxLimit:
                raise BadHeaderValue("limit", f"a limit is between 1 and {self.maxLimit}, not {count}")
        before = message.getHeader("before")
        if before is not None:
            before = offsetOf(before, "before")
        if channel not in connection.subscriptions:
            raise Forbidden(f"subscribe to {channel!r} to read its history")
        maxSize = self._maxSize
        return self._history.last(channel, count, before, maxSize).addCallback(
            lambda recovery: connection.sendMessage(
                historyReply(channel, recovery, message.command, maxSize))
        )
