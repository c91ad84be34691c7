"""
L{lhttp.engines}: the one place a node's broker, history and presence are
made from its config.
"""

from twisted.internet.task import Clock

from lhttp.brokers.embedded import EmbeddedBroker
from lhttp.config import Config
from lhttp.engines import makeEngines
from lhttp.history import MemoryHistory
from lhttp.presence import MemoryPresence
from lhttp.server import LHTTPServer


def test_alone():
    engines = makeEngines(Config(), Clock())
    assert isinstance(engines.broker, EmbeddedBroker)
    assert engines.history is None and engines.broker.history is None
    assert engines.presence is None and engines.nats is None


def test_aloneWithHistoryAndPresence():
    engines = makeEngines(Config(history=["room.*=10"], presence=["room.*"]), Clock())
    assert isinstance(engines.history, MemoryHistory)
    assert engines.history is engines.broker.history
    assert isinstance(engines.presence, MemoryPresence)


def test_cluster():
    """
    With C{--nats}: the broker, its JetStream history and the JetStream
    presence share one connection (not opened before its service starts).
    """
    from lhttp.brokers.nats import NATSBroker
    from lhttp.history.jetstream import JetStreamHistory
    from lhttp.presence.jetstream import JetStreamPresence

    config = Config(nats=["nats://127.0.0.1:1"], history=["room.*=10"], presence=["room.*"])
    engines = makeEngines(config, Clock(), name="test")
    assert isinstance(engines.broker, NATSBroker)
    assert isinstance(engines.history, JetStreamHistory)
    assert isinstance(engines.presence, JetStreamPresence)
    assert engines.nats is not None
    assert not engines.broker.ready


def test_serverDefault():
    """
    A server made without a broker gets the engines of a node on its own.
    """
    server = LHTTPServer(Config(history=["room.*=10"], presence=["room.*"]), reactor=Clock())
    assert isinstance(server.broker.history, MemoryHistory)
    assert isinstance(server.presence.engine, MemoryPresence)
