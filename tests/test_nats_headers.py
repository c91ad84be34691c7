"""
The node's nats-py client (L{lhttp.brokers.connection.NATS}): every header
block is read as nats-py's own parser reads it (L{parseHeaders}), and its
JetStream publishes are acknowledged as nats-py's own (L{FastJetStream}).
"""

import random

import pytest
import pytest_twisted
from nats.aio.client import Client as NATSPy
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError

from lhttp.brokers.connection import NATS, FastJetStream, deferred, parseHeaders


def result(coroutine):
    """
    The result of a coroutine that does not wait (header parsing), run
    without an event loop (the tests' reactor runs one already).
    """
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise AssertionError("it waited")


def natsPy(block):
    """
    What nats-py's own parser makes of a header block.
    """
    return result(NATSPy()._process_headers(block))


def ours(block):
    return result(NATS()._process_headers(block))


LIVE = (b"NATS/1.0\r\nNats-Msg-Id: n1-42\r\nNats-Stream: LHTTP_HISTORY\r\n"
        b"Nats-Subject: room.bench\r\nNats-Sequence: 1234\r\n"
        b"Nats-Time-Stamp: 2026-12-03T10:39:54.123456789Z\r\nNats-Last-Sequence: 1233\r\n\r\n")

BLOCKS = [
    LIVE,
    b"NATS/1.0\r\nLhttp-Node: event\r\n\r\n",
    b"NATS/1.0\r\n\r\n",
    # Status lines, with and without a description and headers.
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1016\r\nNats-Last-Stream: 1024\r\n\r\n",
    b"NATS/1.0 100 FlowControl Request\r\n\r\n",
    # A name sent twice: the last one.
    b"NATS/1.0\r\nA: 1\r\nA: 2\r\nB: x\r\n\r\n",
    # Spacing around values, none after the colon, tabs, an empty value.
    b"NATS/1.0\r\nA:1\r\nB:   2  \r\nC:\t3\t\r\nD:\r\nE: \r\n\r\n",
    # A colon in the value, UTF-8 and bad UTF-8 in it.
    b"NATS/1.0\r\nA: b:c: d\r\nB: caf\xc3\xa9\r\nC: \xff\xfe\r\n\r\n",
    # Lines nats-py skips: no colon, a space or non-ASCII in the name.
    b"NATS/1.0\r\nno colon here\r\nA B: 1\r\n\xc3\xa9: 2\r\nC: 3\r\n\r\n",
    b"NATS/1.0\r\n A: 1\r\nB : 2\r\n\r\n",
    # A lone CR or LF inside a line, a control character in a value.
    b"NATS/1.0\r\nA: 1\rB: 2\r\nC: 3\nD: 4\r\nE: \x00\x1f\r\n\r\n",
    b"NATS/1.0\r\nA: \x0b1\x0c\r\n\r\n",
    # No final empty line, a trailing line without CRLF.
    b"NATS/1.0\r\nA: 1\r\n",
    b"NATS/1.0\r\nA: 1\r\nB: 2",
    # Only the version line, and something else.
    b"NATS/1.0\r\n",
    b"NATS/2.0\r\nA: 1\r\n\r\n",
    None,
    b"",
]


@pytest.mark.parametrize("block", BLOCKS)
def test_likeNATSPy(block):
    """
    Every block, ordinary or odd, reads as nats-py reads it.
    """
    assert ours(block) == natsPy(block)


def test_fastForTheEverydayForm():
    """
    A history message's live headers take the fast path; a status line does
    not.
    """
    assert parseHeaders(LIVE)["Nats-Sequence"] == "1234"
    assert parseHeaders(b"NATS/1.0 503\r\n\r\n") is NotImplemented
    assert parseHeaders(b"NATS/1.0 100 Idle Heartbeat\r\nA: 1\r\n\r\n") is NotImplemented
    assert parseHeaders(b"NATS/1.0\r\n\r\n") is None


ALPHABET = [b"A", b"b", b"-", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\xc3\xa9", b"\xff",
            b"1", b"Nats-Sequence", b": ", b"\x0b", b"\x1f", b"~"]


