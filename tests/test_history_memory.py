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
