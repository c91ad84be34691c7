"""
The admin page (issue 22) against a real cluster: a real nats-server with
JetStream, three real C{twistd lhttp} nodes with C{--nats} and
C{--admin-listen}, headless Chromium on one node's page, the real
C{bench/loadgen.py} for load and the real C{lhttp top} console script.

The cluster is started once for the module; the last test kills a node.
Screenshots go to the system's temporary folder, never into the
repository.
"""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from procs import ROOT, LHTTPNode, NATSServer, Process, freePort, portAccepts, waitFor
from test_browser import Watched, chromium, inThread

INTERVAL = 1.0
TIMEOUT = 3 * INTERVAL
SHOTS = os.environ.get("LHTTP_SCREENSHOTS", tempfile.gettempdir())


def get(port, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def cluster(port):
    status, body = get(port, "/admin/api/cluster")
    assert status == 200, body
    return json.loads(body)


@pytest.fixture(scope="module")
def nodes():
    store = tempfile.TemporaryDirectory(prefix="lhttp-js-")
    nats = NATSServer(args=["-js", "-sd", store.name]).waitReady()
    started = []
    try:
        for i in range(3):
            admin = freePort()
            node = LHTTPNode(
                "--nats", nats.url, "--history", "room.*=100", "--presence", "room.*",
                "--admin-listen", f"tcp:{admin}:interface=127.0.0.1",
                "--heartbeat-interval", str(INTERVAL),
            )
            node.adminPort = admin
            started.append(node)
        for node in started:
            node.waitReady()
            # The admin port opens after the clients' port: wait for it.
            waitFor(lambda: portAccepts(node.adminPort), 20, what="the admin port to listen")
            waitFor(lambda: get(node.adminPort, "/admin/api/cluster")[0] == 200, 20,
                    what="the admin port")
        waitFor(lambda: cluster(started[0].adminPort)["totals"]["nodes"] == 3, 20,
                what="node 0 to hear the two others")
        yield started
    finally:
        for node in started:
            node.stop()
        nats.stop()
        store.cleanup()


def test_notOnTheClientsPort(nodes, startNode):
    """
    The admin page and its JSON are served on the --admin-listen port only;
    without the option, nowhere.
    """
    node = nodes[0]
    for path in ("/admin/", "/admin/api/cluster", "/admin/admin.js"):
        assert get(node.port, path)[0] == 404
        assert get(node.adminPort, path)[0] == 200
    plain = startNode()
    assert get(plain.port, "/admin/api/cluster")[0] == 404
    assert get(plain.port, "/admin/")[0] == 404


def test_theJSON(nodes):
    """
    Any node's JSON lists the three, itself first, with the history
    stream's and the presence bucket's state.
    """
    for node in nodes:
        document = cluster(node.adminPort)
        assert document["cluster"] is True and document["timeout"] == TIMEOUT
        assert len(document["nodes"]) == 3
        here = document["nodes"][0]
        assert here["self"] and here["node"] == document["node"]
        assert here["listen"] == [f"tcp:{node.port}:interface=127.0.0.1"]
        assert here["broker"]["kind"] == "nats" and "history" in here["broker"]
        assert here["presence"]["kind"] == "jetstream"
        assert all(other["age"] <= TIMEOUT for other in document["nodes"][1:])


def lhttp(*args):
    script = shutil.which("lhttp")
    assert script, "the lhttp console script is not on PATH: pip install -e ."
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_topOnce(nodes):
    """
    C{lhttp top --once} prints one snapshot of the cluster: a line per
    node; a node that is down is one line and exit status 2.
    """
    done = lhttp("top", "--once", f"http://127.0.0.1:{nodes[1].adminPort}/")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "3 nodes (cluster)" in lines[0]
    table = lines[lines.index(next(line for line in lines if line.startswith("NODE"))) + 1:]
    rows = [line for line in table[:3]]
    assert len([row for row in rows if " yes " in row]) == 3, done.stdout
    assert sum(1 for row in rows if row.endswith("self")) == 1
    assert any("history stream" in line and "presence bucket" in line for line in lines), done.stdout
    down = lhttp("top", "--once", f"http://127.0.0.1:{freePort()}/")
    assert down.returncode == 2
    assert down.stdout == ""
    [line] = down.stderr.splitlines()
    assert "cannot reach" in line and "connection refused" in line


def figure(page, selector):
    text = page.locator(selector).first.inner_text().strip()
    return float(text) if text not in ("–", "") else 0.0


def test_pageLiveUnderLoadAndANodeDropsOff(nodes):
    """
    In Chromium: the page lists the 3 nodes; while bench/loadgen.py
    publishes on one node to subscribers on another, the rates, the chart
    and the busiest channels move; a node killed with SIGKILL drops off
    within its heartbeat timeout.
    """
    first, second, third = nodes
    base = f"http://127.0.0.1:{first.adminPort}/admin/"

    def scenario():
        with chromium() as browser:
            watched = Watched(browser)
            page = watched.page
            page.goto(base)
            # The page's Content-Security-Policy forbids eval, which
            # Playwright's wait_for_function uses: poll with evaluate.
            waitFor(lambda: page.locator("#nodes .node").count() == 3, 20, what="3 node cards")
            assert page.locator("#total-nodes").inner_text() == "3"
            assert "cluster over NATS" in page.locator("#status").inner_text()
            load = Process([
                sys.executable, str(ROOT / "bench" / "loadgen.py"),
                "-url", second.url, "-puburl", third.url, "-subs", "20", "-pubs", "2",
                "-msgs", "600", "-rate", "40", "-channel", "busy.room", "-procs", "1",
            ], name="loadgen")
            try:
                # Deliveries happen on the subscribers' node.
                card = f"#nodes .node[data-node='{cluster(second.adminPort)['node']}']"
                waitFor(lambda: inPage(page, card, "deliveries") > 100, 30,
                        what="deliveries per second on the subscribers' node")
                assert figure(page, "#total-deliveries") > 100
                assert inPage(page, card, "connections") >= 20
                waitFor(lambda: page.evaluate(
                    "() => [...document.querySelectorAll('#cluster-chart polyline.deliveries')]"
                    ".some(l => l.getAttribute('points').split(' ').some(p => parseFloat(p.split(',')[1]) < 90))"),
                    20, what="the chart's deliveries line to rise")
                page.locator(f"{card} td.channel", has_text="busy.room").first.wait_for()
                page.screenshot(path=os.path.join(SHOTS, "lhttp-admin-laptop.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})
                page.screenshot(path=os.path.join(SHOTS, "lhttp-admin-phone.png"), full_page=True)
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"the page is {width} px wide on a 390 px phone"
            finally:
                load.stop()
            third.popen.send_signal(signal.SIGKILL)
            third.popen.wait(10)
            killed = time.monotonic()
            waitFor(lambda: page.locator("#nodes .node").count() == 2, TIMEOUT + 10,
                    what="the killed node to drop off")
            gone = time.monotonic() - killed
            watched.assertClean(type("Server", (), {"httpURL": base})())
            return gone

    gone = inThread(scenario, timeout=150)
    # Dropped after TIMEOUT without a heartbeat, seen at the page's next
    # poll (every INTERVAL); a little more for a loaded machine.
    assert gone <= TIMEOUT + INTERVAL + 2, gone
    assert [n["listen"] for n in cluster(first.adminPort)["nodes"]].count(
        [f"tcp:{third.port}:interface=127.0.0.1"]) == 0


def inPage(page, card, name):
    text = page.locator(f"{card} [data-figure={name}] .value").first.inner_text().strip()
    return float(text.replace("k", "e3").replace("M", "e6")) if text not in ("–", "") else 0.0


def test_topRefreshesAndSurvivesADownNode(startNode):
    """
    Without C{--once}, C{lhttp top} prints a snapshot every interval; a
    node that is not (or no longer) there is one line each time, and top
    keeps trying.
    """
    admin = freePort()
    node = startNode("--admin-listen", f"tcp:{admin}:interface=127.0.0.1")
    script = shutil.which("lhttp")
    top = Process([script, "top", "--interval", "0.2", f"http://127.0.0.1:{admin}/"],
                  env={"PYTHONPATH": str(ROOT)}, name="top")
    try:
        waitFor(lambda: top.log().count("NODE ") >= 2, 20, what="two snapshots")
        assert ": 1 node (no NATS)" in top.log()
        node.stop()
        waitFor(lambda: top.log().count("! cannot reach") >= 2, 20, what="two lines for a node down")
        assert top.alive()
        down = [line for line in top.log().splitlines() if line.startswith("! cannot reach")]
        assert down[0].endswith("trying again every 0.2 s")
    finally:
        top.stop()


def test_tokenInTheFragment(startNode):
    """
    With --admin-token the page says the JSON was refused until it is
    opened with the token in its fragment, which it then sends.
    """
    admin = freePort()
    startNode("--admin-listen", f"tcp:{admin}:interface=127.0.0.1", "--admin-token", "s3cret")
    waitFor(lambda: portAccepts(admin), 20, what="the admin port to listen")
    base = f"http://127.0.0.1:{admin}/admin/"
    assert get(admin, "/admin/api/cluster")[0] == 401
    assert get(admin, "/admin/api/cluster", {"Authorization": "Bearer s3cret"})[0] == 200

    def scenario():
        with chromium() as browser:
            watched = Watched(browser)
            page = watched.page
            page.goto(base)
            page.locator("#status.down", has_text="401").wait_for()
            page.goto(base + "#token=s3cret")
            page.reload()
            page.locator("#status:not(.down)", has_text="one node, no NATS").wait_for()
            waitFor(lambda: page.locator("#nodes .node").count() == 1, 20, what="the node's card")

    inThread(scenario, timeout=90)
