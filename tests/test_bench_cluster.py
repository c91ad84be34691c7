"""
C{bench/cluster_history.py} at smoke size, from a clean clone (C{bench/}
alone, lhttp importable): three real nodes on a real nats-server with
JetStream, node B's link through the benchmark's proxy and really cut;
every part prints its figures against their targets, every message is
counted once, and nothing is left behind.
"""

import shlex
import subprocess
import sys

from test_bench import cleanClone

SMOKE = ["--messages", "400", "--channels", "4", "--subscribers", "4", "--throughput-messages", "100",
         "--recovery", "50,200", "--repeat", "1", "--throughput-repeat", "1",
         "--seconds", "3", "--cut", "1", "--rate", "200", "--procs", "2"]
TARGETS = {
    "spread_nats_msgs_b_vs_a", "spread_nats_msgs_c_vs_a", "spread_cpu_b_vs_a", "spread_cpu_c_vs_a",
    "recovery_50_ms", "recovery_200_ms", "throughput_on_off", "cut_clients_closed_by_node",
    "cut_b_plain_missing_control",
    *(f"{part}_{count}" for part in ("spread", "recovery", "throughput", "cut_b", "cut_a_control")
      for count in ("missing", "duplicates")),
}


def lines(out, kind):
    """
    The C{kind} lines of the output as dicts (their C{key=value} words).
    """
    return [
        dict(word.split("=", 1) for word in words[1:])
        for words in map(shlex.split, (line for line in out.splitlines() if line.startswith(kind + " ")))
    ]


def test_clusterHistoryFromACleanClone(tmp_path):
    clone, env, scratch = cleanClone(tmp_path)
    result = subprocess.run(
        [sys.executable, "bench/cluster_history.py", *SMOKE],
        cwd=clone, env=env, capture_output=True, text=True, timeout=150,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Traceback" not in out and "Task was destroyed" not in out, out

    targets = {line["name"]: line for line in lines(result.stdout, "target")}
    assert set(targets) == TARGETS, out
    for name, line in targets.items():
        assert line["result"] in ("PASS", "FAIL", "INFO"), line
        if name.endswith(("_missing", "_duplicates", "_closed_by_node")):
            assert (line["value"], line["result"]) == ("0", "PASS"), line
    # No target at smoke sizes: the recovery figures are shown for what they are.
    assert targets["recovery_50_ms"]["result"] == "INFO"

    raw = lines(result.stdout, "raw")
    [spread] = [r for r in raw if r["part"] == "spread"]
    assert (spread["posted"], spread["failed"], spread["complete"]) == ("400", "0", "True"), spread
    # Posted to a fourth node: A serves, and receives each message once.
    assert spread["publisher"] == "POST /publish on node P", spread
    assert int(spread["a_nats_out_msgs"]) >= 400 and int(spread["a_history_msgs"]) >= 400, spread
    assert float(spread["a_cpu_s"]) > 0, spread
    assert "P (publishing)" in out

    recoveries = [r for r in raw if r["part"] == "recovery"]
    assert sorted((r["size"], r["count"], r["recovered"]) for r in recoveries) == [
        ("200", "200", "true"), ("50", "50", "true")]
    for r in recoveries:
        assert (r["missing"], r["duplicates"], r["out_of_order"]) == ("0", "0", "0"), r
        assert float(r["ms"]) > 0, r

    runs = [r for r in raw if r["part"] == "throughput" and "run" in r]
    assert sorted(r["history"] for r in runs) == ["off", "on"]
    for r in runs:
        assert r["delivered"] == "400/400" and r["with_offset"] == ("400" if r["history"] == "on" else "0"), r

    cut = [r for r in raw if r["part"] == "cut"]
    [summary] = [r for r in cut if "node" not in r]
    # The link was really cut, node B connected again, and /health saw it.
    assert int(summary["connections_cut"]) >= 1 and int(summary["b_reconnected"]) >= 1, summary
    before, after = summary["b_health_reconnects"].split("->")
    if before != "None":  # /health reports the NATS client's reconnects
        assert int(after) > int(before), summary
    nodes = {r["node"]: r for r in cut if "node" in r}
    for name in ("a", "b"):
        assert (nodes[name]["published"], nodes[name]["received"]) == ("600", "600"), nodes[name]
    for node in nodes.values():
        assert node["client_closed_by_node"] == "0", node
    # Without history, what was published during the 1 s cut is lost on B.
    assert int(nodes["b-plain"]["missing"]) >= 100, nodes["b-plain"]
    assert targets["cut_b_plain_missing_control"]["result"] == "INFO"

    [memory] = [r for r in raw if r["part"] == "rss"]
    assert all(float(memory[f"{name}_mib"]) > 10 for name in "abc"), memory
    assert list(scratch.iterdir()) == [], "the scratch folder and the JetStream store are removed"
