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
    @ivar members: channel -> the L{Member} it joined as, for the channels
        presence concerns.
    @ivar changed: channel -> subscribed, the changes since its last
        message (the last one of a channel wins).
    @ivar told: channel -> the L{Member} its subscribers were last told
        joined (channels with events).
    @ivar held: channels whose C{join}/C{leave} waits for the rate limit.
    @ivar tokens: events it may cause now (a token bucket).
    """

    __slots__ = ("client", "members", "changed", "told", "held", "tokens", "refilled", "flush")

    def __init__(self, client, tokens, now):
        self.client = client
        self.members = {}
        self.changed = {}
        self.told = {}
        self.held = {}
        self.tokens = tokens
        self.refilled = now
        self.flush = None


class PresenceFilter(HeaderFilter):
    """
    @ivar policy: the L{lhttp.presence.policy.PresencePolicy}.
    @ivar engine: the L{lhttp.interfaces.IPresence}.
    @ivar identified: authentication is on: a member's user is the one
        its connection authenticated as (L{lhttp.presence.policy.userOf}).
    @cvar eventRate: C{join}/C{leave} messages one connection causes per
        second at most, after a burst of L{eventBurst}; beyond, what its
        subscribers are told is coalesced: they hear the net change of
        each channel once the rate allows (nothing for a subscribe undone
        before then).
    """

    log = Logger()

    eventRate = 20.0
    eventBurst = 100
    # Authentication is on: members are named by their identity only.
    identified = False

    def __init__(self, policy, engine, pubsub, clientIds, clock=None):
        """
        @param pubsub: the node's L{lhttp.interfaces.IPubSub}: C{join} and
            C{leave} are published on the channel, to every node.
        @param clientIds: a L{lhttp.presence.policy.ClientIds}.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}, for
            the event rate (default: the global reactor).
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.policy = policy
        self.engine = engine
        self._pubsub = pubsub
        self._clientIds = clientIds
        self._clock = clock
        self._seen = {}
        self._stopped = False

    def _seenOf(self, connection):
        seen = self._seen.get(connection)
        if seen is None:
            seen = self._seen[connection] = _Seen(
                self._clientIds.next(), self.eventBurst, self._clock.seconds()
            )
        return seen

    def clientOf(self, connection):
        """
        @return: the connection's client id (given on first use).
        """
        return self._seenOf(connection).client

    def onOpen(self, connection):
        connection.watchSubscriptions(self._subscriptionsChanged)

    def _subscriptionsChanged(self, connection, channels, subscribed):
        """
        Note what changed (the channels presence concerns); it is acted on
        after the message (L{afterRequest}), once the connection's user is
        known, or at once outside a message.
        """
        seen = self._seen.get(connection)
        if self._stopped or (seen is None and not subscribed):
            return
        concerns = self.policy.concerns
        for channel in channels:
            if concerns(channel):
                if seen is None:
                    seen = self._seenOf(connection)
                seen.changed[channel] = subscribed
        if seen is not None and seen.changed and connection.getMessage() is None \
                and connection.connected:
            # Outside a message (a processor's callback): now.
            self.afterRequest(connection, None)

    def afterRequest(self, connection, message):
        seen = self._seen.get(connection)
        if seen is None or not seen.changed:
            return None
        changed, seen.changed = seen.changed, {}
        members = seen.members
        waits = []
        for channel, subscribed in changed.items():
            if subscribed:
                if channel not in members:
                    member = members[channel] = Member(seen.client, userOf(connection, self.identified))
                    waits.append(self._join(seen, channel, member))
            else:
                member = members.pop(channel, None)
                if member is not None:
                    waits.append(self._leave(seen, channel, member))
        waits = [d for d in waits if d is not None]
        if waits:
            return gatherResults(waits).addCallback(lambda ignored: None)
        return None

    def onClose(self, connection):
        seen = self._seen.pop(connection, None)
        if seen is not None:
            self._forget(seen)

    def leaveAll(self):
        """
        The node stops: every connection leaves every channel now, its
        subscribers told at once (before the broker goes), and no more
        joins are taken.
        """
        self._stopped = True
        seen, self._seen = self._seen, {}
        for one in seen.values():
            self._forget(one)

    def _forget(self, seen):
        """
        A connection is gone: its entries are removed and the subscribers
        of every channel that heard its join hear its leave, at once (not
        limited: no more than were told; not after the removal is
        written, as the node may be stopping).
        """
        if seen.flush is not None and seen.flush.active():
            seen.flush.cancel()
        seen.flush = None
        seen.held.clear()
        seen.changed.clear()
        members, seen.members = seen.members, {}
        tracks = self.policy.tracks
        for channel, member in members.items():
            if tracks(channel):
                self.engine.leave(channel, member.client)
        for channel in list(seen.told):
            self._tell(seen, channel, limited=False)

    def _join(self, seen, channel, member):
        return self._change(self.engine.join, seen, channel, member)

    def _leave(self, seen, channel, member):
        return self._change(self.engine.leave, seen, channel, member.client)

    def _change(self, record, seen, channel, what):
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
            self._tell(seen, channel)
            return None
        return written.addCallback(lambda ignored: self._tell(seen, channel))

    # Events: what a channel's subscribers are told, at most eventRate a
    # second per connection.

    def _tell(self, seen, channel, limited=True):
        """
        Tell C{channel}'s subscribers how the connection stands there now,
        if it is not what they were last told: now, or once the rate
        allows.
        """
        if limited and channel in seen.held:
            return
        now = seen.members.get(channel)
        told = seen.told.get(channel)
        if now == told:
            return
        if limited and not self._take(seen):
            seen.held[channel] = None
            self._scheduleFlush(seen)
            return
        if told is not None:
            del seen.told[channel]
            self._announce("leave", channel, told)
        if now is not None:
            seen.told[channel] = now
            self._announce("join", channel, now)

    def _take(self, seen):
        now = self._clock.seconds()
        seen.tokens = min(self.eventBurst, seen.tokens + (now - seen.refilled) * self.eventRate)
        seen.refilled = now
        if seen.tokens >= 1:
            seen.tokens -= 1
            return True
        return False

    def _scheduleFlush(self, seen):
        if seen.flush is None:
            delay = max(0.0, (1 - seen.tokens) / self.eventRate)
            seen.flush = self._clock.callLater(delay, self._flush, seen)

    def _flush(self, seen):
        seen.flush = None
        held = seen.held
        while held:
            channel = next(iter(held))
            if seen.members.get(channel) != seen.told.get(channel) and not self._take(seen):
                self._scheduleFlush(seen)
                return
            del held[channel]
            self._tell(seen, channel, limited=False)

    def _announce(self, command, channel, member):
        try:
            self._pubsub.publishBytes([channel], event(command, channel, member))
        except LHTTPError as error:
            # The broker is away: subscribers are told of the outage by
            # the broker itself (a 503 notice once it is back).
            self.log.debug("No {command} on {channel}: {error}", command=command,
                           channel=channel, error=error)
