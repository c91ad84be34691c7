"""
The JavaScript SDK's acknowledged publish in a real Chromium, against a
real cluster (two C{twistd lhttp --nats --history} nodes, nats-server with
JetStream) whose NATS link stalls (SIGSTOP) for 4 s: every publish whose
promise resolved is delivered exactly once to a subscriber on the other
node, on a history and a plain channel, however often the SDK sent it.
"""

import json
import signal
import time
import urllib.request

from lhttp.codec import parse
from lhttp.word import POSITION, kindOf
from lhttpclients import RawWebSocket
from procs import waitFor
from test_browser import Watched, chromium, inThread, showAt

HISTORY = "hist.*=100000"

PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="/demo/lhttp.js"></script>
<script>
  window.results = {};
  window.pending = 0;
  const client = new Lhttp((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/");
  window.publishFor = (ms) => new Promise((done) => {
    let n = 0;
    const until = Date.now() + ms;
    const timer = setInterval(() => {
      if (Date.now() > until) { clearInterval(timer); done(n); return; }
      const body = "j" + n++;
      window.pending++;
      client.publish("hist.1 plain", "m", {}, body, { ack: true, retries: 30, timeout: 3000 })
        .then((ack) => { window.results[body] = { attempts: ack.attempts, duplicate: ack.duplicate,
                                                  offset: ack.positions["hist.1"].offset }; },
              (error) => { window.results[body] = { error: String(error) }; })
        .finally(() => { window.pending--; });
    }, 20);
  });
  client.on_open = () => { document.documentElement.dataset.open = "1"; };
</script>
"""


def healthy(node):
    try:
        with urllib.request.urlopen(node.httpURL + "health", timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def subscribe(node):
    subscriber = RawWebSocket(node.port, timeout=1)
    subscriber.sendall(RawWebSocket.frame(
        b"LHTTP/1.0 s\r\nsubscribe:hist.1 plain\r\n\r\n", opcode=1))
    subscriber.sendall(RawWebSocket.frame(
        b"LHTTP/1.0 ready\r\nsubscribe:ready.1\r\npublish:ready.1\r\n\r\n", opcode=1))
    while parse(subscriber.readFrame()[1]).command != "ready":
        pass
    return subscriber


def drain(subscriber, counts, seconds):
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            opcode, payload = subscriber.readFrame()
        except (TimeoutError, OSError):
            continue
        message = parse(payload)
        if message.command != "m":
            continue
        channel = message.getHeader("channel") if kindOf(message) == POSITION else "plain"
        key = (channel, message.body.decode())
        counts[key] = counts.get(key, 0) + 1


def test_jsSdkPublishesOnceThroughAStall(startNode, jetstream):
    nodes = [startNode("--nats", jetstream.url, "--history", HISTORY, "--demo") for _ in range(2)]
    for node in nodes:
        waitFor(lambda: healthy(node), 20, what="a ready node")
    subscriber = subscribe(nodes[0])

    def scenario():
        with chromium() as browser:
            watched = Watched(browser)
            page = watched.page
            showAt(page, f"{nodes[1].httpURL}demo/ack-test.html", PAGE)
            page.wait_for_function("document.documentElement.dataset.open === '1'")
            page.evaluate("() => { window.publishFor(7000).then(() => { window.finished = true; }); }")
            time.sleep(1.5)
            jetstream.signal(signal.SIGSTOP)
            try:
                time.sleep(4)
            finally:
                jetstream.signal(signal.SIGCONT)
            page.wait_for_function("window.finished && window.pending === 0 && "
                                   "Object.keys(window.results).length > 0", timeout=60000)
            return page.evaluate("JSON.stringify(window.results)")

    results = json.loads(inThread(scenario, timeout=100))
    counts = {}
    acked = [body for body, r in results.items() if "error" not in r]
    drain(subscriber, counts, 5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(
            counts.get((c, b), 0) >= 1 for b in acked for c in ("hist.1", "plain")):
        drain(subscriber, counts, 1)
    subscriber.close()

    failed = {b: r for b, r in results.items() if "error" in r}
    assert not failed, list(failed.items())[:5]
    retried = [b for b in acked if results[b]["attempts"] > 1]
    assert retried, "nothing needed a retry"
    missing = [(c, b) for b in acked for c in ("hist.1", "plain") if counts.get((c, b), 0) < 1]
    twice = [k for k, v in counts.items() if v > 1]
    assert not missing, missing[:10]
    assert not twice, twice[:10]
    offsets = [results[b]["offset"] for b in acked]
    assert len(set(offsets)) == len(offsets), "two publishes acknowledged with one offset"
    print(f"\nJS SDK, NATS stalled 4 s: {len(acked)} publishes acknowledged ({len(retried)} after a "
          f"retry, {sum(1 for b in acked if results[b]['duplicate'])} duplicate:true), each "
          f"delivered exactly once on 2 channels; 0 twice")
