"""
C{--history-max-bytes} bounds the node's real memory (issue 19, item 4):
a real C{twistd lhttp} node, its RSS read from /proc, 31-byte messages
(the issue's worst case: there 8 MiB kept 266k of them and RSS grew
106 MiB). The control, in the same process and run, is the same number of
messages on a channel without history.
"""

import pytest_twisted
from twisted.internet.threads import deferToThread

from lhttpclients import RawWebSocket, health
from procs import rss

MiB = 1024 * 1024
BUDGET = 8 * MiB
COUNT = 120000


def publishMany(port, channel, count):
    """
    C{count} messages of 31 bytes on C{channel} (of 6 characters), fast, from a raw socket;
    returns once the node has handled them all (a marker came back).
    """
    raw = RawWebSocket(port, timeout=60)
    frame = RawWebSocket.frame(f"LHTTP/1.0 c\r\npublish:{channel}\r\n\r\n".encode(), opcode=1)
    batch = frame * 1000
    for _ in range(count // 1000):
        raw.sendall(batch)
    marker = f"done.{channel}".encode()
    raw.sendall(RawWebSocket.frame(
        b"LHTTP/1.0 m\r\nsubscribe:" + marker + b"\r\npublish:" + marker + b"\r\n\r\n", opcode=1))
    while marker not in raw.readFrame()[1]:
        pass
    raw.close()


@pytest_twisted.ensureDeferred
async def test_budgetHoldsForRealMemory(startNode):
    node = startNode("--history", "room.*=1000000", "--history-max-bytes", str(BUDGET))
    pid = node.popen.pid
    # Warm up: the allocator's and the protocol's own first costs.
    await deferToThread(publishMany, node.port, "pl.warm", 20000)
    before = rss(pid)
    await deferToThread(publishMany, node.port, "pl.ctrl", COUNT)
    control = rss(pid) - before
    before = rss(pid)
    await deferToThread(publishMany, node.port, "room.m", COUNT)
    grown = rss(pid) - before
    code, document = await health(node)
    kept = document["broker"]["history"]["messages"]
    ratio = (grown - control) / BUDGET
    print(f"\n--history-max-bytes {BUDGET // MiB} MiB, {COUNT:,} messages of 31 B: kept {kept:,}, "
          f"RSS grew {grown / MiB:.1f} MiB (control without history {control / MiB:.1f} MiB): "
          f"{ratio:.2f}x the budget")
    assert ratio <= 1.5


@pytest_twisted.ensureDeferred
async def test_concurrentHistoryReadsOfLargeMessages(startNode):
    """
    The issue's case: a channel holding 60 x 1,000 KiB messages, 30
    history requests at the default limit at once. Each used to get 500
    (the reply was over the 1 MiB message limit) and RSS went from 120 to
    291 MiB; now each gets a page that fits, and the node's memory grows
    by a bounded amount per request.
    """
    from twisted.internet.defer import gatherResults

    from lhttpclients import client

    node = startNode("--history", "room.*=100")
    pid = node.popen.pid
    publisher = await client(node.url)
    for i in range(60):
        publisher.publish("room.big", "chat", body=b"%02d" % i + b"x" * (1000 * 1024 - 2))
        if i % 10 == 9:
            await publisher.sync(timeout=60)
    readers = [await client(node.url) for _ in range(30)]
    for reader in readers:
        reader.send("chat", [("subscribe", "room.big")])
        await reader.sync(timeout=30)
    before = rss(pid)
    peak = [before]
    from twisted.internet import task

    sampler = task.LoopingCall(lambda: peak.append(rss(pid)))
    sampler.start(0.01)
    pages = await gatherResults([reader.history("room.big", timeout=60) for reader in readers])
    sampler.stop()
    grown = max(peak) - before
    print(f"\n30 history requests at once on 60 x 1,000 KiB: {len(pages)} pages of "
          f"{sorted(set(len(p) for p in pages))} message(s), peak RSS +{grown / MiB:.1f} MiB")
    assert all(len(p) == 1 and p[0].body[:2] == b"59" for p in pages)
    # At most a few copies of one 1 MiB reply each, not the channel's 60 MB.
    assert grown < 30 * 4 * MiB
