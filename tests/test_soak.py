"""
The soak's short form (the long one: C{python -m bench.soak --minutes 3
--connections 1000}): 300 subscribed connections on a real node, a steady
200 publishes/s, connections churning, for 35 s. The node's resident
memory after warm-up must stay within 10 % of where it was, and every
subscriber gets every message of its channel once, in order.
"""

import sys

import pytest_twisted
from twisted.internet import reactor

from procs import ROOT

sys.path.insert(0, str(ROOT))

from bench.soak import raiseOpenFilesLimit, soak  # noqa: E402


@pytest_twisted.ensureDeferred
async def test_soakMemoryStaysFlat(startNode):
    raiseOpenFilesLimit()
    node = startNode()
    lines = []
    result = await soak(
        reactor, node.url, node.popen.pid, connections=300, seconds=35, rate=200,
        channels=30, churn=5, sampleEvery=2.5, warmupFraction=0.3, report=lines.append,
    )
    print("\n" + "\n".join(lines))
    assert result.published >= 6000
    assert result.missing == 0 and result.outOfOrder == 0
    assert result.delivered == result.expected > 0
    assert result.churned >= 50
    assert result.growth() < 0.10, f"RSS grew {result.growth() * 100:.1f}% after warm-up"
    assert node.alive()
