"""
The C{history} request (L{HistoryProcessor}).
"""

from zope.interface import implementer

from lhttp.errors import BadHeaderValue, Forbidden, NoHistory
from lhttp.history.wire import historyReply, offsetOf
from lhttp.interfaces import IProcessor


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

    def __init__(self, history, checkChannels, maxSize=1024 * 1024, guard=None):
        """
        @param history: the L{IHistory}.
        @param checkChannels: L{lhttp.interfaces.IPubSub.checkChannels}.
        @param maxSize: the largest message the node sends
            (C{--max-message-size}).
        @param guard: the node's L{lhttp.auth.guard.ChannelGuard} (the
            C{history} permission), or L{None} when permissions are off.
        """
        self._guard = guard
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
        if self._guard is not None:
            # Before anything else is said about the channel.
            self._guard.require(connection, names, "history")
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
