"""
lhttp's benchmark: fan-out deliveries/s and publish-to-deliver latency for
one node and for a cross-node cluster, measured by the neutral Go driver
lhttpbench (../shared/tools/lhttpbench), in one run so the figures compare.

    python bench/run.py                     # the default shapes
    python bench/run.py --shape "-subs 100 -msgs 1000" --repeat 3

It starts everything itself on free loopback ports: a single node
(embedded broker), a nats-server and two cluster nodes; subscribers go to
one node and, for "cross-node", publishers to the other. It prints one
table row per shape and setup.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVER_SOURCE = ROOT.parent / "shared" / "tools" / "lhttpbench"
DEFAULT_SHAPES = [
    "-subs 100 -msgs 1000",
    "-subs 1000 -msgs 200",
    "-subs 10 -msgs 20000",
    "-subs 100 -msgs 2000 -rate 500",
]


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(port, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited early: {process.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def buildDriver(workdir):
    """
    Build lhttpbench from the shared source into C{workdir} (the shared
    folder is read-only).
    """
    found = shutil.which("lhttpbench")
    if found:
        return found
    if not DRIVER_SOURCE.is_dir():
        raise SystemExit(f"lhttpbench source not found at {DRIVER_SOURCE}")
    target = Path(workdir) / "lhttpbench"
    shutil.copytree(DRIVER_SOURCE, target)
    subprocess.run(["sh", "build.sh"], cwd=target, check=True, stdout=subprocess.DEVNULL)
    return str(target / "lhttpbench")


class Servers:
    def __init__(self, logDir):
        self.logDir = Path(logDir)
        self.processes = []

    def start(self, name, args, port):
        log = open(self.logDir / f"{name}.log", "w")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        waitForPort(port, process)
        return process

    def node(self, name, *options):
        port = freePort()
        self.start(
            name,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--nodaemon", "--pidfile=", "lhttp",
             "--listen", f"tcp:{port}:interface=127.0.0.1", *options],
            port,
        )
        return f"ws://127.0.0.1:{port}/"

    def nats(self):
        port = freePort()
        binary = shutil.which("nats-server") or "nats-server"
        self.start("nats", [binary, "-a", "127.0.0.1", "-p", str(port)], port)
        return f"nats://127.0.0.1:{port}"

    def stopAll(self):
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            process.wait(10)


def waitReady(url, timeout=30):
    import urllib.request

    health = url.replace("ws://", "http://") + "health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{health} not ready after {timeout}s")


def measure(driver, shape, url, pubURL=None):
    args = [driver, "-url", url, *shape.split()]
    if pubURL:
        args += ["-puburl", pubURL]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    line = (result.stdout.strip().splitlines() or [""])[-1]
    fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
    return fields


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", help="lhttpbench flags (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per shape and setup")
    args = parser.parse_args(argv)
    shapes = args.shape or DEFAULT_SHAPES

    with tempfile.TemporaryDirectory(prefix="lhttp-bench-") as workdir:
        driver = buildDriver(workdir)
        servers = Servers(workdir)
        try:
            single = servers.node("single")
            nats = servers.nats()
            nodeA = servers.node("cluster-a", "--nats", nats)
            nodeB = servers.node("cluster-b", "--nats", nats)
            for url in (single, nodeA, nodeB):
                waitReady(url)
            setups = [
                ("one node", single, None),
                ("NATS node, local", nodeA, None),
                ("cross-node", nodeA, nodeB),
            ]
            print(f"{'shape':34} {'setup':18} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8}  lost")
            for shape in shapes:
                for name, url, pubURL in setups:
                    for _ in range(args.repeat):
                        f = measure(driver, shape, url, pubURL)
                        print(
                            f"{shape:34} {name:18} {f.get('deliveries_per_s', '?'):>12} "
                            f"{f.get('p50_ms', '?'):>8} {f.get('p99_ms', '?'):>8}  {f.get('lost', '?')}",
                            flush=True,
                        )
        finally:
            servers.stopAll()


if __name__ == "__main__":
    main()
