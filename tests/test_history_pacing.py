"""
A recovery is paced by the client's reading (issue 19, item 4): real
C{twistd lhttp --history} nodes (embedded and on a real nats-server -js),
raw WebSocket readers with small kernel buffers.

  - A client that reads gets all of a recovery larger than
    C{--max-send-buffer}, every message once and in order, and is not
    closed.
  - A client that stops reading during its recovery is still closed as a
    slow consumer (1008), within C{--slow-consumer-grace}.
"""

import time

import pytest_twisted
from twisted.internet.threads import deferToThread

from lhttp.codec import parse
from lhttpclients import RawWebSocket, client, eventually
from test_abuse import _atLeast, metric, serverSocketOpen

BODY = "x" * 1200


async def fill(node, channels, count, body=BODY):
    publisher = await client(node.url)
    for channel in channels:
        for i in range(count):
            publisher.publish(channel, "chat", body=f"{channel}:{i:05d}:{body}".encode())
        await publisher.sync(timeout=60)


def readRecovery(port, channels, expected, slowEvery=200, replies=None):
    """
    Subscribe with since:0 on a raw socket with a small receive buffer and
    read everything, pausing a little now and then (a phone on a slow
    link): C{(chats per channel, close frame or None)}.
    """
    raw = RawWebSocket(port, rcvbuf=8192, timeout=30)
    raw.sendall(RawWebSocket.frame(
        f"LHTTP/1.0 chat\r\nsubscribe:{' '.join(channels)}\r\nsince:0\r\n\r\n".encode(), opcode=1))
    chats = {channel: [] for channel in channels}
    total = 0
    closed = None
    while total < expected:
        try:
            opcode, payload = raw.readFrame()
        except (ConnectionError, OSError) as e:
            closed = repr(e)
            break
        if opcode == 8:
            closed = payload
            break
        message = parse(payload)
        if message.command == "recovery" and replies is not None:
            replies.append(message)
        if message.command == "chat":
            chats[message.getHeader("channel")].append(message.body.split(b":")[1])
            total += 1
            if total % slowEvery == 0:
                time.sleep(0.05)
    raw.close()
    return chats, closed


def checkAll(chats, count):
    for channel, got in chats.items():
        assert got == [b"%05d" % i for i in range(count)], (channel, len(got))


@pytest_twisted.ensureDeferred
async def test_readingClientGetsAllOfALargeRecovery(startNode):
    """
    The issue's case: 1,000 messages of 1,200 B (1.2 MB, over the 1 MiB
    send buffer) recovered by a raw reader: it got 858, then 1008.
    """
    node = startNode("--history", "room.*=2000")
    await fill(node, ["room.pace"], 1000)
    chats, closed = await deferToThread(readRecovery, node.port, ["room.pace"], 1000)
    print(f"\nembedded: a reader recovering 1,000 x 1,200 B got "
          f"{sum(map(len, chats.values()))}, closed: {closed}")
    assert closed is None
    checkAll(chats, 1000)
    assert await metric(node, "lhttp_slow_consumer_disconnects_total") == 0


@pytest_twisted.ensureDeferred
async def test_readingClientGetsAllOfALargeRecoveryOnJetStream(jetstream, startNode):
    """
    since:0 on many channels at once (there 40 channels, 10,750 messages,
    closed after ~8k): here 10 channels of 150 messages of 1,200 B.
    """
    node = startNode("--nats", jetstream.url, "--history", "room.*=2000")
    from test_history_cluster import ready

    await ready(node)
    channels = [f"room.js{i}" for i in range(10)]
    await fill(node, channels, 150)
    chats, closed = await deferToThread(readRecovery, node.port, channels, 1500)
    print(f"\nJetStream: a reader recovering 10 x 150 x 1,200 B got "
          f"{sum(map(len, chats.values()))}, closed: {closed}")
    assert closed is None
    checkAll(chats, 150)


