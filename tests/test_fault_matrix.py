"""
The faults matrix (SPEC section 7) beyond NATS killed or hung
(L{test_faults}): a cluster node killed and restarted, upstream backends
that refuse, hang or reset. Sequence-numbered messages prove that every
accepted publish or request had an outcome its sender or receiver saw:
delivered exactly once, refused, or signalled (an error reply, a dropped
connection). Nothing is lost silently.
"""

import signal
import time

import pytest_twisted
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from lhttp.client import NotConnected, ReconnectingClient
from lhttpclients import barrier, client, eventually, health, untilHealth
from procs import freePort
from test_faults import SequenceRun


async def pause(seconds):
    await deferLater(reactor, seconds)


class Ledger:
    """
    What one receiver got of the numbered messages with a command prefix,
    and when.
    """

    def __init__(self, prefix):
        self.prefix = prefix
        self.delivered = []
        self.at = {}

    def receive(self, message):
        if message.command.startswith(self.prefix) and message.command[len(self.prefix):].isdigit():
            seq = int(message.command[len(self.prefix):])
            self.delivered.append(seq)
            self.at.setdefault(seq, time.monotonic())

    def duplicates(self):
        return len(self.delivered) - len(set(self.delivered))


def reconnecting(url, **kwargs):
    c = ReconnectingClient(
        reactor, url, retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=0.5), **kwargs
    )
    c.disconnects = []
    c.onDisconnect = lambda how: c.disconnects.append((time.monotonic(), how))
    c.startService()
    return c


@pytest_twisted.ensureDeferred
async def test_nodeKilledAndRestarted(natsServer, startNode):
    """
    Node B of two is killed (SIGKILL) and started again on its port.
    Subscribers on node A keep receiving A's publishes, exactly once, all
    along; B's clients reconnect and subscribe again by themselves; a
    publish to B while it is down fails at the client (L{NotConnected});
    every publish B confirmed (the sender's sync came back) reaches A's
    subscriber exactly once; B's subscriber misses only what was sent while
    it was disconnected, and was told by the disconnect.
    """
    nodeA = startNode("--nats", natsServer.url)
    nodeB = startNode("--nats", natsServer.url)
    for node in (nodeA, nodeB):
        await untilHealth(node, 200)

    subA = await client(nodeA.url)
    subA.subscribe("seq")
    await barrier(subA)
    pubA = await client(nodeA.url)
    run = SequenceRun(pubA, subA)           # A's stream: m<seq>
    fromB = Ledger("b")
    atA = run._atSubscriber
    subA.onLHTTPMessage = lambda m: (atA(m), fromB.receive(m))

    atB = Ledger("m")
    subB = reconnecting(nodeB.url, onMessage=atB.receive)
    subB.subscribe("seq")
    pubB = reconnecting(nodeB.url)
    pubBErrors = {}
    pubB.onMessage = lambda m: m.command == "error" and pubBErrors.setdefault(m.getHeader("command"), m)
    await subB.whenConnected()
    await subB.sync(10)
    await pubB.whenConnected()

    confirmed, unconfirmed, refused = [], [], []
    seqA = seqB = 0
    killedAt = restartedAt = resyncedAt = None
    phase = "before"
    started = time.monotonic()
    while True:
        now = time.monotonic()
        if phase == "before" and now - started > 1.5:
            nodeB.signal(signal.SIGKILL)
            nodeB.popen.wait(10)
            killedAt, phase = time.monotonic(), "down"
        elif phase == "down" and now - killedAt > 1.5:
            nodeB = startNode("--nats", natsServer.url, port=nodeB.port)
            restartedAt, phase = time.monotonic(), "restarted"
        elif phase == "restarted" and subB.connections == 2 and pubB.connections == 2:
            await subB.sync(10)
            resyncedAt, phase = time.monotonic(), "after"
        elif phase == "after" and now - resyncedAt > 1.5:
            break
        assert now - started < 40, f"stuck in phase {phase}"

        run.send(seqA)
        seqA += 1
        try:
            pubB.publish("seq", f"b{seqB}", body=str(seqB))
        except NotConnected:
            refused.append(seqB)
        else:
            try:
                await pubB.sync(2)
                confirmed.append(seqB)
            except Exception:
                unconfirmed.append(seqB)    # in flight when B died
        seqB += 1
        await pause(0.02)

    await eventually(run.settled, timeout=15, what="every A publish delivered on A")
    run.checkNothingLostSilently()
    assert not run.errored, f"A's publishes were refused: {run.errored}"
    # A's subscriber kept receiving while B was down.
    duringOutage = [s for s in run.delivered if killedAt < run.deliveredAt[s] < restartedAt]
    assert len(duringOutage) >= 20, "A's subscriber starved while B was down"

    # B's publishes: confirmed ones delivered exactly once; refused at the
    # client while B was down.
    assert len(refused) >= 10, "no publish to the dead node failed at the client"
    await eventually(lambda: set(confirmed) <= set(fromB.delivered) | {
        s for s in confirmed if f"b{s}" in pubBErrors}, timeout=10,
        what="every confirmed B publish delivered")
    assert fromB.duplicates() == 0
    assert set(fromB.delivered) <= set(confirmed) | set(unconfirmed)

    # B's subscriber: told by the disconnect, then every A publish sent after
    # its subscription came back, exactly once.
    assert subB.disconnects and killedAt <= subB.disconnects[0][0]
    after = [s for s in run.sentAt if run.sentAt[s] > resyncedAt]
    await eventually(lambda: set(after) <= set(atB.delivered), timeout=10,
                     what="B's subscriber receiving again")
    assert atB.duplicates() == 0
    missed = set(run.sentAt) - set(atB.delivered)
    assert all(killedAt - 1 < run.sentAt[s] < resyncedAt for s in missed), \
        "B's subscriber missed a message outside its disconnection"
    print(
        f"\nnode restart: A {len(run.sentAt)} sent, all delivered once; B {len(confirmed)} confirmed "
        f"(all delivered), {len(refused)} refused at the client, {len(unconfirmed)} in flight at the "
        f"kill ({len(set(unconfirmed) & set(fromB.delivered))} of them delivered); B's subscriber "
        f"missed {len(missed)} while disconnected; reconnected {resyncedAt - restartedAt:.1f}s after restart"
    )
    code, _ = await health(nodeB)
    assert code == 200
    await subB.stopService()
    await pubB.stopService()


