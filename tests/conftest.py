"""
Shared fixtures: real C{twistd lhttp} nodes on free loopback ports.
"""

import pytest

from procs import LHTTPNode


@pytest.fixture
def startNode():
    """
    A factory: C{startNode(*twistdOptions, env=None, pythonPath=())} starts a
    real C{twistd -n lhttp} process, waits until it accepts connections and
    returns its L{procs.LHTTPNode}; every node is stopped after the test.
    """
    nodes = []

    def start(*options, **kwargs):
        node = LHTTPNode(*options, **kwargs)
        nodes.append(node)
        return node.waitReady()

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def lhttpNode(startNode):
    """
    One real C{twistd -n lhttp} node with the default (embedded) broker.
    """
    return startNode()


@pytest.fixture
def natsServer():
    """
    A real C{nats-server} on free loopback ports, stopped after the test.
    """
    from procs import NATSServer

    server = NATSServer().waitReady()
    yield server
    server.stop()


@pytest.fixture
def jetstream():
    """
    A real nats-server with JetStream and a file store in a temp folder
    (C{restart()} keeps the folder and the ports).
    """
    import tempfile

    from procs import NATSServer

    store = tempfile.TemporaryDirectory(prefix="lhttp-js-")
    server = NATSServer(args=["-js", "-sd", store.name]).waitReady()
    yield server
    server.stop()
    store.cleanup()


@pytest.fixture
def authNode():
    """
    The scripted fake node of C{tests/authnode.py} (the authentication wire
    forms) on a free port: C{(url, process)}; its log has a C{recv} line
    per message it received.
    """
    import sys

    from procs import ROOT, Process, freePort, waitFor

    port = freePort()
    node = Process([sys.executable, str(ROOT / "tests" / "authnode.py"), str(port)],
                   env={"PYTHONPATH": str(ROOT)}, name="authnode")
    try:
        waitFor(lambda: "listening" in node.log() or not node.alive(), 20, what="the fake node")
        assert node.alive(), node.log()
        yield f"ws://127.0.0.1:{port}/", node
    finally:
        node.stop()
