"""
The first five minutes, as a new user meets them (issue 22), each through
the real C{twistd} console script: a mistake on the command line is one
line naming the option and the fix plus a pointer to C{--help} (not the
whole usage text), C{--history} names the part of its value that is
wrong, a second node started from the same folder is told about
C{--pidfile}, C{--help} says each default once, and the files the README's
cluster block leaves behind are ignored by git.
"""

import os
import re
import shutil
import subprocess

import pytest

from procs import ROOT, Process, freePort, portAccepts, waitFor

TWISTD = shutil.which("twistd")


def pythonPath():
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def twistd(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=pythonPath())
    return subprocess.run([TWISTD, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=env)


@pytest.mark.parametrize("args, names", [
    (["--max-connections", "-5"], ["--max-connections", "-5", "above 0"]),
    (["--max-connections", "many"], ["--max-connections", "'many'", "number"]),
    (["--bogus"], ["--bogus", "not recognized"]),
    (["--history", "room.*=abc,1h"], ["'abc'", "message count", "PATTERN=N[,AGE]"]),
    (["--history", "room.*=100,soon"], ["'soon'", "an age such as"]),
    (["--history", "room.*=soon"], ["'soon'", "neither a message count"]),
])
def test_aMistakeIsOneLine(args, names):
    """
    The mistake's line names the option (or the wrong part of its value)
    and what to give instead; then one line points at C{--help}; twistd's
    usage text is not printed.
    """
    result = twistd("-n", "lhttp", *args)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 2, lines
    first, second = lines
    assert first.startswith("twistd lhttp: "), first
    for name in names:
        assert name in first, (name, first)
    assert second == "Run 'twistd lhttp --help' for every option."


def test_helpSaysEachDefaultOnce():
    result = twistd("lhttp", "--help")
    assert result.returncode == 0
    # Each option's help is a paragraph starting with its flag.
    paragraphs = re.split(r"\n(?=  +-)", result.stdout)
    assert len(paragraphs) > 40
    for paragraph in paragraphs:
        assert paragraph.count("Default:") <= 1, paragraph


def test_secondNodeInTheSameFolderIsToldAboutPidfile(tmp_path):
    """
    twistd keeps C{twistd.pid} in the working folder: a second node
    started there is refused, and told how to run both.
    """
    port = freePort()
    first = Process([TWISTD, "-n", "lhttp", "--port", str(port)], cwd=tmp_path,
                    env={"PYTHONPATH": pythonPath()}, name="first")
    try:
        waitFor(lambda: portAccepts(port) and (tmp_path / "twistd.pid").exists(), 30,
                what="the first node")
        result = twistd("-n", "lhttp", "--port", str(freePort()), cwd=tmp_path)
        assert result.returncode != 0
        said = result.stdout + result.stderr
        assert "Another twistd server is running" in said, said
        assert "--pidfile" in said, said
    finally:
        first.stop()


def test_readmeClusterLeftoversAreIgnored():
    """
    The files the README's cluster block and a first run leave in the
    repository (pid files, logs, the JetStream folder) are not offered to
    git.
    """
    names = ["node1.pid", "node2.pid", "twistd.pid", "twistd.log", "node1.log", "nats-data/jetstream"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=ROOT,
                            capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(names), result.stdout
