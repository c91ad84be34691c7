"""
Publish acknowledgements and idempotent retries on a real cluster: two
C{twistd lhttp --nats --history} nodes on a real nats-server with
JetStream, the link stalled (nats-server stopped with SIGSTOP) and cut
(killed and restarted). A publisher using the Python client's
C{publish(ack=True)} (which retries a 503 with the same idempotency key)
sends numbered messages to a history channel and a plain channel at once;
a subscriber on each node counts what arrives.

Every publish acknowledged must be delivered exactly once to every
subscriber on both channels, and none twice, however often it was sent.
A control publisher in the same run retries without a key (what a client
did before): its duplicates are printed.
"""

import signal
import time
import uuid

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater

from lhttp.client import ErrorReply, ReconnectingClient
from lhttp.word import POSITION, kindOf
from lhttpclients import eventually, subscribed, untilHealth

HISTORY = "hist.*=100000"
CHANNELS = "hist.1 plain"


class Counter:
    """
    What one subscriber received: C{{(channel, body): count}}.
    """

    def __init__(self, protocol):
        self.protocol = protocol
        self.counts = {}
        protocol.onLHTTPMessage = self._received

    def _received(self, message):
        if message.command != "m":
            return
        if kindOf(message) == POSITION:
            channel = message.getHeader("channel")
        else:
            channel = "plain"
        key = (channel, message.body.decode())
        self.counts[key] = self.counts.get(key, 0) + 1

    def delivered(self, body):
        return [self.counts.get((c, body), 0) for c in CHANNELS.split()]


class Run:
    def __init__(self, publisher, control, subscribers):
        self.publisher = publisher
        self.control = control
        self.subscribers = subscribers
        self.acked = {}
        self.failed = {}
        self.pending = []
        self.controlSent = {}
        self.controlFailures = 0

    def publish(self, n):
        body = f"a{n}"
        d = self.publisher.publish(CHANNELS, "m", (), body, ack=True,
                                   key=uuid.uuid4().hex, retries=30, timeout=3)

        def acked(answer):
            self.acked[body] = answer

        def failed(failure):
            self.failed[body] = failure.value

        self.pending.append(d.addCallbacks(acked, failed))

    def publishControl(self, n):
        """
        The control: the same publish, retried on 503 without a key (each
        attempt a new message to the node).
        """
        body = f"c{n}"
        self.controlSent[body] = 0

        async def attempt():
            for _ in range(30):
                protocol = self.control.protocol
                if protocol is None:
                    await deferLater(reactor, 0.25)
                    continue
                self.controlSent[body] += 1
                try:
                    await protocol.publish(CHANNELS, "m", (), body, ack=True, timeout=3)
                    return
                except ErrorReply as error:
                    if error.status != 503:
                        return
                except Exception:
                    pass
                self.controlFailures += 1
                await deferLater(reactor, 0.25)

        self.pending.append(ensureDeferred(attempt()))

    async def settle(self, timeout=60):
        await eventually(lambda: all(d.called for d in self.pending), timeout=timeout,
                         what="every publish acknowledged or given up")

    def allDelivered(self):
        return all(
            s.delivered(body) == [1, 1] for s in self.subscribers for body in self.acked
        )

    def check(self):
        duplicates = [
            (body, s.delivered(body)) for s in self.subscribers for body in self.acked
            if max(s.delivered(body)) > 1
        ]
        missing = [
            (body, s.delivered(body)) for s in self.subscribers for body in self.acked
            if min(s.delivered(body)) < 1
        ]
        assert not duplicates, f"acknowledged publishes delivered twice: {duplicates[:10]}"
        assert not missing, f"acknowledged publishes not delivered: {missing[:10]}"
        # Not acknowledged ones (given up on) are never delivered twice either.
        for s in self.subscribers:
            twice = [k for k, v in s.counts.items() if v > 1 and k[1].startswith("a")]
            assert not twice, f"delivered twice: {twice[:10]}"

    def controlDuplicates(self):
        return sum(
            1 for s in self.subscribers for (channel, body), count in s.counts.items()
            if body.startswith("c") and count > 1
        )

    def figures(self, name):
        retried = [a for a in self.acked.values() if a.attempts > 1]
        duplicates = sum(1 for a in self.acked.values() if a.duplicate)
        controlDuplicates = sum(
            1 for s in self.subscribers for (channel, body), count in s.counts.items()
            if body.startswith("c") and count > 1
        )
        controlRetried = sum(1 for v in self.controlSent.values() if v > 1)
        return (
            f"\n{name}: {len(self.acked)} of {len(self.acked) + len(self.failed)} keyed publishes "
            f"acknowledged ({len(retried)} after a retry, {duplicates} acked duplicate:true), "
            f"each delivered exactly once on 2 channels x 2 nodes; 0 twice. Control without a key: "
            f"{controlRetried} retried after a 503, {controlDuplicates} (channel, subscriber) "
            f"copies delivered more than once"
        )


