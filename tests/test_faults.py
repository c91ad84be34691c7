"""
Faults in a real cluster (SPEC section 7): NATS killed and restarted, NATS
hung. Sequence-numbered publishes prove that every publish was either
delivered exactly once or refused/reported to its publisher: nothing is
lost silently.
"""

import signal
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from lhttpclients import barrier, client, eventually, health, untilHealth


class SequenceRun:
    """
    A publisher on one node sends numbered messages to channel C{seq}; a
    subscriber on another node records what arrives. Each outcome is kept
    with its time.
    """

    def __init__(self, publisher, subscriber):
        self.publisher = publisher
        self.subscriber = subscriber
        self.sentAt = {}
        self.delivered = []
        self.deliveredAt = {}
        self.errored = {}
        self.notices = []
        publisher.onLHTTPMessage = self._atPublisher
        subscriber.onLHTTPMessage = self._atSubscriber

    def _atPublisher(self, message):
        if message.command == "error":
            command = message.getHeader("command", "")
            if command.startswith("m"):
                self.errored[int(command[1:])] = message.getHeader("status")

    def _atSubscriber(self, message):
        if message.command == "error":
            self.notices.append((time.monotonic(), message))
        elif message.command.startswith("m"):
            seq = int(message.body)
            self.delivered.append(seq)
            self.deliveredAt.setdefault(seq, time.monotonic())

    def send(self, seq):
        self.sentAt[seq] = time.monotonic()
        self.publisher.send(f"m{seq}", [("publish", "seq")], str(seq))

    def settled(self):
        return set(self.delivered) | set(self.errored) >= set(self.sentAt)

    def checkNothingLostSilently(self):
        assert len(self.delivered) == len(set(self.delivered)), "a message was delivered twice"
        missing = set(self.sentAt) - set(self.delivered) - set(self.errored)
        assert not missing, f"accepted but never delivered: {sorted(missing)}"


async def sequenceRun(nodes):
    subscriber = await client(nodes[0].url)
    subscriber.subscribe("seq")
    await barrier(subscriber)
    publisher = await client(nodes[1].url)
    return SequenceRun(publisher, subscriber)


async def pause(seconds):
    await deferLater(reactor, seconds)


@pytest_twisted.ensureDeferred
async def test_natsKilledAndRestarted(natsServer, startNode):
    nodes = [startNode("--nats", natsServer.url) for _ in range(2)]
    for node in nodes:
        await untilHealth(node, 200)
    run = await sequenceRun(nodes)

    seq = 0
    for _ in range(40):
        run.send(seq)
        seq += 1
        await pause(0.02)
    natsServer.kill()
    killedAt = time.monotonic()
    await untilHealth(nodes[1], 503, timeout=5)
    outage = []
    while time.monotonic() - killedAt < 1.5:
        outage.append(seq)
        run.send(seq)
        seq += 1
        await pause(0.02)
    natsServer.restart()
    restartedAt = time.monotonic()
    while time.monotonic() - restartedAt < 6:
        run.send(seq)
        seq += 1
        await pause(0.02)
    lastBatch = list(range(seq, seq + 40))
    for s in lastBatch:
        run.send(s)
        await pause(0.02)

    await eventually(run.settled, timeout=15, what="every publish delivered or refused")
    run.checkNothingLostSilently()
    assert all(run.errored.get(s) == "503" for s in outage), "publishes during the outage were not all refused"
    assert set(lastBatch) <= set(run.delivered)
    resumed = min(
        run.deliveredAt[s] for s in run.delivered if run.sentAt[s] > restartedAt
    )
    assert resumed - restartedAt < 5, f"delivery resumed {resumed - restartedAt:.1f}s after restart"
    print(
        f"\nNATS kill -9: {len(run.sentAt)} sent, {len(run.delivered)} delivered, "
        f"{len(run.errored)} refused/reported, 0 lost silently; delivery resumed "
        f"{resumed - restartedAt:.1f}s after restart"
    )
    # The subscriber's node told it that messages may have been missed.
    assert any(n.getHeader("channel") == "seq" for _, n in run.notices)
    # Subscriptions restored as they were: the subscriber's node holds "seq"
    # again, the publisher's node holds none.
    subscriptions = []
    for node in nodes:
        code, document = await health(node)
        assert code == 200
        subscriptions.append(document["broker"]["subscriptions"])
    assert subscriptions == [1, 0]


@pytest_twisted.ensureDeferred
async def test_natsHungIsDetectedAndRecovered(natsServer, startNode):
    nodes = [startNode("--nats", natsServer.url) for _ in range(2)]
    for node in nodes:
        await untilHealth(node, 200)
    run = await sequenceRun(nodes)
    for seq in range(20):
        run.send(seq)
        await pause(0.02)

    natsServer.signal(signal.SIGSTOP)
    try:
        stoppedAt = time.monotonic()
        seq = 20
        while True:
            code, _ = await health(nodes[1])
            if code == 503:
                break
            run.send(seq)
            seq += 1
            assert time.monotonic() - stoppedAt < 5, "a hung NATS was not detected within 5 s"
            await pause(0.05)
        detected = time.monotonic() - stoppedAt
        await untilHealth(nodes[0], 503, timeout=5)
        run.publisher.send("m99999", [("publish", "seq")], "99999")
        refused = await eventually(lambda: run.errored.get(99999), timeout=5, what="a refusal")
        assert refused == "503"
        run.sentAt[99999] = time.monotonic()
    finally:
        natsServer.signal(signal.SIGCONT)

    for node in nodes:
        await untilHealth(node, 200, timeout=15)
    for s in range(100000, 100020):
        run.send(s)
        await pause(0.02)
    await eventually(run.settled, timeout=15, what="every publish delivered or reported")
    run.checkNothingLostSilently()
    assert set(range(100000, 100020)) <= set(run.delivered)
    assert detected < 5
    print(
        f"\nNATS SIGSTOP: detected after {detected:.1f}s; {len(run.sentAt)} sent, "
        f"{len(run.delivered)} delivered, {len(run.errored)} refused/reported, 0 lost silently"
    )
