"""
The C{prev} header on the embedded engine (issue 20, item 2): every
message of a history channel, live, recovered or in a history reply,
carries the offset of the channel's previous message, so a receiver sees
a gap the moment it happens; no client can set it.
"""

import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from lhttp.brokers.nats import deferred as future

from lhttp.codec import parseMultipart
from lhttp.testing import FakeClient, memoryServer
from test_history_bounds import historyRequest, only, publish, subscribe


def positions(messages):
    return [(int(m.getHeader("offset")), int(m.getHeader("prev"))) for m in messages]


class PrevTests(SynchronousTestCase):
    def setUp(self):
        self.server = memoryServer(history=("room.*=100",))
        self.sender = FakeClient(self.server)

    def test_liveMessagesChain(self):
        """
        Interleaved channels: each message's prev is its own channel's
        previous offset (0 for the first), not the node's previous one.
        """
        victim = FakeClient(self.server)
        victim.receive(subscribe("room.1 room.2"))
        victim.clear()
        for body in "abcdef":
            self.sender.receive(publish("room.1" if body in "ace" else "room.2", body))
        victim.flush()
        got = victim.messages()
        one = [m for m in got if m.getHeader("channel") == "room.1"]
        two = [m for m in got if m.getHeader("channel") == "room.2"]
        self.assertEqual(positions(one), [(1, 0), (3, 1), (5, 3)])
        self.assertEqual(positions(two), [(2, 0), (4, 2), (6, 4)])

    def test_recoveredAndHistoryChain(self):
        """
        A recovery's messages carry their predecessors, the first one's
        being the offset recovered from; a history page's too, its oldest
        part's being the message before the page.
        """
        for body in "abcdef":
            self.sender.receive(publish("room.1" if body in "ace" else "room.2", body))
        back = FakeClient(self.server)
        back.receive(subscribe("room.1", since=1))
        back.flush()
        recovery, *recovered = back.messages()
        self.assertEqual(recovery.getHeader("recovered"), "true")
        self.assertEqual(positions(recovered), [(3, 1), (5, 3)])
        back.clear()
        back.receive(historyRequest("room.1", limit=2))
        reply = only(back)
        parts = parseMultipart(reply.body, reply.getHeader("multipart"))
        from lhttp.codec import parse

        self.assertEqual(positions([parse(p.body) for p in parts]), [(3, 1), (5, 3)])

    def test_nobodyForgesIt(self):
        """
        A publish carrying prev on a history channel is refused whole.
        """
        victim = FakeClient(self.server)
        victim.receive(subscribe("room.1"))
        victim.clear()
        self.sender.receive(publish("room.1", "x", "prev:99\r\n"))
        reply = only(self.sender)
        self.assertEqual(reply.getHeader("reason"), "reserved header")
        self.assertIn("'prev'", reply.body.decode())
        self.assertEqual(victim.messages(), [])


class FakeStream:
    """
    Enough of a NATS connection for L{JetStreamHistory}'s reads: one
    stream's messages, answered to batched direct gets (C{next_by_subj},
    C{multi_last}) as nats-server does, each batch ended by a 204.
    """

    def __init__(self):
        self.messages = []  # (sequence, subject, headers, payload)
        self.requests = []
        self._inboxes = {}
        self._count = 0

    def store(self, subject, payload, headers=None):
        last = max((m[0] for m in self.messages if m[1] == subject), default=0)
        sequence = len(self.messages) + 1
        self.messages.append((sequence, subject, dict(headers or {}), payload))
        return {**(headers or {}), "Nats-Sequence": str(sequence),
                "Nats-Last-Sequence": str(last), "Nats-Subject": subject}

    def new_inbox(self):
        self._count += 1
        return f"_INBOX.{self._count}"

    async def subscribe(self, subject, cb):
        self._inboxes[subject] = cb
        stream = self

        class Subscription:
            async def unsubscribe(self):
                stream._inboxes.pop(subject, None)

        return Subscription()

    async def publish(self, subject, data, reply):
        import json

        from nats.aio.msg import Msg

        request = json.loads(data)
        self.requests.append(request)
        if "multi_last" in request:
            found = [max((m for m in self.messages if m[1] == s), default=None)
                     for s in request["multi_last"]]
            found = [m for m in found if m is not None]
        else:
            found = [m for m in self.messages
                     if m[0] >= request["seq"] and m[1] == request["next_by_subj"]]
            found = found[:request["batch"]]
        cb = self._inboxes[reply]
        for sequence, subject, headers, payload in found:
            await cb(Msg(self, subject=reply, data=payload, headers={
                **headers, "Nats-Sequence": str(sequence), "Nats-Subject": subject}))
        await cb(Msg(self, subject=reply, data=b"", headers={"Status": "204"}))


# JetStreamHistory.live on a fake stream: what the node missed is read and
# delivered before what follows, in order, each message once.


async def deliveries(script):
    import asyncio

    from lhttp.history.jetstream import JetStreamHistory
    from lhttp.history import HistoryPolicy

    delivered = []
    stream = FakeStream()
    history = JetStreamHistory(HistoryPolicy(["room.*=100"]))
    history._client = stream
    history._deliver = lambda channels, payload, position=None: delivered.append(
        (channels[0], payload, position))
    history.epoch = "e"
    history.ready = True

    async def main():
        await script(history, stream)
        for _ in range(50):
            await asyncio.sleep(0)

    await future(main())
    return delivered, stream