class StallingProxy:
    """
    A TCP proxy to nats-server for one node's link that can stall: while
    stalled it reads nothing from either side (new connections included),
    as a congested or half-dead network path does; resumed, what waited
    flows on.
    """

    def __init__(self, target):
        from twisted.protocols import portforward

        proxy = self
        self.stalled = False
        self.transports = []

        class Client(portforward.ProxyClient):
            def connectionMade(self):
                portforward.ProxyClient.connectionMade(self)
                proxy.transports += [self.transport, self.peer.transport]
                if proxy.stalled:
                    self.transport.pauseProducing()
                    self.peer.transport.pauseProducing()

        class ClientFactory(portforward.ProxyClientFactory):
            protocol = Client

        class Server(portforward.ProxyServer):
            clientProtocolFactory = ClientFactory

        host, port = target.rsplit("/", 1)[-1].split(":")
        factory = portforward.ProxyFactory(host, int(port))
        factory.protocol = Server
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.url = f"nats://127.0.0.1:{self.port.getHost().port}"

    def stall(self):
        self.stalled = True
        for transport in self.transports:
            transport.pauseProducing()

    def resume(self):
        self.stalled = False
        for transport in self.transports:
            transport.resumeProducing()

    def close(self):
        self.resume()
        for transport in self.transports:
            transport.loseConnection()
        return self.port.stopListening()


async def cluster(startNode, jetstream, urls=None):
    urls = urls or [jetstream.url, jetstream.url]
    nodes = [startNode("--nats", url, "--history", HISTORY) for url in urls]
    for node in nodes:
        await untilHealth(node, 200)
    subscribers = []
    for node in nodes:
        protocol = await subscribed(node.url, CHANNELS)
        subscribers.append(Counter(protocol))
    publisher = ReconnectingClient(reactor, nodes[1].url)
    publisher.startService()
    control = ReconnectingClient(reactor, nodes[1].url)
    control.startService()
    await publisher.whenConnected()
    await control.whenConnected()
    return nodes, Run(publisher, control, subscribers)


async def publishFor(run, seconds, start, rate=0.02):
    n = start
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        run.publish(n)
        if n % 4 == 0:
            run.publishControl(n)
        n += 1
        await deferLater(reactor, rate)
    return n


async def throughFault(run, fault, heal, seconds, label, nodes=()):
    """
    Publish for a second, then for C{seconds} with the C{fault} on, then a
    second after C{heal}: every publish is acknowledged (some after a
    retry) and every acknowledged one delivered, once.
    """
    n = await publishFor(run, 1.0, 0)
    fault()
    try:
        n = await publishFor(run, seconds, n)
    finally:
        heal()
    await publishFor(run, 1.0, n)
    await run.settle()
    assert run.acked and not run.failed, f"not acknowledged: {list(run.failed.items())[:5]}"
    assert any(a.attempts > 1 for a in run.acked.values()), "nothing needed a retry"
    try:
        await eventually(run.allDelivered, timeout=30, what="every acknowledged publish delivered")
    except AssertionError:
        # What the nodes warned about, for a loss that happens once in a
        # while: which path skipped it.
        for node in nodes:
            print(f"--- warnings of the node on port {node.port}:")
            print("\n".join(line for line in node.log().splitlines() if "#warn]" in line))
        run.check()  # says which were missing or twice
        raise
    # A second copy would come after the first: no condition tells that
    # none is on its way, so late ones get a second to show.
    await deferLater(reactor, 1.0)
    run.check()
    print(run.figures(label))


