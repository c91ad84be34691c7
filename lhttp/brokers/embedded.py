"""
The embedded broker: one node, in-process, the default. It needs nothing
else running.
"""

from twisted.internet.defer import succeed
from zope.interface import implementer

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

    def __init__(self, history=None):
        self._deliver = None
        self.history = history

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

    def publish(self, channels, payload, onFailure=None):
        history = self.history
        if history is None or payloadKind(payload) == EVENT:
            # The node's join and leave reach subscribers, never history.
            self._deliver(channels, payload)
            return
        retentionFor = history.policy.retentionFor
        plain = []
        for channel in channels:
            retention = retentionFor(channel)
            if retention is None:
                plain.append(channel)
            else:
                offset = history.append(channel, retention, payload)
                self._deliver((channel,), payload, (history.epoch, offset))
        if plain:
            self._deliver(plain, payload)

    def confirm(self):
        return succeed(None)
