"""
L{PatternTable}: which of a list of NATS-style channel patterns a channel
matches first, at a cost that does not depend on what others asked before.

The patterns are compiled into one regular expression, so a lookup is one
match over the channel's name, however many patterns there are; the
answers of the channels asked most recently are kept in a bounded LRU, so
naming many channels costs their askers one match each, never a scan for
everyone else (a cache that stops filling once full would do that).
"""

import re
from collections import OrderedDict


def patternRegex(pattern):
    """
    A regular expression source matching what
    L{lhttp.history.matches} matches: C{*} one dot-separated token (it
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
