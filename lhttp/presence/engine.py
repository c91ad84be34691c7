"""
Where presence is kept (L{IPresence}): in memory for one node
(L{MemoryPresence}); cluster-wide in a JetStream key-value bucket
(L{lhttp.presence.jetstream.JetStreamPresence}).
"""

import attr
from twisted.internet.defer import succeed
from zope.interface import implementer

from lhttp.interfaces import IPresence


@attr.s(frozen=True, slots=True, order=True)
class Member:
    """
    One connection subscribed to a channel.

    @ivar client: its client id, unique cluster-wide.
    @ivar user: the user its connection was given (C{connection.data["user"]})
        when it subscribed, or L{None}.
    """

    client = attr.ib()
    user = attr.ib(default=None, order=False)


@implementer(IPresence)
class MemoryPresence:
    """
    Presence of one node, in memory: the embedded broker's engine.
    """

    def __init__(self):
        # It never stops (it lives as long as the process): never run.
        self.beforeStop = []
        self._channels = {}

    def join(self, channel, member):
        self._channels.setdefault(channel, {})[member.client] = member

    def leave(self, channel, client):
        members = self._channels.get(channel)
        if members is not None:
            members.pop(client, None)
            if not members:
                del self._channels[channel]

    def members(self, channel):
        return succeed(sorted(self._channels.get(channel, {}).values()))

    def describe(self):
        """
        @return: this engine's state, for C{/health}.
        """
        return {"kind": "memory", "ready": True, "channels": len(self._channels)}
