"""
The benchmark runs from a clean clone: C{bench/loadgen.py} drives a real
node and accounts for every delivery, and C{bench/run.py} uses it without
reaching outside the repository (no C{../shared}, no C{lhttpbench}).
"""

import os
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
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "bench", clone / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "lhttpbench-ran"
    fakeLhttpbench(tmp_path / "bin", marker)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
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
