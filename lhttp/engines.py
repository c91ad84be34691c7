"""
The one place a node's engines are made from its L{lhttp.config.Config}:
the broker (L{lhttp.interfaces.IBroker}), its history
(L{lhttp.interfaces.IHistory}, the broker's C{history}: history is part of
the broker, as a publish's position comes from it) and presence
(L{lhttp.interfaces.IPresence}).

  - on its own (no C{--nats}): the embedded broker, history in memory
    (L{lhttp.history.MemoryHistory}), presence in memory;
  - with C{--nats}: one NATS connection
    (L{lhttp.brokers.connection.NATSConnection}) shared by the NATS broker,
    its history in a JetStream stream (L{lhttp.history.jetstream}) and
    presence in a JetStream key-value bucket (L{lhttp.presence.jetstream}).
"""

import attr

from lhttp.brokers.embedded import EmbeddedBroker
from lhttp.history.memory import MemoryHistory
from lhttp.history.policy import HistoryPolicy
from lhttp.names import subjectPrefix
from lhttp.presence.engine import MemoryPresence


@attr.s(frozen=True, slots=True)
class Engines:
    """
    @ivar broker: the L{lhttp.interfaces.IBroker}.
    @ivar presence: the L{lhttp.interfaces.IPresence}, or L{None} when the
        config tracks no presence.
    @ivar nats: the L{lhttp.brokers.connection.NATSConnection} the engines
        share, or L{None} on a node of its own.
    """

    broker = attr.ib()
    presence = attr.ib(default=None)
    nats = attr.ib(default=None)

    @property
    def history(self):
        """
        The broker's L{lhttp.interfaces.IHistory}, or L{None}.
        """
        return self.broker.history


def needsPresence(config):
    """
    Whether a node with C{config} tracks who is subscribed: C{--presence},
    C{--presence-events}, or C{--demo}'s rooms, which announce joins.
    """
    return bool(config.presence or config.presenceEvents or config.demo)


def memoryEngines(config, reactor=None):
    """
    The engines of a node on its own: everything in this process.

    @param reactor: the clock history ages are measured with (default: the
        global reactor).
    @rtype: L{Engines}
    """
    history = None
    if config.history:
        history = MemoryHistory(HistoryPolicy(config.history), reactor, config.historyMaxBytes)
    presence = MemoryPresence() if needsPresence(config) else None
    return Engines(EmbeddedBroker(history), presence)


def natsEngines(config, reactor, name=None):
    """
    The engines of a cluster node (C{config.nats} set), on one NATS
    connection. Nothing connects before the connection's service starts.

    @param name: the connection's name, as NATS shows it.
    @rtype: L{Engines}
    """
    # Only a cluster node loads nats-py.
    from lhttp.brokers.connection import NATSConnection
    from lhttp.brokers.nats import NATSBroker

    connection = NATSConnection(config.nats, reactor, name=name)
    history = None
    if config.history:
        from lhttp.history.jetstream import JetStreamHistory

        history = JetStreamHistory(
            HistoryPolicy(config.history), config.historyStream, config.historyMaxBytes,
            subjectPrefix(config.natsPrefix), updateStream=config.historyUpdateStream,
        )
    broker = NATSBroker(config.nats, reactor, prefix=config.natsPrefix, history=history,
                        connection=connection)
    presence = None
    if config.presence:
        from lhttp.presence.jetstream import JetStreamPresence

        presence = JetStreamPresence(
            config.nats, reactor, bucket=config.presenceBucket, ttl=config.presenceTTL,
            connection=connection,
        )
    elif needsPresence(config):
        # Join and leave events alone need no store shared by the nodes.
        presence = MemoryPresence()
    return Engines(broker, presence, connection)


def makeEngines(config, reactor, name=None):
    """
    The engines C{config} asks for: L{natsEngines} with C{--nats},
    L{memoryEngines} without.

    @rtype: L{Engines}
    """
    if config.nats:
        return natsEngines(config, reactor, name)
    return memoryEngines(config, reactor)