def test_randomBlocks():
    """
    Random blocks, most of them malformed, read as nats-py reads them.
    """
    rng = random.Random(20)
    for _ in range(3000):
        lines = []
        for _ in range(rng.randrange(0, 6)):
            if rng.random() < 0.5:
                name = b"".join(rng.choice([b"A", b"b", b"-", b"Nats-X", b"9", b"~"])
                                for _ in range(rng.randrange(1, 4)))
                value = b"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 5)))
                lines.append(name + rng.choice([b": ", b":", b" :"]) + value)
            else:
                lines.append(b"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 8))))
        head = rng.choice([b"NATS/1.0\r\n", b"NATS/1.0\r\n", b"NATS/1.0 503\r\n",
                           b"NATS/1.0 100 Idle Heartbeat\r\n"])
        block = head + b"".join(line + b"\r\n" for line in lines) + rng.choice([b"\r\n", b""])
        assert outcome(ours, block) == outcome(natsPy, block), block


def outcome(parse, block):
    """
    What a parser returns, or the type of what it raises (nats-py raises
    on some malformed status lines; ours leaves those to it).
    """
    try:
        return parse(block)
    except Exception as e:
        return type(e)


@pytest_twisted.ensureDeferred
async def test_publishAsyncLikeNATSPy(jetstream):
    """
    On a real nats-server with JetStream, C{publish_async} through
    L{FastJetStream} (its acknowledgements read as they arrive) acknowledges
    as through nats-py's own context: the stream, the sequence, a
    duplicate C{Nats-Msg-Id} said, an error (no stream for the subject)
    raised; each message is stored once.
    """
    client = NATS()
    await deferred(client.connect(servers=[jetstream.url]))
    try:
        ours = client.jetstream()
        theirs = JetStreamContext(client)
        assert isinstance(ours, FastJetStream)
        await deferred(theirs.add_stream(name="HEADERS", subjects=["h.*"]))

        async def acks(context, subject, ids):
            futures = [await context.publish_async(subject, b"x", headers={"Nats-Msg-Id": i})
                       for i in ids]
            return [await future for future in futures]

        slow = []
        original = JetStreamContext._handle_async_reply

        async def counted(self, msg):
            slow.append(msg.data)
            return await original(self, msg)

        JetStreamContext._handle_async_reply = counted
        try:
            mine = await deferred(acks(ours, "h.1", ["a", "b", "a"]))
        finally:
            JetStreamContext._handle_async_reply = original
        # nats-server's acknowledgements take the fast path.
        assert slow == []
        nats = await deferred(acks(theirs, "h.2", ["c", "d", "c"]))
        assert mine == [PubAck(stream="HEADERS", seq=1), PubAck(stream="HEADERS", seq=2),
                        PubAck(stream="HEADERS", seq=1, duplicate=True)]
        assert nats == [PubAck(stream="HEADERS", seq=3), PubAck(stream="HEADERS", seq=4),
                        PubAck(stream="HEADERS", seq=3, duplicate=True)]
        assert ours.publish_async_pending() == 0

        async def failed(context):
            future = await context.publish_async("nowhere", b"x")
            try:
                await future
            except Exception as e:
                return type(e)

        assert await deferred(failed(ours)) is await deferred(failed(theirs)) is NoStreamResponseError
    finally:
        await deferred(client.close())


@pytest_twisted.ensureDeferred
async def test_publishStoredLikeNATSPy(jetstream):
    """
    On a real nats-server with JetStream, L{FastJetStream.publishStored}
    stores each message once per C{Nats-Msg-Id} and gathers the
    acknowledgements nats-py's own C{publish} gets, by the caller's
    indexes, read as they arrive; a refused one is an error by its index,
    and nothing is left awaited.
    """
    client = NATS()
    await deferred(client.connect(servers=[jetstream.url]))
    try:
        ours = client.jetstream()
        theirs = JetStreamContext(client)
        await deferred(theirs.add_stream(name="STORED", subjects=["s.*"]))
        slow = []
        original = JetStreamContext._handle_async_reply

        async def counted(self, msg):
            slow.append(msg.data)
            return await original(self, msg)

        async def stored(entries):
            acks = await ours.publishStored(entries)
            await acks.done
            return acks

        JetStreamContext._handle_async_reply = counted
        try:
            acks = await deferred(stored([(3, "s.1", b"one", "a"), (5, "s.2", b"two", "b"),
                                          (7, "s.1", b"one again", "a")]))
        finally:
            JetStreamContext._handle_async_reply = original
        assert slow == []
        assert acks.results == {3: PubAck(stream="STORED", seq=1), 5: PubAck(stream="STORED", seq=2),
                                7: PubAck(stream="STORED", seq=1, duplicate=True)}
        assert acks.errors == {} and acks.unsettled() == []
        nats = await deferred(theirs.publish("s.3", b"three", headers={"Nats-Msg-Id": "c"}))
        assert nats == PubAck(stream="STORED", seq=3)
        stream = await deferred(theirs.get_msg("STORED", 2))
        assert (stream.subject, stream.data, stream.headers) == ("s.2", b"two", {"Nats-Msg-Id": "b"})

        refused = await deferred(stored([(0, "nowhere", b"x", "d"), (1, "s.1", b"four", "e")]))
        assert list(refused.errors) == [0] and isinstance(refused.errors[0], NoStreamResponseError)
        assert refused.results == {1: PubAck(stream="STORED", seq=4)}
        assert ours._pending() == 0
    finally:
        await deferred(client.close())


@pytest_twisted.ensureDeferred
async def test_publishStoredRefusesAMalformedSubjectOrId(jetstream):
    """
    A subject or C{Nats-Msg-Id} with a space or a line break is refused
    before anything is written (they are written by hand).
    """
    from nats.errors import BadSubjectError

    client = NATS()
    await deferred(client.connect(servers=[jetstream.url]))
    try:
        ours = client.jetstream()
        for entry in [(0, "s.1 x", b"x", "a"), (0, "s.1", b"x", "a\r\nX: y"), (0, "s.1", b"x", "")]:
            with pytest.raises(BadSubjectError):
                await deferred(ours.publishStored([entry]))
        assert not any(b"HPUB" in command for command in client._pending)
    finally:
        await deferred(client.close())
