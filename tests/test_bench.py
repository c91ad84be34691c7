"""
The benchmark runs from a clean clone: C{bench/loadgen.py} drives a real
node and accounts for every delivery, and C{bench/run.py} uses it without
reaching outside the repository (no C{../shared}, no C{lhttpbench});
C{bench/history.py} measures history off against on, on one node and on a
cluster, the same way.
"""

import os
import shlex
import shutil
import subprocess
import sys

from procs import ROOT

sys.path.insert(0, str(ROOT))

from bench.run import findDriver  # noqa: E402

SHAPE = ["-subs", "40", "-msgs", "300", "-procs", "2"]


def fields(line):
    return dict(item.split("=", 1) for item in line.split())


def fakeLhttpbench(directory, marker):
    """
    An C{lhttpbench} on C{PATH} that leaves C{marker} behind when run.
    """
    directory.mkdir()
    fake = directory / "lhttpbench"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\necho subs=1 deliveries_per_s=1 lost=false\n")
    fake.chmod(0o755)
    return fake


def test_loadgenAccountsForEveryDelivery(lhttpNode):
    """
    Two worker processes of 20 subscribers each get all 300 messages, once
    each; the line is lhttpbench's, plus missing and duplicates.
    """
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loadgen.py"), "-url", lhttpNode.url, *SHAPE],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [line] = result.stdout.splitlines()
    got = fields(line)
    assert got["delivered"] == "12000/12000"
    assert (got["missing"], got["duplicates"], got["lost"]) == ("0", "0", "false")
    assert (got["subs"], got["msgs"], got["procs"]) == ("40", "300", "2")
    assert float(got["deliveries_per_s"]) > 0
    assert 0 < float(got["p50_ms"]) <= float(got["p99_ms"]) <= float(got["max_ms"])
    assert float(got["publish_s"]) <= float(got["elapsed_s"])


