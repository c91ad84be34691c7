"""
L{PresenceFilter}: watches what each connection is subscribed to, after
every message (so the C{subscribe} and C{unsubscribe} headers and a
processor's own C{connection.subscribe} all count) and at disconnect, and
tells the presence engine and, for C{--presence-events} channels, the
channel's subscribers.
"""

from twisted.internet.defer import gatherResults
from twisted.logger import Logger

from lhttp.codec import serialize
from lhttp.errors import LHTTPError
from lhttp.presence.engine import Member
from lhttp.presence.policy import userOf
from lhttp.word import EVENT, nodeMessage
from lhttp.processor import HeaderFilter

EVENTS = ("join", "leave")


def event(command, channel, member):
    """
    A C{join} or C{leave} message, serialized::

        LHTTP/1.0 join
        channel:room42
        client:3fa9c1d2-17
        user:alice

    (no C{user} header when the connection has none).
    """
    headers = [("channel", channel), ("client", member.client)]
    if member.user is not None:
        headers.append(("user", member.user))
    return serialize(nodeMessage(command, headers, b"", EVENT))


class _Seen:
    """
    One connection as presence knows it.

    @ivar client: its client id.
    @ivar subscriptions: its subscriptions after its last message.
    @ivar members: channel -> the L{Member} it joined as, for the channels
        presence concerns.
    """

    __slots__ = ("client", "subscriptions", "members")

    def __init__(self, client):
        self.client = client
        self.subscriptions = frozenset()
        self.members = {}


class PresenceFilter(HeaderFilter):
    """
    @ivar policy: the L{lhttp.presence.policy.PresencePolicy}.
    @ivar engine: the L{lhttp.presence.engine.IPresence}.
    """

    log = Logger()

    def __init__(self, policy, engine, pubsub, clientIds):
        """
        @param pubsub: the node's L{lhttp.interfaces.IPubSub}: C{join} and
            C{leave} are published on the channel, to every node.
        @param clientIds: a L{lhttp.presence.policy.ClientIds}.
        """
        self.policy = policy
        self.engine = engine
        self._pubsub = pubsub
        self._clientIds = clientIds
        self._seen = {}

    def clientOf(self, connection):
        """
        @return: the connection's client id (given on first use).
        """
        seen = self._seen.get(connection)
        if seen is None:
            seen = self._seen[connection] = _Seen(self._clientIds.next())
        return seen.client

    def afterRequest(self, connection, message):
        subscriptions = connection.subscriptions
        seen = self._seen.get(connection)
        if seen is None:
            if not subscriptions:
                return None
            self.clientOf(connection)
            seen = self._seen[connection]
        if subscriptions == seen.subscriptions:
            return None
        seen.subscriptions = subscriptions
        concerns = self.policy.concerns
        now = {c for c in subscriptions if concerns(c)}
        members = seen.members
        waits = []
        for channel in [c for c in members if c not in now]:
            waits.append(self._leave(channel, members.pop(channel)))
        user = userOf(connection)
        for channel in now:
            if channel not in members:
                member = members[channel] = Member(seen.client, user)
                waits.append(self._join(channel, member))
        waits = [d for d in waits if d is not None]
        if waits:
            return gatherResults(waits).addCallback(lambda ignored: None)
        return None

    def onClose(self, connection):
        seen = self._seen.pop(connection, None)
        if seen is not None:
            for channel, member in seen.members.items():
                self._leave(channel, member)

    def _join(self, channel, member):
        return self._change(self.engine.join, "join", channel, member, member)

    def _leave(self, channel, member):
        return self._change(self.engine.leave, "leave", channel, member, member.client)

    def _change(self, record, command, channel, member, what):
        """
        Record a join or leave (a tracked channel), then announce it (a
        channel with events): a subscriber told of a join finds the member
        in a C{presence} reply.
        """
        policy = self.policy
        written = record(channel, what) if policy.tracks(channel) else None
        if not policy.announces(channel):
            return written
        if written is None:
            self._announce(command, channel, member)
            return None
        return written.addCallback(lambda ignored: self._announce(command, channel, member))

    def _announce(self, command, channel, member):
        try:
            self._pubsub.publishBytes([channel], event(command, channel, member))
        except LHTTPError as error:
            # The broker is away: subscribers are told of the outage by
            # the broker itself (a 503 notice once it is back).
            self.log.debug("No {command} on {channel}: {error}", command=command,
                           channel=channel, error=error)
