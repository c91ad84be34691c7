"""
A user's first minutes: a clean virtualenv, then README's run command,
pasted, serves clients.
"""

import os
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest_twisted

from lhttpclients import barrier, client, eventually
from procs import ROOT, Process, freePort, portAccepts

IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", "node_modules",
    "test-artifacts", "build-*", "twistd.pid", "dropin.cache",
)


def readmeRunCommand():
    readme = (ROOT / "README.rst").read_text()
    return re.search(r"^    (pip install \. && twistd .*)$", readme, re.MULTILINE).group(1)


@pytest_twisted.ensureDeferred
async def test_cleanVirtualenvThenReadmeRunCommand(tmp_path):
    source = tmp_path / "lhttp"
    shutil.copytree(ROOT, source, symlinks=True, ignore=IGNORED)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)

    port = freePort()
    # As pasted, on a free port rather than 8081 (which may be taken here).
    command = readmeRunCommand() + f" --listen tcp:{port}:interface=127.0.0.1"
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "PYTHONPATH": "",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    user = Process(["bash", "-c", command], env=env, cwd=str(source), name="readme-run")
    try:
        await eventually(
            lambda: portAccepts(port) or not user.alive(), timeout=400,
            what="pip install and twistd from README",
        )
        assert user.alive(), user.log()
        alice = await client(f"ws://127.0.0.1:{port}/")
        bob = await client(f"ws://127.0.0.1:{port}/chat")
        alice.subscribe("room")
        await barrier(alice)
        bob.publish("room", "chat", body="installed")
        assert (await alice.nextMessage(10)).body == b"installed"
        # The quick start's demo page and the SDK it loads, from the
        # installed package (package data shipped).
        for path, marker in (("demo/", b"<html"), ("demo/lhttp.js", b"Lhttp")):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as page:
                assert page.status == 200 and marker in page.read(), path
        # What the venv has, not a checkout on the tests' own PYTHONPATH.
        clean = {**os.environ, "PYTHONPATH": ""}
        installed = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import lhttp; print(lhttp.__file__)"],
            capture_output=True, text=True, check=True, cwd=str(tmp_path), env=clean,
        ).stdout
        assert str(venv) in installed

        # twistd lists the plugin, and the lhttp command is on the PATH.
        twistdHelp = subprocess.run(
            [str(venv / "bin" / "twistd"), "--help"],
            capture_output=True, text=True, timeout=60, cwd=str(tmp_path), env=clean,
        ).stdout
        assert re.search(r"^\s+lhttp\s+An LHTTP server", twistdHelp, re.MULTILINE), twistdHelp
        sent = subprocess.run(
            [str(venv / "bin" / "lhttp"), "send", f"ws://127.0.0.1:{port}/",
             r"LHTTP/1.0 me\r\nsubscribe:me\r\npublish:me\r\n\r\nfrom the script"],
            capture_output=True, text=True, timeout=60, cwd=str(tmp_path), env=clean,
        )
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.endswith("from the script\n")
    finally:
        user.stop()
