"""
Which channels have presence, who a connection is, and how a channel
name becomes a key-value key.
"""

import itertools
import os

from lhttp.patterns import PatternTable, checkPattern

_KEY_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class PresencePolicy:
    """
    Which channels track their subscribers (C{--presence}) and which tell
    them of joins and leaves (C{--presence-events}).
    """

    def __init__(self, tracked=(), announced=()):
        self.tracked = tuple(checkPattern(p, "--presence") for p in tracked)
        self.announced = tuple(checkPattern(p, "--presence-events") for p in announced)
        # Compiled, with a bounded LRU of answers: a lookup costs one
        # match over the channel's name at most, whatever channels others
        # named before.
        self._tracked = PatternTable(self.tracked)
        self._announced = PatternTable(self.announced)

    def __bool__(self):
        return bool(self.tracked or self.announced)

    def _lookup(self, channel):
        return (
            self._tracked.lookup(channel) is not None,
            self._announced.lookup(channel) is not None,
        )

    def tracks(self, channel):
        """
        @return: whether C{channel}'s subscribers are listed by C{presence}.
        """
        return self._lookup(channel)[0]

    def announces(self, channel):
        """
        @return: whether C{channel}'s subscribers get C{join}/C{leave}.
        """
        return self._lookup(channel)[1]

    def concerns(self, channel):
        """
        @return: whether presence does anything for C{channel}.
        """
        tracked, announced = self._lookup(channel)
        return tracked or announced


class ClientIds:
    """
    Client ids unique cluster-wide: this node's random id, a dash, a
    counter (C{3fa9c1d2-17}). They are valid key-value key tokens.

    @ivar node: this node's id.
    """

    def __init__(self, node=None):
        self.node = node if node is not None else os.urandom(4).hex()
        self._counter = itertools.count(1)

    def next(self):
        return f"{self.node}-{next(self._counter)}"


def userOf(connection, identified=False):
    """
    The user a filter or processor set on a connection
    (C{connection.data["user"]}), as one line of text, or L{None}.

    @param identified: authentication is on: the user is the one the
        connection authenticated as (C{connection.identity.user}), never
        what anything else set.
    """
    user = connection.identity.user if identified else connection.data.get("user")
    if user is None:
        return None
    text = " ".join(str(user).split())
    return text or None


def escapeChannel(channel):
    """
    A channel name as one key-value key token: letters, digits, C{_} and
    C{-} as they are, every other byte of its UTF-8 as C{=XX}
    (C{room.42} is C{room=2E42}). Reversible by L{unescapeChannel}.
    """
    safe = _KEY_SAFE
    return "".join(chr(b) if b in safe else "=%02X" % b for b in channel.encode("utf-8"))


def unescapeChannel(token):
    """
    The channel name L{escapeChannel} made C{token} from.
    """
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "=":
            out.append(int(token[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(ord(token[i]))
            i += 1
    return out.decode("utf-8")
