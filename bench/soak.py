"""
A bounded soak: many subscribed WebSocket connections on one real
C{twistd lhttp} node, a steady stream of numbered publishes, a little
connection churn, and the node's resident memory (VmRSS from
/proc/<pid>/status) sampled all along. It shows that memory stays flat once
warmed up and that no delivery is lost, duplicated or reordered.

    python -m bench.soak --minutes 3 --connections 1000

It starts its own node on a free loopback port (or use --url and --pid for
a node already running), prints one line per sample, then the verdict; it
exits non-zero if memory grew more than --max-growth after warm-up or a
delivery went missing. The test suite runs a short form (tests/test_soak.py).
"""

import argparse
import bisect
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater

from lhttp.client import connect


def rss(pid):
    """
    @return: the resident memory of process C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def raiseOpenFilesLimit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Subscriber:
    """
    One subscribed connection's ledger: after its subscription was in place
    (publisher's counter at C{first}), it must get every numbered message of
    its channel, once, in order.
    """

    def __init__(self, channel):
        self.channel = channel
        self.first = None
        self.last = -1
        self.count = 0
        self.outOfOrder = 0
        self.protocol = None

    def received(self, message):
        if message.command != "soak":
            return
        seq = int(message.body)
        if seq <= self.last:
            self.outOfOrder += 1
        self.last = seq
        if self.first is not None and seq >= self.first:
            self.count += 1


@dataclass
class SoakResult:
    samples: list = field(default_factory=list)      # (seconds, rss bytes, delivered)
    published: int = 0
    delivered: int = 0
    expected: int = 0
    missing: int = 0
    outOfOrder: int = 0
    churned: int = 0
    warmup: float = 0.0

    def growth(self):
        """
        @return: the largest RSS after warm-up relative to the first sample
            after warm-up (0.05 = 5 % more).
        """
        after = [r for t, r, _ in self.samples if t >= self.warmup]
        return max(after) / after[0] - 1


async def _subscribe(reactor, url, channel, publisher):
    sub = Subscriber(channel)
    protocol = await connect(reactor, url)
    protocol.onLHTTPMessage = sub.received
    protocol.subscribe(channel)
    await protocol.sync(30)
    sub.first = publisher.nextSeq
    sub.protocol = protocol
    return sub


class Publisher:
    def __init__(self, protocol, channels):
        self.protocol = protocol
        self.channels = channels
        self.nextSeq = 0
        self.sentTo = []    # channel index per seq

    def publishOne(self):
        seq = self.nextSeq
        channel = seq % self.channels
        self.protocol.send("soak", [("publish", f"soak.{channel}")], str(seq).ljust(64))
        self.sentTo.append(channel)
        self.nextSeq += 1


async def soak(reactor, url, pid, connections=1000, seconds=180.0, rate=200, channels=50,
               churn=5, sampleEvery=5.0, warmupFraction=0.3, report=print):
    """
    Run the soak against the node at C{url} (process C{pid}).

    @param rate: publishes per second.
    @param churn: connections closed and replaced per sample.
    @return: a L{SoakResult}.
    """
    result = SoakResult()
    publisher = Publisher(await connect(reactor, url), channels)
    subscribers = []
    for start in range(0, connections, 100):
        batch = [ensureDeferred(_subscribe(reactor, url, f"soak.{i % channels}", publisher))
                 for i in range(start, min(start + 100, connections))]
        for ok, value in await DeferredList(batch, fireOnOneErrback=True, consumeErrors=True):
            subscribers.append(value)
    report(f"{len(subscribers)} connections subscribed to {channels} channels; "
           f"node RSS {rss(pid) / 2**20:.1f} MiB")

    started = time.monotonic()
    result.warmup = seconds * warmupFraction
    nextSample = 0.0
    closed = []
    tick = 0.02
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) - publisher.nextSeq
        for _ in range(max(0, due)):
            publisher.publishOne()
        if elapsed >= nextSample:
            delivered = sum(s.count for s in subscribers) + sum(s.count for s in closed)
            result.samples.append((elapsed, rss(pid), delivered))
            report(f"{elapsed:6.1f}s  RSS {result.samples[-1][1] / 2**20:7.1f} MiB  "
                   f"published {publisher.nextSeq}  delivered {delivered}")
            nextSample += sampleEvery
            for _ in range(min(churn, len(subscribers))):
                gone = subscribers.pop(0)
                gone.protocol.sendClose(1000)
                closed.append(gone)
                subscribers.append(await _subscribe(reactor, url, gone.channel, publisher))
                result.churned += 1
        await deferLater(reactor, tick)

    await publisher.protocol.sync(30)
    final = publisher.nextSeq

    byChannel = {}
    for seq, index in enumerate(publisher.sentTo):
        byChannel.setdefault(index, []).append(seq)

    def expectedFor(sub):
        seqs = byChannel.get(int(sub.channel.rsplit(".", 1)[1]), [])
        return len(seqs) - bisect.bisect_left(seqs, sub.first)

    expected = {id(s): expectedFor(s) for s in subscribers}
    deadline = time.monotonic() + 30
    while any(s.count < expected[id(s)] for s in subscribers) and time.monotonic() < deadline:
        await deferLater(reactor, 0.1)
    result.published = final
    result.expected = sum(expected.values())
    result.delivered = sum(s.count for s in subscribers)
    result.missing = sum(max(0, expected[id(s)] - s.count) for s in subscribers)
    result.outOfOrder = sum(s.outOfOrder for s in subscribers + closed)
    result.samples.append((time.monotonic() - started, rss(pid), result.delivered))
    for sub in subscribers:
        sub.protocol.sendClose(1000)
    publisher.protocol.sendClose(1000)
    report(
        f"published {final}, {result.delivered} of {result.expected} expected deliveries to the "
        f"{len(subscribers)} open connections, {result.missing} missing, "
        f"{result.outOfOrder} out of order or repeated; {result.churned} connections churned; "
        f"RSS growth after {result.warmup:.0f}s warm-up: {result.growth() * 100:+.1f}%"
    )
    return result


def _freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _startNode():
    port = _freePort()
    node = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "--nodaemon", "--pidfile=", "lhttp", "--listen", f"tcp:{port}:interface=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return node, f"ws://127.0.0.1:{port}/"
        except OSError:
            if node.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the lhttp node did not start")
            time.sleep(0.05)


def main(argv=None):
    parser = argparse.ArgumentParser(description="lhttp soak: flat memory, nothing lost")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=200, help="publishes per second")
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--churn", type=int, default=5, help="connections replaced per sample")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--max-growth", type=float, default=0.10,
                        help="allowed RSS growth after warm-up (0.10 = 10%%)")
    parser.add_argument("--url", help="a running node's WebSocket URL (default: start one)")
    parser.add_argument("--pid", type=int, help="that node's process id")
    args = parser.parse_args(argv)
    raiseOpenFilesLimit()

    node = None
    url, pid = args.url, args.pid
    if url is None:
        node, url = _startNode()
        pid = node.pid
    elif pid is None:
        parser.error("--url needs --pid")

    from twisted.internet import task

    outcome = {}

    async def run(reactor):
        outcome["result"] = await soak(
            reactor, url, pid, args.connections, args.minutes * 60, args.rate,
            args.channels, args.churn, args.sample_every,
        )

    try:
        task.react(lambda reactor: ensureDeferred(run(reactor)), [])
    except SystemExit as e:
        if e.code:
            raise
    finally:
        if node is not None:
            node.terminate()
            node.wait(10)
    result = outcome["result"]
    ok = result.missing == 0 and result.outOfOrder == 0 and result.growth() < args.max_growth
    print("OK" if ok else "FAILED")
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    main()
