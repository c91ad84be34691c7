"""
L{lhttp.history.jetstream.JetStreamHistory}'s batched reads on a real
nats-server with JetStream: a batch nats-server ends early on its byte cap
(C{max_bytes}) is followed by the next one, so neither a recovery nor a
live gap fill stops short of what the stream holds; a recovery larger than
one read is read a batch at a time as it is asked for (as its client takes
it), counted exactly first, and says so when messages were removed from
the stream before it read them.
"""

import time

import pytest
import pytest_twisted

from lhttp.brokers.connection import NATS, deferred
from lhttp.history import HistoryPolicy
from lhttp.history.jetstream import JetStreamHistory
from lhttpclients import eventually

BODY = b"x" * 2000


async def started(jetstream, delivered, patterns=("room.*=1000",), stream="READS"):
    client = NATS()
    await deferred(client.connect(servers=[jetstream.url]))
    history = JetStreamHistory(HistoryPolicy(list(patterns)), stream=stream,
                               updateStream=True)
    # Batches end after about three messages (one is over it on its own),
    # and so does a recovery's first read.
    history.batchBytes = history.recoveryBytes = 3 * len(BODY)
    await deferred(history.start(
        client, lambda channels, payload, position=None: delivered.append((payload, position))))
    return client, history


async def store(client, history, channel, count, other=None, first=0):
    """
    C{count} messages on C{channel}, numbered from C{first}, each followed
    by one on C{other}.
    """
    js = client.jetstream()
    for i in range(first, first + count):
        await deferred(js.publish(history.subject(channel), b"LHTTP/1.0 m\r\n\r\n%04d" % i + BODY,
                                  headers={"Nats-Msg-Id": history.messageId()}))
        if other is not None:
            await deferred(js.publish(history.subject(other), b"LHTTP/1.0 m\r\n\r\nother",
                                      headers={"Nats-Msg-Id": history.messageId()}))


def numbers(payloads):
    return [int(p.split(b"\r\n\r\n", 1)[1][:4]) for p in payloads]


async def drained(recovery):
    """
    Every message a recovery gives, its later reads included.

    @return: C{(offset, payload)}s, and whether a read said some may be
        missing.
    """
    messages = list(recovery.messages)
    missed = False
    rest = recovery.rest
    while rest is not None:
        read = await rest.next()
        missed |= read.missed
        messages += read.messages
        if read.done:
            break
    return messages, missed


@pytest_twisted.ensureDeferred
async def test_recoveryReadsPastShortBatches(jetstream):
    """
    A recovery of 40 messages of 2 KB, batches capped at 6 KB: all 40, in
    order, complete (on code that took a short batch for the end: 3). Its
    reply's count is exact before they are read, and they are read a
    batch as they are asked for, at most one batch ahead (on code that
    read them all first, the 40 were read before the reply).
    """
    client, history = await started(jetstream, [])
    try:
        await store(client, history, "room.1", 40, other="room.2")
        recovery = await history.read("room.1", 0, history.epoch)
        assert recovery.total == 40
        assert recovery.complete
        assert 1 <= len(recovery.messages) <= 4
        assert recovery.rest is not None
        base = history.requests
        got = list(recovery.messages)
        for asked in range(1, 4):
            read = await recovery.rest.next()
            assert 1 <= len(read.messages) <= 4 and not read.done
            got += read.messages
            # This batch, and the one read ahead.
            assert history.requests - base <= asked + 1
        assert numbers(p for _, p in got) == list(range(len(got)))
        messages, missed = await drained(recovery)
        assert not missed
        assert history.requests > 40 // 3
    finally:
        await deferred(client.close())


