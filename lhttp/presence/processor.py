"""
The C{presence} and C{presence-stats} requests.

A client subscribed to a channel that tracks presence asks who else is::

    LHTTP/1.0 presence
    channel:room42

and gets one line per subscribed connection, cluster-wide, sorted by
client id: the client id, then a space and the user when the connection
has one; each line ends with CRLF::

    LHTTP/1.0 presence
    channel:room42
    count:3
    users:2
    self:3fa9c1d2-17

    3fa9c1d2-17 alice
    3fa9c1d2-20
    8b0e44a1-4 bob

C{presence-stats} gives the counts only (C{clients}, distinct C{users}),
with no body.
"""

from lhttp.word import nodeMessage
from lhttp.errors import BadHeader, Forbidden, NoPresence
from lhttp.processor import Processor


def presenceReply(command, channel, members, client):
    """
    @param members: the channel's L{lhttp.presence.engine.Member}s.
    @param client: the asking connection's client id.
    @rtype: L{Message}
    """
    lines = [m.client if m.user is None else f"{m.client} {m.user}" for m in members]
    body = "".join(line + "\r\n" for line in lines).encode("utf-8")
    return nodeMessage(command, [
        ("channel", channel),
        ("count", str(len(members))),
        ("users", str(_users(members))),
        ("self", client),
    ], body)


def statsReply(command, channel, members):
    """
    @rtype: L{Message}
    """
    return nodeMessage(command, [
        ("channel", channel),
        ("clients", str(len(members))),
        ("users", str(_users(members))),
    ], b"")


def _users(members):
    return len({m.user for m in members if m.user is not None})


class PresenceProcessor(Processor):
    """
    Answers C{presence} (the list) or, with C{stats}, C{presence-stats}
    (the counts).

    Only a subscriber of the channel may ask (403 otherwise); a channel
    without presence is a 404.
    """

    def __init__(self, presenceFilter, stats=False, guard=None):
        """
        @param presenceFilter: the node's
            L{lhttp.presence.filter.PresenceFilter} (its policy, engine and
            client ids).
        @param guard: the node's L{lhttp.auth.guard.ChannelGuard} (the
            C{presence} permission), or L{None} when permissions are off.
        """
        self._guard = guard
        self._filter = presenceFilter
        self._stats = stats

    def onMessage(self, connection, message):
        value = message.getHeader("channel")
        if value is None:
            raise BadHeader(f"{message.command!r} names its channel: 'channel:NAME'")
        names = connection.checkChannels(value)
        if len(names) != 1:
            raise BadHeader(f"{message.command!r} names one channel, not {len(names)}")
        channel = names[0]
        if self._guard is not None:
            # Before anything else is said about the channel.
            self._guard.require(connection, names, "presence")
        if not self._filter.policy.tracks(channel):
            raise NoPresence(f"channel {channel!r} does not track its subscribers (--presence)")
        if not connection.isSubscribed(channel):
            raise Forbidden(f"subscribe to {channel!r} to see who is subscribed to it")
        command = message.command
        return self._filter.engine.members(channel).addCallback(
            self._reply, connection, command, channel
        )

    def _reply(self, members, connection, command, channel):
        if self._stats:
            reply = statsReply(command, channel, members)
        else:
            reply = presenceReply(command, channel, members, self._filter.clientOf(connection))
        connection.sendMessage(reply)
