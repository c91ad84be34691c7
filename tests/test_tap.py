"""
C{twistd lhttp}'s options and the service they make, and the real
C{twistd} console script failing to start.
"""

import io
import os
import shutil
import signal
import socket
import subprocess

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from lhttp import Processor
from lhttp.service import ListenFailed, ListeningService
from lhttp.service import NodeService
from lhttp.tap import Options, makeService
from lhttp.testing import memoryServer


class Echo(Processor):
    pass


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaultPort(self):
        self.assertEqual(self.parse().config.endpoints(), ["tcp:8081:interface=127.0.0.1"])

    def test_portAndListen(self):
        options = self.parse("--port", "9000", "--listen", "tcp:9001:interface=127.0.0.1", "-l", "unix:/tmp/x.sock")
        self.assertEqual(options.config.endpoints(), ["tcp:9001:interface=127.0.0.1", "unix:/tmp/x.sock", "tcp:9000"])

    def test_processorSpec(self):
        options = self.parse("--processor", f"echo={__name__}.Echo")
        self.assertEqual(options.config.processors, (("echo", f"{__name__}.Echo"),))
        [(command, processor)] = options.processors
        self.assertEqual(command, "echo")
        self.assertIsInstance(processor, Echo)
        self.assertRaises(usage.UsageError, self.parse, "--processor", "echo")

    def test_tokenFromEnvironment(self):
        self.patch(os, "environ", {"LHTTP_PUBLISH_TOKEN": "from-env"})
        self.assertEqual(self.parse().config.publishToken, "from-env")
        self.assertEqual(self.parse("--publish-token", "given").config.publishToken, "given")

    def test_metricsTokenFromEnvironment(self):
        self.patch(os, "environ", {"LHTTP_METRICS_TOKEN": "from-env", "LHTTP_PUBLISH_TOKEN": "p"})
        self.assertEqual(self.parse().config.metricsToken, "from-env")
        self.assertEqual(self.parse("--metrics-token", "given").config.metricsToken, "given")
        self.patch(os, "environ", {"LHTTP_PUBLISH_TOKEN": "p"})
        self.assertIsNone(self.parse().config.metricsToken)

    def test_badEndpointIsAUsageError(self):
        """
        A typo in an endpoint is reported while options are read, in one
        line, not as a traceback out of makeService.
        """
        for option, description, words in [
            ("--listen", "tcp:abc", "invalid literal for int()"),
            ("--listen", "bogus:1", "unknown endpoint type"),
            ("--listen", "tcp:8081:colour=red", "unexpected keyword argument"),
            ("--metrics-listen", "ssl:9100:privateKey=/nonexistent/key.pem", "no such file"),
        ]:
            with self.assertRaises(usage.UsageError) as raised:
                self.parse(option, description)
            message = str(raised.exception)
            self.assertTrue(message.startswith(f"--{option[2:]} {description!r} is not a server endpoint: "),
                            message)
            self.assertIn(words, message.lower())
            self.assertNotIn("\n", message)

    def test_limitsMustBePositive(self):
        self.assertRaises(usage.UsageError, self.parse, "--max-message-size", "0")
        self.assertRaises(usage.UsageError, self.parse, "--max-pending-connections", "0")
        self.assertRaises(usage.UsageError, self.parse, "--handshake-timeout", "0")

    def test_helpDocumentsEveryOption(self):
        text = str(Options())
        for name in ("--port", "--listen", "--processor", "--publish-token", "--max-message-size",
                     "--max-subscriptions", "--max-channel-length", "--demo", "--no-plugins", "--access-log",
                     "--metrics-token", "LHTTP_METRICS_TOKEN", "--metrics-listen",
                     "--allow-host", "--max-pending-connections"):
            self.assertIn(name, text)


class ServiceTests(SynchronousTestCase):
    def test_serviceTree(self):
        options = Options()
        options.parseOptions(["--no-plugins", "-l", "tcp:0:interface=127.0.0.1", "-l", "tcp:0:interface=127.0.0.1",
                              "--processor", f"echo={__name__}.Echo", "--max-subscriptions", "7",
                              "--max-pending-connections", "9", "--allow-host", "chat.example.com"])
        service = makeService(options)
        children = list(service)
        self.assertEqual([type(c).__name__ for c in children],
                         ["ClientsService", "ListeningService", "ListeningService"])
        server = service.lhttpServer
        self.assertIsInstance(server.dispatcher.getProcessor("echo"), Echo)
        self.assertEqual(server.config.maxSubscriptions, 7)
        self.assertEqual(server.config.allowHosts, ("chat.example.com",))

    def test_metricsListenAddsAPort(self):
        options = Options()
        options.parseOptions(["--no-plugins", "-l", "tcp:0:interface=127.0.0.1",
                              "--metrics-listen", "tcp:0:interface=127.0.0.1",
                              "--metrics-token", "m"])
        service = makeService(options)
        ports = [c for c in service if isinstance(c, StreamServerEndpointService)]
        self.assertEqual(len(ports), 2)
        self.assertIsNot(ports[0].factory, ports[1].factory)
        self.assertEqual(service.lhttpServer.config.metricsToken, "m")


class FailingEndpoint:
    def __init__(self, error):
        self.error = error

    def listen(self, factory):
        return fail(self.error)


class LaterEndpoint:
    """
    An endpoint whose listen the test completes.
    """

    def __init__(self):
        self.listening = Deferred()

    def listen(self, factory):
        return self.listening