@pytest_twisted.ensureDeferred
async def test_recoveryReadAsAskedIsWhole(jetstream):
    """
    Read to its end, a recovery larger than one read gives every message
    once, in order, as many as its count said, up to its offset.
    """
    client, history = await started(jetstream, [], stream="WHOLE")
    try:
        await store(client, history, "room.1", 40, other="room.2")
        recovery = await history.read("room.1", 0, history.epoch)
        messages, missed = await drained(recovery)
        assert not missed
        assert numbers(p for _, p in messages) == list(range(40))
        assert len(messages) == recovery.total
        assert messages[-1][0] == recovery.top

        # From an offset: the rest after it.
        since = messages[9][0]
        recovery = await history.read("room.1", since, history.epoch)
        later, missed = await drained(recovery)
        assert recovery.complete and not missed and recovery.prev == since
        assert numbers(p for _, p in later) == list(range(10, 40))
        assert recovery.total == 30
    finally:
        await deferred(client.close())


@pytest_twisted.ensureDeferred
async def test_removedBeforeReadIsTold(jetstream):
    """
    A recovery of 40 messages of a channel that keeps 40: while it is
    being read, 30 more are published and the stream removes the oldest
    30, most of them not read yet (one read is made ahead of the client,
    not more). The reader says messages may be missing (the client gets
    the channel's notice), gives what is left in order up to the
    recovery's offset, and counts it in C{unfilled}.
    """
    client, history = await started(jetstream, [], patterns=("room.*=40",), stream="TRIM")
    try:
        await store(client, history, "room.1", 40)
        recovery = await history.read("room.1", 0, history.epoch)
        assert recovery.total == 40
        first = list(recovery.messages)
        await store(client, history, "room.1", 30, first=40)
        messages, missed = await drained(recovery)
        assert missed
        assert history.unfilled >= 1
        got = numbers(p for _, p in messages)
        # Those read before (the first read, and the one read ahead),
        # then those left after the removal.
        read = got.index(30)
        assert len(first) <= read < 30
        assert got == list(range(read)) + list(range(30, 40))
        assert all(offset <= recovery.top for offset, _ in messages)
    finally:
        await deferred(client.close())


@pytest_twisted.ensureDeferred
async def test_ageLimitOfALargeRecovery(jetstream):
    """
    A pattern keeps messages of one second (the stream keeps them longer,
    for another pattern): a recovery larger than one read starts at the
    first young enough, says it is not complete, and counts only those.
    """
    client, history = await started(jetstream, [], patterns=("room.*=1000,1s", "hall.*=1000"),
                                    stream="AGE")
    try:
        await store(client, history, "room.1", 10)
        stored = time.monotonic()
        await eventually(lambda: time.monotonic() > stored + 1.2, timeout=5, what="1.2 s to pass")
        await store(client, history, "room.1", 10, first=10)
        recovery = await history.read("room.1", 0, history.epoch)
        messages, missed = await drained(recovery)
        assert not recovery.complete and not missed
        assert numbers(p for _, p in messages) == list(range(10, 20))
        assert recovery.total == 10
    finally:
        await deferred(client.close())


@pytest_twisted.ensureDeferred
async def test_gapFillReadsPastShortBatches(jetstream):
    """
    A node serving room.1 missed 30 of its messages live (stored while it
    was not listening): the check reads them all, in batches capped by
    bytes, and delivers each once, in order, with prev chaining them.
    """
    delivered = []
    client, history = await started(jetstream, delivered)
    try:
        history.serve("room.1")
        await deferred(history.check(["room.1"]))
        await store(client, history, "room.1", 30, other="room.2")
        await deferred(history.check(["room.1"]))
        # The fill delivers what it read in one go: once 30 are there, it
        # is over.
        await eventually(lambda: len(delivered) >= 30, timeout=10, what="the gap filled")
        assert numbers(p for p, _ in delivered) == list(range(30))
        offsets = [position[1] for _, position in delivered]
        assert [position[2] for _, position in delivered] == [0] + offsets[:-1]
        assert history.unfilled == 0
    finally:
        await deferred(client.close())


