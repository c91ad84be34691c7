"""
The embedded broker: one node, in-process, the default. It needs nothing
else running.
"""

from twisted.internet.defer import succeed
from zope.interface import implementer

from lhttp.acks import Receipt, RecentKeys, messageId
from lhttp.interfaces import IBroker
from lhttp.word import EVENT, payloadKind


@implementer(IBroker)
class EmbeddedBroker:
    """
    Delivers every publish straight to this node's local subscribers.

    @ivar history: the L{lhttp.history.MemoryHistory} of the channels that
        keep history, or L{None}.
    """

    ready = True

    def __init__(self, history=None, recentKeys=None):
        """
        @param recentKeys: the L{lhttp.acks.RecentKeys} window in which a
            repeated idempotency key is dropped (default: the documented
            one).
        """
        self._deliver = None
        self.history = history
        self._recent = recentKeys if recentKeys is not None else RecentKeys()

    def describe(self):
        description = {"kind": "embedded", "ready": True}
        history = self.history
        if history is not None:
            description["history"] = {
                "epoch": history.epoch, "messages": history.count, "bytes": history.bytes,
            }
        return description

    def attach(self, deliver):
        self._deliver = deliver

    def subscribe(self, channel):
        pass

    def unsubscribe(self, channel):
        pass

    def publish(self, channels, payload, onFailure=None, key=None, onConfirmed=None):
        history = self.history
        if key is None and (history is None or payloadKind(payload) == EVENT):
            # (The node's join and leave reach subscribers, never history.)
            self._deliver(channels, payload)
            if onConfirmed is not None:
                onConfirmed(Receipt())
            return
        retentionFor = history.policy.retentionFor if history is not None else _none
        recent = self._recent
        plain = []
        positions = []
        duplicate = False
        for channel in channels:
            identifier = messageId(channel, key) if key is not None else None
            known = recent.get(identifier) if identifier is not None else None
            if known is not None:
                # A retry: stored and delivered once already.
                duplicate = True
                if known is not True:
                    positions.append((channel, *known))
                continue
            retention = retentionFor(channel)
            if retention is None:
                plain.append(channel)
                if identifier is not None:
                    recent.remember(identifier)
            else:
                # The channel's previous offset: its messages' prev.
                prev = history.top(channel)
                offset = history.append(channel, retention, payload)
                position = (history.epoch, offset)
                if identifier is not None:
                    recent.remember(identifier, position)
                positions.append((channel, *position))
                self._deliver((channel,), payload, (*position, prev))
        if plain:
            self._deliver(plain, payload)
        if onConfirmed is not None:
            onConfirmed(Receipt(positions, duplicate))

    def confirm(self):
        return succeed(None)


def _none(channel):
    return None
