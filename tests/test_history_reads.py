"""
L{lhttp.history.jetstream.JetStreamHistory}'s batched reads on a real
nats-server with JetStream: a batch nats-server ends early on its byte cap
(C{max_bytes}) is followed by the next one, so neither a recovery nor a
live gap fill stops short of what the stream holds.
"""

import pytest_twisted

from lhttp.brokers.connection import NATS, deferred
from lhttp.history import HistoryPolicy
from lhttp.history.jetstream import JetStreamHistory
from lhttpclients import eventually

BODY = b"x" * 2000


async def started(jetstream, delivered):
    client = NATS()
    await deferred(client.connect(servers=[jetstream.url]))
    history = JetStreamHistory(HistoryPolicy(["room.*=1000"]), stream="READS")
    # Batches end after about three messages (one is over it on its own).
    history.batchBytes = 3 * len(BODY)
    await deferred(history.start(
        client, lambda channels, payload, position=None: delivered.append((payload, position))))
    return client, history


async def store(client, history, channel, count, other=None):
    """
    C{count} messages on C{channel}, each followed by one on C{other}.
    """
    js = client.jetstream()
    for i in range(count):
        await deferred(js.publish(history.subject(channel), b"LHTTP/1.0 m\r\n\r\n%04d" % i + BODY,
                                  headers={"Nats-Msg-Id": history.messageId()}))
        if other is not None:
            await deferred(js.publish(history.subject(other), b"LHTTP/1.0 m\r\n\r\nother",
                                      headers={"Nats-Msg-Id": history.messageId()}))


def numbers(payloads):
    return [int(p.split(b"\r\n\r\n", 1)[1][:4]) for p in payloads]


@pytest_twisted.ensureDeferred
async def test_recoveryReadsPastShortBatches(jetstream):
    """
    A recovery of 40 messages of 2 KB, batches capped at 6 KB: all 40, in
    order, complete (on code that took a short batch for the end: 3).
    """
    client, history = await started(jetstream, [])
    try:
        await store(client, history, "room.1", 40, other="room.2")
        recovery = await history.read("room.1", 0, history.epoch)
        assert numbers(p for _, p in recovery.messages) == list(range(40))
        assert recovery.complete
        assert history.requests > 40 // 3
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


@pytest_twisted.ensureDeferred
async def test_recoveryOfMoreThanOneGivesTheNewest(jetstream):
    """
    A recovery gives at most C{maxRead} messages (10,000; 20 here) while a
    pattern may keep more: it gives the newest of them, with
    C{recovered:false}, from the start or from an offset alike (on code
    that read the oldest and said it was complete, the messages between
    what it read and the live ones were skipped silently).
    """
    client, history = await started(jetstream, [])
    history.maxRead = 20
    try:
        await store(client, history, "room.1", 50, other="room.2")
        everything = await history.read("room.1", 0, history.epoch)
        assert numbers(p for _, p in everything.messages) == list(range(30, 50))
        assert not everything.complete
        offsets = [offset for offset, _ in everything.messages]
        assert everything.top == offsets[-1]

        tenth = await history.last("room.1", 41)
        since = tenth.messages[0][0]
        fromTenth = await history.read("room.1", since, history.epoch)
        assert numbers(p for _, p in fromTenth.messages) == list(range(30, 50))
        assert not fromTenth.complete

        recent = await history.read("room.1", offsets[-16], history.epoch)
        assert numbers(p for _, p in recent.messages) == list(range(35, 50))
        assert recent.complete
    finally:
        await deferred(client.close())