class ListeningServiceTests(SynchronousTestCase):
    def test_cannotListenIsOneLineAndExit1(self):
        error = CannotListenError("127.0.0.1", 8081, OSError(98, "Address already in use"))
        stderr = io.StringIO()
        service = ListeningService("tcp:8081", FailingEndpoint(error), object(), stderr=stderr)
        with self.assertRaises(ListenFailed) as raised:
            service.privilegedStartService()
        failed = raised.exception
        # SystemExit: the interpreter exits 1 without a traceback;
        # Exception: twistd removes its pid file and tells a daemon's parent.
        self.assertIsInstance(failed, SystemExit)
        self.assertIsInstance(failed, Exception)
        self.assertEqual(failed.code, 1)
        self.assertEqual(str(failed), "lhttp: cannot listen on tcp:8081: address already in use")
        self.assertEqual(stderr.getvalue(), str(failed) + "\n")
        self.assertIsNone(service.port)

    def test_otherErrorsToo(self):
        stderr = io.StringIO()
        service = ListeningService(
            "unix:/x/y.sock", FailingEndpoint(PermissionError(13, "Permission denied")), object(), stderr
        )
        self.assertRaises(ListenFailed, service.privilegedStartService)
        self.assertEqual(stderr.getvalue(), "lhttp: cannot listen on unix:/x/y.sock: permission denied\n")

    def test_listeningLoggedOnlyOnceListening(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        endpoint = LaterEndpoint()
        server = memoryServer()
        server.addProcessor("echo", Echo())
        node = NodeService(server)
        ListeningService("tcp:8081", endpoint, object()).setServiceParent(node)
        node.privilegedStartService()
        node.startService()

        def listening():
            return [e for e in events if e.get("log_namespace") == "lhttp.service" and "listen" in e]

        self.assertEqual(listening(), [])
        endpoint.listening.callback("the port")
        [event] = listening()
        self.assertEqual(event["listen"], ["tcp:8081"])
        self.assertEqual(event["broker"]["kind"], "embedded")
        self.assertEqual(event["processors"], {"echo": f"{__name__}.Echo"})
        self.assertEqual(event["filters"], ["lhttp.filters.SubscribeFilter", "lhttp.filters.PublishFilter",
                                            "lhttp.filters.UnsubscribeFilter", "lhttp.upstream.filter.UpstreamFilter"])


def twistd(args, cwd, timeout=20):
    """
    Run the real C{twistd} console script from PATH, as a user would.
    """
    executable = shutil.which("twistd")
    assert executable, "twistd is not on PATH"
    return subprocess.run(
        [executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def test_twistdOnAPortInUseExitsWithOneLine(tmp_path):
    """
    C{twistd -n lhttp --port P} with P taken exits 1 at once, says why in
    one line on standard error, no traceback, and leaves no pid file.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = twistd(["-n", "lhttp", "--port", str(port)], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr == f"lhttp: cannot listen on tcp:{port}: address already in use\n", output
    assert "Traceback" not in output
    assert "listening on" not in output
    assert "Cannot listen on" in result.stdout  # the log says it too
    assert not (tmp_path / "twistd.pid").exists()


def test_twistdDaemonOnAPortInUseFailsToStart(tmp_path):
    """
    Daemonizing, the parent waits for the start: it exits 1 naming the
    port, and the log file says why.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            result = twistd(["--logfile", "node.log", "lhttp", "--port", str(port)], tmp_path)
        finally:
            pidFile = tmp_path / "twistd.pid"
            if pidFile.exists():  # a daemon that started after all
                os.kill(int(pidFile.read_text()), signal.SIGKILL)
    assert result.returncode == 1, result
    assert f"lhttp: cannot listen on tcp:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr + (tmp_path / "node.log").read_text()
    assert "Cannot listen on" in (tmp_path / "node.log").read_text()
    assert not (tmp_path / "twistd.pid").exists()


def test_twistdWithABadEndpointIsAUsageError(tmp_path):
    result = twistd(["-n", "lhttp", "--listen", "tcp:abc"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    *_, mistake, pointer = output.splitlines()
    assert "--listen 'tcp:abc' is not a server endpoint: invalid literal" in mistake
    assert pointer == "Run 'twistd lhttp --help' for every option."
    assert "Traceback" not in output


def test_twistdWithABadProcessorIsOneLine(tmp_path):
    """
    A --processor that cannot be loaded is one line naming the flag and
    why, exit status 1, no traceback.
    """
    result = twistd(["-n", "lhttp", "--processor", "echo=myapp.nothere.Echo"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if "--processor" in line and "cannot load" in line]
    assert "echo=myapp.nothere.Echo" in line
    assert f"no module named 'myapp' (searched the current directory {tmp_path}" in line


def test_twistdLoadsProcessorsFromTheWorkingDirectory(tmp_path):
    """
    Run from a project's folder (the real console script, which does not
    put the folder on sys.path itself), --processor finds the project's
    module, and the startup log names the processor and the filters.
    """
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "echo.py").write_text(
        "from lhttp import Processor\n\n"
        "class EchoProcessor(Processor):\n"
        "    def onMessage(self, connection, message):\n"
        "        connection.send(message.body)\n"
    )
    from procs import LHTTPNode

    node = LHTTPNode("--processor", "echo=myapp.echo.EchoProcessor", cwd=str(tmp_path)).waitReady()
    try:
        from procs import waitFor

        line = waitFor(lambda: next((l for l in node.log().splitlines() if "listening on" in l), None),
                       what="the startup log line")
        assert "'echo': 'myapp.echo.EchoProcessor'" in line
        assert "lhttp.filters.SubscribeFilter" in line and "lhttp.upstream.filter.UpstreamFilter" in line
    finally:
        node.stop()


def test_twistdVersion(tmp_path):
    from importlib.metadata import version

    result = twistd(["lhttp", "--version"], tmp_path)
    assert (result.returncode, result.stdout) == (0, f"lhttp {version('lhttp')}\n"), result
