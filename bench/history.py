"""
What history costs: fan-out deliveries/s and publish-to-deliver latency
with history off and on, on one node and on a cluster, in one run, with
the on/off ratio for each.

    python bench/history.py                  # 1 to 1.5 minutes on 2 CPUs
    python bench/history.py --quick          # one run per shape and setup
    python bench/history.py --repeat 5 --shape "-subs 1000 -msgs 200"
    python bench/history.py --only cluster --retention 10000

It starts everything itself on free loopback ports, with a scratch folder
for the JetStream store, and reads nothing outside this repository:

- B{one node}: C{twistd -n lhttp --history 'room.*=1000'}, embedded
  broker (history in memory);
- B{cluster}: a C{nats-server -js -sd DIR} and two nodes with C{--nats}
  and the same C{--history} (history in JetStream); publishers connect to
  one node, subscribers to the other.

The load is the project's own driver, C{bench/loadgen.py}: history off is
its channel C{plain.bench}, which no pattern matches, history on is
C{room.bench}, on the same processes. With history on, each message gets
an offset and an epoch (embedded), or is published to JetStream, acked,
re-published by the stream to the channel's live subject (which only nodes
with local subscribers hold) and then fanned out (cluster).
Runs are interleaved (off, on, off, on, ...) so load from elsewhere on the
machine hits both alike; medians are printed per shape and setup, with
C{on/off}: the median, over the repeats, of each on run's figure divided by
that of the off run just before it (a pair runs seconds apart, so it sees
much the same load on a shared machine), with each pair's ratio of
deliveries/s (C{pairs}) to show the spread.

Throughput shapes publish as fast as the driver can (their latency is
mostly queueing); the latency shape publishes at a fixed rate. Besides the
table it prints one line per run (C{run ...}: loadgen's result line) and,
at the end, one line per shape, setup and mode (C{history_bench ...}) and
one per shape and setup (C{history_ratio ...}), as C{key=value} fields
(C{shape} is quoted: read them with C{shlex.split}). C{offsets} says
whether deliveries carried an C{offset:} header: C{all} must be the case
with history on, C{none} with it off. It exits 1 if a delivery was
missing or duplicated, the offsets were not so, or a run failed.
"""

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import Servers, findDriver, measure, median, number, raiseOpenFilesLimit  # noqa: E402

THROUGHPUT_SHAPES = ["-subs 100 -msgs 1000", "-subs 10 -msgs 5000"]
LATENCY_SHAPES = ["-subs 100 -msgs 150 -rate 100"]
RETENTION = 1000
CHANNELS = {"off": "plain.bench", "on": "room.bench"}
PATTERN = "room.*"
SETUP_KEYS = {"one node": "one-node", "cluster": "cluster"}


def startSetups(servers, parts, retention, store):
    """
    Start the nodes (and nats-server) C{parts} needs.

    @return: C{(name, url, pubURL)} triples: subscribers connect to C{url},
        publishers to C{pubURL} (L{None}: the same).
    """
    history = ("--history", f"{PATTERN}={retention}")
    setups = []
    if "one-node" in parts:
        single = servers.node("single", *history)
        setups.append(("one node", single.url, None))
    if "cluster" in parts:
        nats = servers.nats("-js", "-sd", str(store))
        publishing = servers.node("cluster-pub", "--nats", nats, *history)
        subscribing = servers.node("cluster-sub", "--nats", nats, *history)
        setups.append(("cluster", subscribing.url, publishing.url))
    return setups


def runAll(driver, shapes, setups, repeat, timeout):
    """
    Every shape on every setup, history off then on, C{repeat} times,
    interleaved; each run is printed as it ends.

    @return: C{{(shape, setup name, mode): [result dicts]}}.
    """
    results = {}
    for _ in range(repeat):
        for shape in shapes:
            for name, url, pubURL in setups:
                for mode, channel in CHANNELS.items():
                    fields = measure(driver, f"{shape} -channel {channel} -offsets", url, pubURL, timeout)
                    results.setdefault((shape, name, mode), []).append(fields)
                    line = " ".join(f"{k}={v}" for k, v in fields.items() if k != "error")
                    error = f" error={shlex.quote(' '.join(fields['error'].split()))}" if "error" in fields else ""
                    print(f"run setup={SETUP_KEYS[name]} history={mode} {line}{error}", flush=True)
    return results


def count(runs, key):
    """
    The sum of C{key} over C{runs}, or L{None} if a run lacks it (it
    failed before printing its result).
    """
    values = [number(fields, key) for fields in runs]
    return None if None in values else int(sum(values))


def offsets(runs):
    """
    How many deliveries carried an C{offset:} header: C{"all"}, C{"none"},
    or C{"N/M"} (C{"?"} if a run failed before counting).
    """
    carried = count(runs, "with_offset")
    delivered = sum(int(f.get("delivered", "0/0").partition("/")[0]) for f in runs)
    if carried is None:
        return "?"
    if carried == 0:
        return "none"
    return "all" if carried == delivered else f"{carried}/{delivered}"


def pairedRatios(on, off, key):
    """
    C{on[i][key] / off[i][key]} for each pair of runs made one after the
    other (those with both figures).
    """
    ratios = []
    for onRun, offRun in zip(on, off):
        new, old = number(onRun, key), number(offRun, key)
        if new and old:
            ratios.append(new / old)
    return ratios


def text(value):
    return "?" if value is None else f"{value:.2f}"