async def stop(run):
    await run.publisher.stopService()
    await run.control.stopService()
    for s in run.subscribers:
        s.protocol.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_stalledLink(startNode, jetstream):
    """
    nats-server stopped (SIGSTOP) for 4 s while publishes go on: the
    publisher's node answers 503 for those it cannot confirm, the client
    sends them again with the same key, and each acknowledged one is
    delivered exactly once.
    """
    nodes, run = await cluster(startNode, jetstream)
    await throughFault(run, lambda: jetstream.signal(signal.SIGSTOP),
                       lambda: jetstream.signal(signal.SIGCONT), 4.0, "NATS stalled 4 s (SIGSTOP)",
                       nodes)
    # The control shows what a retry without a key did (and still does).
    assert run.controlDuplicates() > 0, "the stall made no retried publish a duplicate"
    await stop(run)


@pytest_twisted.ensureDeferred
async def test_oneNodesLinkStalled(startNode, jetstream):
    """
    Only the publisher's node's link to NATS stalls, for 4 s (a proxy stops
    reading), while the other node works on: what the stalled node took
    is answered 503 (not confirmed) or refused, sent again with its key,
    and every acknowledged publish reaches both nodes' subscribers once.
    """
    proxy = StallingProxy(jetstream.url)
    try:
        nodes, run = await cluster(startNode, jetstream, [jetstream.url, proxy.url])
        await throughFault(run, proxy.stall, proxy.resume, 4.0,
                           "one node's NATS link stalled 4 s (proxy)", nodes)
        assert run.controlDuplicates() > 0, "the stall made no retried publish a duplicate"
        await stop(run)
    finally:
        await proxy.close()


@pytest_twisted.ensureDeferred
async def test_cutLink(startNode, jetstream):
    """
    nats-server killed and restarted (the file store keeps the stream and
    its duplicate window): publishes during the cut are refused with 503,
    sent again until the link is back, and stored and delivered once.
    """
    nodes, run = await cluster(startNode, jetstream)
    await throughFault(run, jetstream.kill, jetstream.restart, 2.0, "NATS killed and restarted", nodes)
    await stop(run)


def cli(*args):
    """
    C{lhttp ARGS} as a user runs it, in the background.
    """
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "lhttp.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest_twisted.ensureDeferred
async def test_cliRetriesWithTheSameKey(startNode, jetstream):
    """
    C{lhttp publish} while nats-server is stopped: its first attempt is not
    confirmed (503), it sends again with the same key until the link is
    back, and exits 0; the message is stored and delivered once. With no
    retries left it exits 3 and says which key to publish again with.
    """
    nodes = [startNode("--nats", jetstream.url, "--history", HISTORY) for _ in range(2)]
    for node in nodes:
        await untilHealth(node, 200)
    subscribers = []
    for node in nodes:
        protocol = await subscribed(node.url, CHANNELS)
        subscribers.append(Counter(protocol))

    jetstream.signal(signal.SIGSTOP)
    try:
        given = cli("publish", nodes[1].publishURL, CHANNELS, "gave-up", "--command", "m",
                    "--retries", "0", "--idempotency-key", "cli-1")
        patient = cli("publish", nodes[1].publishURL, CHANNELS, "patient", "--command", "m",
                      "--retries", "20", "--idempotency-key", "cli-2")
        await eventually(lambda: given.poll() is not None, timeout=15, what="lhttp publish to give up")
        await deferLater(reactor, 1.0)
    finally:
        jetstream.signal(signal.SIGCONT)
    assert given.returncode == 3, given.stderr.read()
    assert b"--idempotency-key cli-1" in given.stderr.read()
    await eventually(lambda: patient.poll() is not None, timeout=40, what="lhttp publish to finish")
    err = patient.stderr.read()
    assert patient.returncode == 0, err
    assert b"sending again with the same key" in err
    await eventually(lambda: all(s.delivered("patient") == [1, 1] for s in subscribers),
                     timeout=15, what="the patient publish delivered")
    await deferLater(reactor, 1.0)
    for s in subscribers:
        assert s.delivered("patient") == [1, 1]
        # Not known to be stored: delivered once or not at all, never twice.
        assert max(s.delivered("gave-up")) <= 1
    for s in subscribers:
        s.protocol.sendClose(1000)
