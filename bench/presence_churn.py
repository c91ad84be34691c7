"""
What one client churning subscriptions costs a node with presence, and
what it costs everyone else (issue 19, item 2), presence off against on
in one run.

    PYTHONPATH=$PWD python bench/presence_churn.py            # about 40 s
    PYTHONPATH=$PWD python bench/presence_churn.py --seconds 5 --subscriptions 990

For each mode it starts a real C{twistd -n lhttp} node (off: no presence
option; on: C{--presence 'room.*' --presence-events 'room.*'}), and:

- B{the attacker}: one connection that names 12,000 channels first (what
  filled the old 10,000-entry channel-pattern caches), holds
  C{--subscriptions} channels (C{room.0}, ...), then subscribes and
  unsubscribes one more channel per message, as fast as the node takes
  them; every 1,000 messages it publishes a mark to a private channel and
  keeps two such windows in flight, so what it counts is what the node
  handled: C{churn_msgs_per_s};
- B{another client}: meanwhile, every 0.25 s, a new connection that
  subscribes to a room, publishes to it and waits for its own message:
  C{other_round_trip} (median and max, seconds), with an idle node first
  (C{idle_round_trip}) as the control.

It prints one C{presence_churn mode=... key=value...} line per mode and a
C{presence_churn_ratio} line: on/off for the churn rate and for the other
client's median round trip (the target: within 2x).
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from urllib.parse import urlsplit  # noqa: E402

from bench.loadgen import WebSocketClient, clientFrame  # noqa: E402
from bench.run import Servers  # noqa: E402

MODES = {
    "off": (),
    "on": ("--presence", "room.*", "--presence-events", "room.*"),
}
WINDOW = 1000
FLOOD = 12000


class Client(WebSocketClient):
    """
    A connection that hands each message it gets to a queue.
    """

    def __init__(self, *args, **kwargs):
        WebSocketClient.__init__(self, *args, **kwargs)
        self.received = asyncio.Queue()

    def message(self, data, start, end):
        self.received.put_nowait(bytes(data[start:end]))

    async def send(self, text):
        if self.writable is not None:
            await self.writable
        self.transport.write(clientFrame(text.replace("\n", "\r\n").encode()))

    async def until(self, marker, timeout=30):
        while True:
            payload = await asyncio.wait_for(self.received.get(), timeout)
            if marker in payload:
                return payload


async def openClient(url):
    parts = urlsplit(url)
    _, protocol = await asyncio.get_running_loop().create_connection(
        lambda: Client(parts.netloc, "/"), parts.hostname, parts.port)
    return await asyncio.wait_for(protocol.upgraded, 20)


async def roundTrip(url, n):
    start = time.monotonic()
    client = await openClient(url)
    await client.send("LHTTP/1.0 hi\nsubscribe:room.other\n\n")
    await client.send(f"LHTTP/1.0 hi\npublish:room.other\n\nrt-{n}")
    await client.until(f"rt-{n}".encode())
    took = time.monotonic() - start
    client.transport.close()
    return took


async def churn(url, subscriptions, seconds, stop):
    client = await openClient(url)
    # Name many channels: every one is looked up against the patterns.
    for start in range(0, FLOOD, 400):
        names = " ".join(f"flood.{i}" for i in range(start, start + 400))
        await client.send(f"LHTTP/1.0 f\nsubscribe:{names}\n\n")
        await client.send(f"LHTTP/1.0 f\nunsubscribe:{names}\n\n")
    for start in range(0, subscriptions, 200):
        names = " ".join(f"room.{i}" for i in range(start, min(subscriptions, start + 200)))
        await client.send(f"LHTTP/1.0 s\nsubscribe:{names}\n\n")
    await client.send("LHTTP/1.0 s\nsubscribe:mark.self\npublish:mark.self\n\nmark-ready")
    await client.until(b"mark-ready", 120)
    handled = 0
    window = 0
    inFlight = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for i in range(WINDOW // 2):
            await client.send(f"LHTTP/1.0 c\nsubscribe:room.x{i % 10}\n\n")
            await client.send(f"LHTTP/1.0 c\nunsubscribe:room.x{i % 10}\n\n")
        window += 1
        await client.send(f"LHTTP/1.0 m\npublish:mark.self\n\nmark-{window}")
        inFlight.append(window)
        if len(inFlight) >= 2:
            await client.until(f"mark-{inFlight.pop(0)}".encode(), 120)
            handled += WINDOW
    for w in inFlight:
        await client.until(f"mark-{w}".encode(), 120)
        handled += WINDOW
    elapsed = time.monotonic() - started
    stop.set()
    client.transport.close()
    return handled / elapsed


async def measureMode(url, subscriptions, seconds):
    idle = [await roundTrip(url, n) for n in range(5)]
    stop = asyncio.Event()
    churning = asyncio.ensure_future(churn(url, subscriptions, seconds, stop))
    trips = []
    n = 100
    # Let the attacker get going first.
    await asyncio.sleep(1.0)
    while not stop.is_set() and not churning.done():
        n += 1
        trips.append(await roundTrip(url, n))
        await asyncio.sleep(0.25)
    rate = await churning
    return {
        "churn_msgs_per_s": round(rate),
        "idle_round_trip": round(statistics.median(idle), 4),
        "other_round_trip": round(statistics.median(trips), 4) if trips else None,
        "other_round_trip_max": round(max(trips), 4) if trips else None,
        "other_samples": len(trips),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="churn time per mode")
    parser.add_argument("--subscriptions", type=int, default=990)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="lhttp-presence-churn-") as logs:
        servers = Servers(logs)
        try:
            for mode, options in MODES.items():
                node = servers.node(f"node-{mode}", *options)
                results[mode] = asyncio.run(
                    measureMode(node.url, args.subscriptions, args.seconds)
                )
                servers.stop(node)
                fields = " ".join(f"{k}={v}" for k, v in results[mode].items())
                print(f"presence_churn mode={mode} {fields}", flush=True)
        finally:
            servers.stopAll()
    off, on = results["off"], results["on"]
    churnRatio = on["churn_msgs_per_s"] / off["churn_msgs_per_s"]
    tripRatio = (on["other_round_trip"] / off["other_round_trip"]
                 if on["other_round_trip"] and off["other_round_trip"] else None)
    print(f"presence_churn_ratio churn_on_off={churnRatio:.2f} "
          f"other_round_trip_on_off={tripRatio:.2f}" if tripRatio else
          f"presence_churn_ratio churn_on_off={churnRatio:.2f} other_round_trip_on_off=n/a")


if __name__ == "__main__":
    main()