def test_runFromACleanCloneReadsNothingOutside(tmp_path):
    """
    C{bench/} copied alone into an empty tree, with no C{../shared} beside
    it and a booby-trapped C{lhttpbench} first on C{PATH}: C{run.py} still
    measures a node and the ceilings, with the in-repo load generator.
    """
    clone, env, scratch = cleanClone(tmp_path)
    marker = tmp_path / "lhttpbench-ran"
    fakeLhttpbench(tmp_path / "bin", marker)
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        [sys.executable, "bench/run.py", "--only", "throughput", "--repeat", "1",
         "--shape", "-subs 40 -msgs 300", "--procs", "2"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=90,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert not marker.exists(), out
    assert f"driver {sys.executable} {(clone / 'bench' / 'loadgen.py').resolve()}" in out
    medians = out.split("(medians)")[1].splitlines()
    rows = {name: line for line in medians for name in ("ceiling", "one node", "Autobahn stock") if name in line}
    assert len(rows) == 3, out
    for name, line in rows.items():
        assert line.endswith("0/1 runs lost"), line
        assert float(line.split(name, 1)[1].split()[0]) > 0, line


def test_lhttpbenchOnlyWhenAskedFor(tmp_path, monkeypatch):
    """
    C{--driver lhttpbench} takes it from C{PATH}, or builds it from a source
    directory the user names, in a scratch copy.
    """
    source = tmp_path / "src"
    source.mkdir()
    (source / "build.sh").write_text("printf '#!/bin/sh\\n' > lhttpbench && chmod +x lhttpbench\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    [built] = findDriver("lhttpbench", str(source), None, scratch)
    assert built == str(scratch / "lhttpbench" / "lhttpbench") and os.access(built, os.X_OK)
    assert not (source / "lhttpbench").exists()
    assert findDriver("lhttpbench", built, None, scratch) == [built]

    fake = fakeLhttpbench(tmp_path / "bin", tmp_path / "ran")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert findDriver("lhttpbench", None, None, scratch) == [str(fake)]
    assert findDriver("loadgen", None, 3, scratch)[1:] == [str(ROOT / "bench" / "loadgen.py"), "-procs", "3"]


def linesOf(output, kind):
    """
    The C{kind key=value ...} lines of a benchmark's output, as dicts.
    """
    return [
        dict(word.split("=", 1) for word in words[1:])
        for words in map(shlex.split, output.splitlines())
        if words[:1] == [kind]
    ]


def cleanClone(tmp_path):
    """
    C{bench/} copied alone into an empty tree, and an environment where
    lhttp is importable from this checkout and temporary files go to a
    folder of their own.

    @return: the clone, the environment, the temporary folder.
    """
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "bench", clone / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return clone, env, scratch


def test_historyOnAgainstOffInOneRun(tmp_path):
    """
    C{bench/history.py} at smoke size, from a clean clone: one node and a
    cluster on nats-server -js, history off and on, every delivery once,
    offsets on exactly the history channel's deliveries, an on/off ratio for
    each shape and setup; its processes and JetStream store are gone after.
    """
    clone, env, scratch = cleanClone(tmp_path)
    result = subprocess.run(
        [sys.executable, "bench/history.py", "--repeat", "1", "--procs", "2",
         "--shape", "-subs 5 -msgs 50", "--latency-shape", "-subs 5 -msgs 20 -rate 200"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out

    runs, benches, ratios = (linesOf(result.stdout, kind)
                             for kind in ("run", "history_bench", "history_ratio"))
    shapes = {"-subs 5 -msgs 50", "-subs 5 -msgs 20 -rate 200"}
    combinations = {(shape, setup) for shape in shapes for setup in ("one-node", "cluster")}

    assert len(runs) == 8, out
    for run in runs:
        assert (run["missing"], run["duplicates"], run["lost"]) == ("0", "0", "false"), run
        expected = "all" if run["history"] == "on" else "none"
        carried = int(run["with_offset"])
        assert carried == (int(run["delivered"].split("/")[0]) if expected == "all" else 0), run

    assert {(b["shape"], b["setup"], b["history"]) for b in benches} == {
        (*combination, mode) for combination in combinations for mode in ("off", "on")}
    for bench in benches:
        assert (bench["missing"], bench["duplicates"], bench["failed"]) == ("0", "0", "0"), bench
        assert bench["offsets"] == ("all" if bench["history"] == "on" else "none"), bench
        assert bench["channel"] == ("room.bench" if bench["history"] == "on" else "plain.bench")
        assert float(bench["deliveries_per_s"]) > 0, bench
        assert 0 < float(bench["p50_ms"]) <= float(bench["p99_ms"]), bench

    assert {(r["shape"], r["setup"]) for r in ratios} == combinations
    for ratio in ratios:
        for key in ("on_off", "p50_on_off", "p99_on_off"):
            assert float(ratio[key]) > 0, ratio

    table = result.stdout.split("## History off vs on")[1]
    assert table.count(" on/off ") == 4, table
    assert list(scratch.iterdir()) == [], "the scratch folder and the JetStream store are removed"


def test_authOnAgainstOffInOneRun(tmp_path):
    """
    C{bench/auth.py} at smoke size, from a clean clone: fan-out with
    authentication and a channel rule on against a node without, every
    delivery once, and handshakes/s for each way a connection proves who
    it is (none, HS256, RS256, the connect proxy), each connection
    accepted by the node (its C{connect} reply says C{status:200}).
    """
    clone, env, scratch = cleanClone(tmp_path)
    result = subprocess.run(
        [sys.executable, "bench/auth.py", "--repeat", "1", "--handshakes", "20",
         "--shape", "-subs 5 -msgs 50 -procs 2"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out

    runs = linesOf(result.stdout, "run")
    assert [run["auth"] for run in runs] == ["off", "on"], out
    for run in runs:
        assert (run["missing"], run["duplicates"], run["delivered"]) == ("0", "0", "250/250"), run
    [throughput] = linesOf(result.stdout, "auth_throughput")
    assert float(throughput["on_off"]) > 0, throughput
    handshakes = linesOf(result.stdout, "auth_handshakes")
    assert [h["method"] for h in handshakes] == ["none", "hs256", "rs256", "proxy"], out
    for h in handshakes:
        assert (h["connections"], h["failures"]) == ("20", "0"), h
        assert float(h["per_s"]) > 0, h
    assert list(scratch.iterdir()) == [], "the scratch folder is removed"
