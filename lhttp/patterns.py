"""
NATS-style channel patterns: L{checkPattern} reads one, L{matches} tests
one, and L{PatternTable} tells which of a list of them a channel matches
first, at a cost that does not depend on what others asked before.

The patterns are compiled into one regular expression, so a lookup is one
match over the channel's name, however many patterns there are; the
answers of the channels asked most recently are kept in a bounded LRU, so
naming many channels costs their askers one match each, never a scan for
everyone else (a cache that stops filling once full would do that).
"""

import re
from collections import OrderedDict


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


def patternRegex(pattern):
    """
    A regular expression source matching what
    L{matches} matches: C{*} one dot-separated token (it
    may be empty), a final C{>} one or more.
    """
    parts = []
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == ">":
            return (r"\.".join(parts) + r"\.(?s:.*)") if parts else "(?s:.*)"
        parts.append("[^.]*" if token == "*" else re.escape(token))
    return r"\.".join(parts)


class PatternTable:
    """
    @ivar patterns: the patterns, in order.
    """

    # Channels whose answer is kept.
    cacheSize = 10000

    def __init__(self, patterns, values=None):
        """
        @param patterns: NATS-style patterns (checked already).
        @param values: what L{lookup} answers for each pattern (default:
            its index).
        """
        self.patterns = tuple(patterns)
        self._values = tuple(values) if values is not None else tuple(range(len(self.patterns)))
        if self.patterns:
            source = "|".join(f"({patternRegex(p)})" for p in self.patterns)
            self._match = re.compile(f"(?:{source})").fullmatch
        else:
            self._match = lambda channel: None
        self._cache = OrderedDict()

    def lookup(self, channel):
        """
        @return: the value of the first pattern C{channel} matches, or
            L{None}.
        """
        cache = self._cache
        try:
            found = cache[channel]
        except KeyError:
            pass
        else:
            cache.move_to_end(channel)
            return found
        matched = self._match(channel)
        found = None if matched is None else self._values[matched.lastindex - 1]
        cache[channel] = found
        if len(cache) > self.cacheSize:
            cache.popitem(last=False)
        return found

    def cached(self):
        """
        @return: how many channels' answers are kept.
        """
        return len(self._cache)