class Reset(Protocol):
    """
    A backend that accepts, then resets the connection (RST) as soon as
    bytes arrive.
    """

    def dataReceived(self, data):
        self.transport.abortConnection()


class Hangup(Protocol):
    """
    A backend that reads the request and closes without an answer.
    """

    def dataReceived(self, data):
        self.transport.loseConnection()


class Hang(Protocol):
    """
    A backend that reads and never answers.
    """

    def dataReceived(self, data):
        pass


@pytest_twisted.ensureDeferred
async def test_upstreamRefusedSlowAndReset(startNode):
    """
    Upstream requests to a backend that refuses connections, one that
    resets them, one that hangs up without answering and one that never
    answers: each numbered request gets exactly one error reply (502, or 504
    after the timeout) on a connection that stays open, while publishes on
    that same connection and on others are delivered exactly once, in order.
    """
    listening = []
    urls = {"refused": f"http://127.0.0.1:{freePort()}/"}
    for name, protocol in (("reset", Reset), ("hangup", Hangup), ("slow", Hang)):
        port = reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1")
        listening.append(port)
        urls[name] = f"http://127.0.0.1:{port.getHost().port}/"
    expected = {"refused": "502", "reset": "502", "hangup": "502", "slow": "504"}
    try:
        options = []
        for url in urls.values():
            options += ["--upstream-allow", url]
        node = startNode(*options, "--upstream-timeout", "1")
        listener = await client(node.url)
        listener.subscribe("seq")
        await barrier(listener)
        sender = await client(node.url)
        other = await client(node.url)
        run = SequenceRun(other, listener)
        published = Ledger("u")
        atListener = run._atSubscriber
        listener.onLHTTPMessage = lambda m: (atListener(m), published.receive(m))
        replies = {}
        sender.onLHTTPMessage = lambda m: m.command == "error" and replies.setdefault(
            m.getHeader("command"), []).append(m)

        kinds = list(urls)
        sent = {}
        started = time.monotonic()
        for seq in range(200):
            kind = kinds[seq % len(kinds)]
            sent[f"u{seq}"] = kind
            sender.send(f"u{seq}", [("upstream", f"POST {urls[kind]}x"), ("publish", "seq")], str(seq))
            run.send(10000 + seq)
            if seq % 20 == 0:
                await pause(0.01)
        # Publishes are not held up by failing or hanging upstreams.
        await eventually(run.settled, timeout=5, what="the other client's publishes")
        fast = time.monotonic() - started
        await eventually(lambda: len(replies) == len(sent), timeout=15, what="an outcome per request")
        run.checkNothingLostSilently()
        assert not run.errored

        wrong = {
            command: [(m.getHeader("status"), m.getHeader("reason")) for m in got]
            for command, got in replies.items()
            if [m.getHeader("status") for m in got] != [expected[sent[command]]]
        }
        assert not wrong, f"requests with a wrong or repeated outcome: {dict(list(wrong.items())[:5])}"
        # The upstream messages' own publishes went out, once each.
        await eventually(lambda: len(published.delivered) >= len(sent), timeout=5,
                         what="the upstream messages' publishes")
        assert sorted(published.delivered) == list(range(len(sent)))
        counts = {kind: sum(1 for k in sent.values() if k == kind) for kind in kinds}
        print(f"\nupstream faults: {len(sent)} requests {counts}, each one error reply "
              f"{expected}; {len(run.sentAt)} publishes alongside, all delivered in {fast:.2f}s")
        assert node.alive()
        # The connection is still served, and nothing more came back.
        await sender.sync(10)
        assert sum(len(got) for got in replies.values()) == len(sent)
    finally:
        for port in listening:
            await port.stopListening()