@pytest.mark.parametrize("mode", ["smallReads", "largeReads", "uncounted"])
@pytest_twisted.ensureDeferred
async def test_recoveryOfMoreThanOneGivesTheNewest(jetstream, mode):
    """
    A recovery gives at most C{maxRead} messages (10,000; 20 here) while a
    pattern may keep more: it gives the newest of them, with
    C{recovered:false}, from the start or from an offset alike (on code
    that read the oldest and said it was complete, the messages between
    what it read and the live ones were skipped silently). Alike with
    reads of 6 KB or 1 MiB, and when the channel cannot be counted (it
    keeps changing: it is then read at once).
    """
    client, history = await started(jetstream, [], stream="NEWEST" + mode.upper())
    history.maxRead = 20
    if mode != "smallReads":
        history.recoveryBytes = 1024 * 1024
    if mode == "uncounted":
        history.countTries = 0
    try:
        await store(client, history, "room.1", 50, other="room.2")
        everything = await history.read("room.1", 0, history.epoch)
        assert (everything.rest is None) == (mode == "uncounted")
        messages, _ = await drained(everything)
        assert numbers(p for _, p in messages) == list(range(30, 50))
        assert not everything.complete and everything.total == 20
        offsets = [offset for offset, _ in messages]
        assert everything.top == offsets[-1]

        tenth = await history.last("room.1", 41)
        since = tenth.messages[0][0]
        fromTenth = await history.read("room.1", since, history.epoch)
        assert numbers(p for _, p in (await drained(fromTenth))[0]) == list(range(30, 50))
        assert not fromTenth.complete and fromTenth.total == 20

        recent = await history.read("room.1", offsets[-16], history.epoch)
        assert numbers(p for _, p in (await drained(recent))[0]) == list(range(35, 50))
        assert recent.complete and recent.total == 15
    finally:
        await deferred(client.close())


@pytest_twisted.ensureDeferred
async def test_liveMessagesReadAsTheyArrive(jetstream):
    """
    A node's live subscription of a history channel is read as messages
    arrive (C{NATS.inline}: no nats-py message, queue or task for each):
    registered while it serves the channel, gone when it stops; what it
    reads is delivered in order with its position, and a message on the
    live subject whose position is not a number is left to the usual
    reading, which counts it as forged and delivers nothing.
    """
    from twisted.internet import reactor

    from lhttp.brokers.nats import NATSBroker

    history = JetStreamHistory(HistoryPolicy(["room.*=100"]), stream="INLINE")
    broker = NATSBroker([jetstream.url], reactor, settle=0, history=history)
    delivered = []
    broker.attach(lambda channels, payload, position=None: delivered.append((payload, position)))
    broker.start()
    try:
        await eventually(lambda: broker.ready, timeout=10, what="the broker and its history ready")
        client = broker._client
        before = set(client.inline)
        await broker.subscribe("room.1")
        [reader] = set(client.inline) - before
        for i in range(20):
            broker.publish(["room.1"], b"LHTTP/1.0 m\r\n\r\n%04d" % i)
        await broker.confirm()
        await eventually(lambda: len(delivered) == 20, timeout=10, what="20 delivered")
        assert numbers(p for p, _ in delivered) == list(range(20))
        offsets = [position[1] for _, position in delivered]
        assert [position[2] for _, position in delivered] == [0] + offsets[:-1]
        # None went nats-py's way (a message, the subscription's queue).
        from lhttp.brokers.connection import LIVE

        assert broker._subscriptions[LIVE + "room.1"]._received == 0
        read = client.stats["in_msgs"]

        raw = NATS()
        await deferred(raw.connect(servers=[jetstream.url]))
        await deferred(raw.publish("_lhttp_live.room.1", b"LHTTP/1.0 m\r\n\r\nfake",
                                   headers={"Nats-Sequence": "x"}))
        await deferred(raw.flush())
        await eventually(lambda: history.forged == 1, timeout=10, what="the forged one counted")
        await deferred(raw.close())
        assert len(delivered) == 20
        assert client.stats["in_msgs"] > read

        broker.unsubscribe("room.1")
        await eventually(lambda: reader not in client.inline, timeout=10, what="room.1's reader gone")
    finally:
        broker.stop()