@pytest_twisted.ensureDeferred
async def test_recoveryLargerThanOneReadOnJetStream(jetstream, startNode):
    """
    One channel of 1,000 messages of 1,200 B (1.4 MB as the stream stores
    them, over the 1 MiB a recovery reads at once): the node reads the
    rest as the reader takes it, and the reader gets all 1,000, in order,
    each once, after a recovery reply whose count says 1,000.
    """
    from lhttpclients import health
    from test_history_cluster import ready

    node = startNode("--nats", jetstream.url, "--history", "room.*=2000")
    await ready(node)
    await fill(node, ["room.big"], 1000)
    _, before = await health(node)
    replies = []
    chats, closed = await deferToThread(readRecovery, node.port, ["room.big"], 1000,
                                        replies=replies)
    _, after = await health(node)
    reads = after["broker"]["history"]["requests"] - before["broker"]["history"]["requests"]
    print(f"\nJetStream: a reader recovering 1,000 x 1,200 B on one channel got "
          f"{sum(map(len, chats.values()))} in {reads} requests, closed: {closed}")
    assert closed is None
    checkAll(chats, 1000)
    assert [(r.getHeader("count"), r.getHeader("recovered")) for r in replies] == [("1000", "true")]
    # The first read, the newest, the count, and the rest's reads.
    assert reads >= 6
    assert after["broker"]["history"]["unfilled"] == 0


@pytest_twisted.ensureDeferred
async def test_clientThatStopsReadingIsStillClosed(startNode):
    grace = 2.0
    node = startNode("--history", "room.*=2000", "--slow-consumer-grace", str(grace),
                     "--ping-interval", "0")
    # More than the kernel's buffers on both sides hold: 12 MB.
    await fill(node, ["room.stuck"], 1200, "x" * 10000)
    stuck = RawWebSocket(node.port, rcvbuf=4096)
    clientPort = stuck.sock.getsockname()[1]
    stuck.sendall(RawWebSocket.frame(
        b"LHTTP/1.0 chat\r\nsubscribe:room.stuck\r\nsince:0\r\n\r\n", opcode=1))
    start = time.monotonic()
    await eventually(lambda: _atLeast(metric(node, "lhttp_slow_consumer_disconnects_total"), 1),
                     timeout=grace + 10, what="the node to give up on the client")
    await eventually(lambda: not serverSocketOpen(node.port, clientPort), timeout=grace + 5,
                     what="the node to close the client's socket")
    print(f"\na client that stopped reading its recovery was dropped after "
          f"{time.monotonic() - start:.2f} s (grace {grace} s)")
    stuck.close()


def sendMalformed(port, count):
    """
    C{count} rounds of since:², a 5,000-digit since and limit:², each
    answered (read back) before the next round.
    """
    raw = RawWebSocket(port, timeout=30)
    requests = [
        "LHTTP/1.0 chat\r\nsubscribe:room.m\r\nsince:\u00b2\r\n\r\n",
        "LHTTP/1.0 chat\r\nsubscribe:room.m\r\nsince:" + "9" * 5000 + "\r\n\r\n",
        "LHTTP/1.0 history\r\nchannel:room.m\r\nlimit:\u00b2\r\n\r\n",
    ]
    statuses = []
    for _ in range(count):
        for request in requests:
            raw.sendall(RawWebSocket.frame(request.encode(), opcode=1))
            message = parse(raw.readFrame()[1])
            statuses.append((message.getHeader("status"), message.getHeader("reason")))
    raw.close()
    return statuses


@pytest_twisted.ensureDeferred
async def test_malformedValuesAre400AndLogNothing(startNode):
    """
    Each of these gave 500 and a critical traceback (about 900 B of log
    per 50-byte message).
    """
    node = startNode("--history", "room.*=100")
    before = len(node.log())
    statuses = await deferToThread(sendMalformed, node.port, 100)
    logged = len(node.log()) - before
    print(f"\n300 malformed since/limit values: statuses {sorted(set(statuses))}, "
          f"{logged} bytes of log")
    assert set(statuses) == {("400", "bad since header"), ("400", "bad limit header")}
    assert logged < 1000