def summarise(results, shapes, setups):
    """
    Print the table of medians and the machine-readable lines.

    @return: whether every run delivered everything exactly once.
    """
    clean = True
    rows, lines = [], []
    for shape in shapes:
        for name, _, _ in setups:
            for mode in CHANNELS:
                runs = results[(shape, name, mode)]
                rate = median(number(f, "deliveries_per_s") for f in runs)
                p50 = median(number(f, "p50_ms") for f in runs)
                p99 = median(number(f, "p99_ms") for f in runs)
                missing, duplicates = count(runs, "missing"), count(runs, "duplicates")
                failed = sum("deliveries_per_s" not in f or "missing" not in f for f in runs)
                stamped = offsets(runs)
                clean = clean and missing == 0 and duplicates == 0 and not failed
                clean = clean and stamped == ("all" if mode == "on" else "none")
                rows.append((shape, name, mode, rate, p50, p99, missing, duplicates, stamped, failed))
                lines.append(
                    f"history_bench shape={shlex.quote(shape)} setup={SETUP_KEYS[name]} history={mode} "
                    f"channel={CHANNELS[mode]} runs={len(runs)} failed={failed} "
                    f"deliveries_per_s={rate or 0:.0f} p50_ms={p50 or 0:.2f} p99_ms={p99 or 0:.2f} "
                    f"missing={'?' if missing is None else missing} "
                    f"duplicates={'?' if duplicates is None else duplicates} offsets={stamped}"
                )
            on, off = results[(shape, name, "on")], results[(shape, name, "off")]
            pairs = [pairedRatios(on, off, key) for key in ("deliveries_per_s", "p50_ms", "p99_ms")]
            ratios = [text(median(values)) for values in pairs]
            each = ",".join(f"{value:.2f}" for value in pairs[0]) or "?"
            rows.append((shape, name, "on/off", *ratios, each))
            lines.append(
                f"history_ratio shape={shlex.quote(shape)} setup={SETUP_KEYS[name]} "
                f"on_off={ratios[0]} p50_on_off={ratios[1]} p99_on_off={ratios[2]} pairs={each}"
            )

    repeats = len(next(iter(results.values())))
    print(f"\n## History off vs on ({'median of ' + str(repeats) if repeats > 1 else 'one run'} each)\n")
    print(f"{'shape':30} {'setup':9} {'history':7} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'missing':>7} {'dups':>5} {'offsets':>7}")
    for shape, name, mode, *values in rows:
        if mode == "on/off":
            pairs = f"   pairs {values[3].replace(',', ' ')}" if repeats > 1 else ""
            print(f"{shape:30} {name:9} {'on/off':7} {values[0]:>12} {values[1]:>8} {values[2]:>8}{pairs}")
            continue
        rate, p50, p99, missing, duplicates, stamped, failed = values
        failure = f"  {failed} run(s) failed" if failed else ""
        print(
            f"{shape:30} {name:9} {mode:7} {rate or 0:12.0f} {p50 or 0:8.2f} {p99 or 0:8.2f}"
            f" {'?' if missing is None else missing:>7} {'?' if duplicates is None else duplicates:>5}"
            f" {stamped:>7}{failure}"
        )
    print("\non/off: the median over the repeats of on / off, each on run against the off run just before it"
          "\n(pairs: deliveries/s of each pair)\n" if repeats > 1 else "")
    for line in lines:
        print(line)
    return clean


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["one-node", "cluster"], action="append",
                        help="run only this setup (repeatable; default both)")
    parser.add_argument("--shape", action="append",
                        help="loadgen flags for a throughput shape (repeatable; default "
                             + "; ".join(f"'{s}'" for s in THROUGHPUT_SHAPES) + ")")
    parser.add_argument("--latency-shape", action="append",
                        help="loadgen flags for a fixed-rate shape (repeatable; default "
                             + "; ".join(f"'{s}'" for s in LATENCY_SHAPES) + ")")
    parser.add_argument("--no-latency", action="store_true", help="skip the fixed-rate shapes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per shape, setup and mode (default 3)")
    parser.add_argument("--quick", action="store_true", help="one run per shape, setup and mode")
    parser.add_argument("--retention", type=int, default=RETENTION,
                        help=f"messages kept per history channel: --history '{PATTERN}=N' (default {RETENTION})")
    parser.add_argument("--procs", type=int, help="loadgen's worker processes (default: one per CPU)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for one loadgen run (default 300)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    parts = args.only or ["one-node", "cluster"]
    shapes = [*(args.shape or THROUGHPUT_SHAPES),
              *([] if args.no_latency else args.latency_shape or LATENCY_SHAPES)]
    raiseOpenFilesLimit()

    with tempfile.TemporaryDirectory(prefix="lhttp-bench-history-") as workdir:
        driver = findDriver("loadgen", None, args.procs, workdir)
        store = Path(workdir) / "jetstream"
        store.mkdir()
        servers = Servers(workdir)
        try:
            print(f"# {os.cpu_count()} CPUs; driver {' '.join(driver)}; --history '{PATTERN}={args.retention}'; "
                  f"history off: channel {CHANNELS['off']}, on: {CHANNELS['on']}", flush=True)
            setups = startSetups(servers, parts, args.retention, store)
            clean = summarise(runAll(driver, shapes, setups, args.repeat, args.timeout), shapes, setups)
        finally:
            servers.stopAll()
    if not clean:
        print("history_bench: a delivery was missing or duplicated, offsets were wrong, or a run failed",
              file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
