"""
Presence: who is subscribed to a channel, cluster-wide, and optional
C{join}/C{leave} messages to a channel's subscribers.

  - C{--presence PATTERN}: channels matching it track their subscribers;
    C{presence} and C{presence-stats} requests read them
    (L{lhttp.presence.processor}).
  - C{--presence-events PATTERN}: their subscribers get C{join} and
    C{leave} messages (L{lhttp.presence.filter}).

Each connection gets a client id unique in the cluster (node id, counter);
a filter or processor names its user with C{connection.data["user"]}
before it subscribes.

Engines (L{lhttp.interfaces.IPresence}): in memory on the embedded
broker; with C{--nats}, a JetStream key-value bucket whose entries expire
after C{--presence-ttl} seconds unless their node refreshes them
(L{lhttp.presence.jetstream}), so a crashed node's clients leave the lists.
"""

from lhttp.presence.engine import IPresence, Member, MemoryPresence
from lhttp.presence.filter import PresenceFilter
from lhttp.presence.policy import ClientIds, PresencePolicy
from lhttp.presence.processor import PresenceProcessor

__all__ = [
    "IPresence", "Member", "MemoryPresence", "PresenceFilter", "PresencePolicy",
    "PresenceProcessor", "install",
]


# The chat-room demo's rooms: with --demo and no --presence-events of the
# operator's, their subscribers get join and leave events (the demo shows
# them; a join is not a chat message and is kept in no history).
DEMO_ROOMS = ("room.*",)


def eventPatterns(config):
    """
    The channel patterns whose subscribers get join and leave events.
    """
    if config.presenceEvents or not config.demo:
        return config.presenceEvents
    return DEMO_ROOMS


def install(server, engine=None, clientIds=None):
    """
    Add presence to a node, as its L{lhttp.config.Config} says: the
    filter that watches subscriptions (after the built-in ones) and, when
    some channel tracks presence, the C{presence} and C{presence-stats}
    processors.

    @param server: an L{lhttp.server.LHTTPServer}.
    @param engine: an L{IPresence} (default: L{MemoryPresence}).
    @param clientIds: a L{ClientIds} (default: a new node id).
    @return: the L{PresenceFilter}.
    """
    config = server.config
    policy = PresencePolicy(config.presence, eventPatterns(config))
    if engine is None:
        engine = MemoryPresence()
    if clientIds is None:
        clientIds = ClientIds()
    presenceFilter = PresenceFilter(policy, engine, server.pubsub, clientIds,
                                    clock=server.factory.reactor)
    server.dispatcher.addFilter(presenceFilter)
    # A node stopped normally: its clients leave before the engine (and,
    # after it, the broker) stops.
    engine.beforeStop.append(presenceFilter.leaveAll)
    if policy.tracked:
        # The node's own: an application's processor for them replaces them.
        dispatcher = server.dispatcher
        guard = server.guard
        dispatcher.addProcessor("presence", PresenceProcessor(presenceFilter, guard=guard),
                                builtin=True)
        dispatcher.addProcessor(
            "presence-stats", PresenceProcessor(presenceFilter, stats=True, guard=guard),
            builtin=True,
        )
    return presenceFilter
