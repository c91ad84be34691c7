"""
The JavaScript SDK's own tests (C{sdk/js/test/*.test.mjs}), run by Node's
built-in test runner as a subprocess.

Node is required, not optional: without it this test fails and says so.
"""

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk" / "js"


def test_sdkNodeTests():
    """
    C{node --test} runs every SDK test file, none fails, and some ran.
    """
    node = shutil.which("node")
    assert node, "node (>= 18) is required for the JS SDK tests: apt-get install nodejs"
    files = sorted(str(p) for p in (SDK / "test").glob("*.test.mjs"))
    assert files, f"no SDK test files in {SDK / 'test'}"
    # Files, not the directory: newer Node versions read arguments as globs.
    # TAP explicitly: newer Node versions default to another reporter.
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", output, re.MULTILINE)
    assert result.returncode == 0, f"node --test failed:\n{output}"
    assert passed and failed, f"no test summary from node --test:\n{output}"
    assert int(failed.group(1)) == 0, output
    assert int(passed.group(1)) > 0, f"node --test ran no test:\n{output}"
