"""
The embedded broker: one node, in-process, the default. It needs nothing
else running.
"""

from twisted.internet.defer import succeed
from zope.interface import implementer

from lhttp.interfaces import IBroker


@implementer(IBroker)
class EmbeddedBroker:
    """
    Delivers every publish straight to this node's local subscribers.
    """

    ready = True

    def __init__(self):
        self._deliver = None

    def describe(self):
        return {"kind": "embedded", "ready": True}

    def attach(self, deliver):
        self._deliver = deliver

    def subscribe(self, channel):
        pass

    def unsubscribe(self, channel):
        pass

    def publish(self, channels, payload, onFailure=None):
        self._deliver(channels, payload)

    def confirm(self):
        return succeed(None)