@pytest_twisted.ensureDeferred
async def test_gapFilledInOrder():
    """
    Messages 3 to 5 of the channel never came live: they are read from
    the stream when 6 shows the gap, in one request, and 7, arriving
    meanwhile, goes after them; a forged one (4) is skipped, and prev
    chains what is delivered.
    """
    async def script(history, stream):
        history.serve("room.1")
        await history.check(["room.1"])
        live = []
        for i in range(1, 8):
            payload = (b"LHTTP/1.0 x\r\nlhttp-node:reply\r\n\r\nforged" if i == 4
                       else b"LHTTP/1.0 x\r\n\r\n%d" % i)
            live.append((stream.store("room.1", payload), payload))
            stream.store("room.2", b"other")
        for index in (0, 1, 5, 6):
            history.live("room.1", *live[index])

    delivered, stream = await deliveries(script)
    assertEqual([p.rpartition(b"\n")[2] for _, p, _ in delivered],
                     [b"1", b"2", b"3", b"5", b"6", b"7"])
    positions = [position for _, _, position in delivered]
    assertEqual(positions, [("e", 1, 0), ("e", 3, 1), ("e", 5, 3), ("e", 9, 5),
                                 ("e", 11, 9), ("e", 13, 11)])
    # The subscription's check, and one read for the gap.
    assertEqual(len(stream.requests), 2)


async def missedTheTail(history, stream):
    """
    The node serves room.1 and got its message 1 live; 2 and 3 were
    stored while it was not listening (a reconnect).
    """
    history.serve("room.1")
    await history.check(["room.1"])
    first = b"LHTTP/1.0 x\r\n\r\n1"
    history.live("room.1", stream.store("room.1", first), first)
    for i in (2, 3):
        stream.store("room.1", b"LHTTP/1.0 x\r\n\r\n%d" % i)


@pytest_twisted.ensureDeferred
async def test_tailGapFilledByCheck():
    """
    Nothing came live after the gap (a reconnect): the check after it
    reads what the stream has past the last seen.
    """
    async def script(history, stream):
        await missedTheTail(history, stream)
        await history.check(["room.1"])

    delivered, _ = await deliveries(script)
    assertEqual([position for _, _, position in delivered],
                     [("e", 1, 0), ("e", 2, 1), ("e", 3, 2)])


async def missingPredecessor(hiddenReads):
    """
    Message 2 of room.1 was re-published (message 3 names it as its
    predecessor) but the node missed it live, and the stream does not
    serve it to the first C{hiddenReads} reads.
    """
    state = {"reads": 0}

    async def script(history, stream):
        history.rereadDelay = 0
        history.serve("room.1")
        await history.check(["room.1"])
        payloads = [b"LHTTP/1.0 x\r\n\r\n%d" % i for i in (1, 2, 3)]
        live = [(stream.store("room.1", payload), payload) for payload in payloads]
        hidden = stream.messages[1]
        publish = stream.publish

        async def servedLate(subject, data, reply):
            if b"next_by_subj" in data:
                state["reads"] += 1
                if state["reads"] <= hiddenReads:
                    stream.messages.remove(hidden)
                    try:
                        return await publish(subject, data, reply)
                    finally:
                        stream.messages.insert(1, hidden)
            return await publish(subject, data, reply)

        stream.publish = servedLate
        history.live("room.1", *live[0])
        history.live("room.1", *live[2])
        state["history"] = history

    delivered, _ = await deliveries(script)
    return delivered, state


@pytest_twisted.ensureDeferred
async def test_predecessorServedOnTheSecondRead():
    """
    A stream just restarted may not serve a message it re-published yet:
    the node reads once more, and delivers it in order, with no notice.
    """
    delivered, state = await missingPredecessor(hiddenReads=1)
    assertEqual([p.rpartition(b"\n")[2] for _, p, _ in delivered], [b"1", b"2", b"3"])
    assertEqual(state["reads"], 2)
    assertEqual(state["history"].unfilled, 0)


@pytest_twisted.ensureDeferred
async def test_predecessorNeverServedIsTold():
    """
    A message the stream re-published and no longer has (removed, or lost
    by the server) is not skipped silently: the channel's subscribers get
    the missed notice before what follows it, and it is counted.
    """
    from lhttp.codec import missedNotice

    delivered, state = await missingPredecessor(hiddenReads=2)
    assertEqual([p for _, p, _ in delivered][1], missedNotice("room.1"))
    assertEqual([p.rpartition(b"\n")[2] for _, p, _ in delivered[::2]], [b"1", b"3"])
    assertEqual(state["history"].unfilled, 1)


@pytest_twisted.ensureDeferred
async def test_checkNewestNeverServedIsTold():
    """
    After a reconnect the check finds the channel's newest message (3)
    past the last seen (1), but reading from there does not give it
    (removed meanwhile, or a stream restarted that does not serve it):
    after one more read, the subscribers get the missed notice, and it is
    counted, not skipped silently.
    """
    from lhttp.codec import missedNotice

    state = {"reads": 0}

    async def script(history, stream):
        history.rereadDelay = 0
        await missedTheTail(history, stream)
        newest = stream.messages[-1]
        publish = stream.publish

        async def newestNotRead(subject, data, reply):
            if b"next_by_subj" not in data:
                return await publish(subject, data, reply)
            state["reads"] += 1
            stream.messages.remove(newest)
            try:
                return await publish(subject, data, reply)
            finally:
                stream.messages.append(newest)

        stream.publish = newestNotRead
        await history.check(["room.1"])
        state["history"] = history

    delivered, _ = await deliveries(script)
    assertEqual([p for _, p, _ in delivered], [
        b"LHTTP/1.0 x\r\n\r\n1", b"LHTTP/1.0 x\r\n\r\n2", missedNotice("room.1")])
    assertEqual(state["reads"], 2)
    assertEqual(state["history"].unfilled, 1)


def assertEqual(a, b):
    assert a == b
