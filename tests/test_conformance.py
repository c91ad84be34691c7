"""
RFC 6455 conformance: the Autobahn TestSuite cases 1 to 10, driven by the
C{kosoku} fuzzing client, against L{conformance_harness} (our protocol
class and protocol options, echoing).

Cases 9.x send messages of up to 16 MiB: they run against a second harness
with the size limits off, since the node's default limit rightly closes
those with 1009. Every other case runs against the node's defaults.

The same run by hand, with the HTML report::

    python tests/conformance_harness.py --port 9001 &
    python tests/conformance_harness.py --port 9002 --no-limits &
    kosoku ws://127.0.0.1:9001/ -x '9.*' -x '11.*' -x '12.*' -x '13.*' -o reports/limits
    kosoku ws://127.0.0.1:9002/ -i '9.*' -o reports/nolimits
"""

import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from procs import ROOT, Process, freePort, portAccepts, waitFor

HARNESS = Path(__file__).resolve().parent / "conformance_harness.py"
PASSED = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSE_PASSED = {"OK", "INFORMATIONAL"}


class Harness(Process):
    def __init__(self, *options):
        self.port = freePort()
        self.url = f"ws://127.0.0.1:{self.port}/"
        Process.__init__(
            self, [sys.executable, str(HARNESS), "--port", str(self.port), *options],
            name="conformance",
        )
        waitFor(lambda: portAccepts(self.port) or not self.alive(), what="the echo harness")
        assert self.alive(), self.log()


@pytest.fixture
def harness():
    started = []

    def start(*options):
        h = Harness(*options)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def kosoku(url, outdir, include, exclude=(), parallelism=2, timeout=150):
    """
    Run the fuzzing client; return its report's C{{case id: entry}}.
    """
    binary = shutil.which("kosoku")
    command = [binary] if binary else [sys.executable, "-c", "from kosoku._cli import main; main()"]
    command.append(url)
    for case in include:
        command += ["-i", case]
    for case in exclude:
        command += ["-x", case]
    command += ["-p", str(parallelism), "-o", str(outdir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    index = Path(outdir) / "index.json"
    assert index.exists(), f"kosoku wrote no report:\n{done.stdout}\n{done.stderr}"
    (cases,) = json.loads(index.read_text()).values()
    return cases


def section(caseId):
    return int(caseId.split(".")[0])


def failures(cases):
    return {
        caseId: (entry["behavior"], entry["behaviorClose"], entry["remoteCloseCode"])
        for caseId, entry in cases.items()
        if entry["behavior"] not in PASSED or entry["behaviorClose"] not in CLOSE_PASSED
    }


def summary(cases):
    bySection = collections.defaultdict(collections.Counter)
    for caseId, entry in cases.items():
        bySection[section(caseId)][entry["behavior"]] += 1
    return {s: dict(counts) for s, counts in sorted(bySection.items())}


def test_autobahnCases1To10(harness, tmp_path):
    withLimits = harness()
    noLimits = harness("--no-limits")

    cases = kosoku(withLimits.url, tmp_path / "limits", ["*"], ["9.*", "11.*", "12.*", "13.*"])
    large = kosoku(noLimits.url, tmp_path / "nolimits", ["9.*"], parallelism=1)

    # (The suite has no section 8.)
    assert {section(c) for c in cases} == {1, 2, 3, 4, 5, 6, 7, 10}
    assert {section(c) for c in large} == {9}
    everything = {**cases, **large}
    print(f"\nAutobahn cases 1-10: {len(everything)} run; by section: {summary(everything)}")
    assert not failures(everything), f"cases that did not pass: {failures(everything)}"
    # The whole of sections 1-10 ran (the suite has 301 such cases).
    assert len(everything) >= 300
    assert withLimits.alive() and noLimits.alive()
