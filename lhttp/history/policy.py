"""
Which channels keep history, and how much: the C{--history} grammar
(C{PATTERN=N[,AGE]} or C{PATTERN=AGE}) and the policy built from it. A leaf: it imports
only L{lhttp.patterns}, so L{lhttp.config} can check options with it.
"""

import re

import attr

from lhttp.patterns import PatternTable, checkPattern

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


DEFAULT_MESSAGES = 1000
_GRAMMAR = "PATTERN=N[,AGE] or PATTERN=AGE, e.g. 'room.*=100,1h'"


def parseRetention(text):
    """
    Read one C{--history} value: C{PATTERN=N}, C{PATTERN=N,AGE}, or
    C{PATTERN=AGE} (the last 1000 messages, none older than AGE), e.g.
    C{room.*=100,1h}. Patterns are NATS subject patterns: C{*} matches one
    dot-separated token, C{>} the rest.

    @rtype: L{Retention}
    @raise ValueError: a malformed value, naming the part that is wrong.
    """
    pattern, sep, limits = text.partition("=")
    pattern = pattern.strip()
    if not sep or not pattern or not limits.strip():
        raise ValueError(f"--history wants {_GRAMMAR}, not {text!r}")
    checkPattern(pattern, "--history")
    items = [item.strip() for item in limits.split(",")]
    if len(items) > 2:
        raise ValueError(f"--history {text!r}: at most a count and an age ({_GRAMMAR})")
    messages, maxAge = DEFAULT_MESSAGES, None
    if len(items) == 2:
        count, age = items
        if not (count.isascii() and count.isdigit()):
            raise ValueError(
                f"--history {text!r}: {count!r} should be a message count such as 100 "
                f"(the count comes first, then the age: {_GRAMMAR})")
        messages = int(count)
        maxAge = _age(text, age, "should be")
    elif items[0].isascii() and items[0].isdigit():
        messages = int(items[0])
    else:
        maxAge = _age(text, items[0], "is neither a message count (100) nor")
    if messages < 1 or (maxAge is not None and maxAge <= 0):
        raise ValueError(f"--history {text!r}: limits must be above 0")
    return Retention(pattern, messages, maxAge)


def _age(text, item, what):
    try:
        return parseDuration(item)
    except ValueError:
        raise ValueError(
            f"--history {text!r}: {item!r} {what} an age such as 90s, 15m, 1h or 7d") from None


class HistoryPolicy:
    """
    Which channels keep history, and how much: the first matching
    L{Retention} wins.
    """

    def __init__(self, retentions=()):
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
