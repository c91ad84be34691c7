"""
C{twistd lhttp}'s options and the service they make.
"""

import os

from twisted.application.internet import StreamServerEndpointService
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from lhttp import Processor
from lhttp.tap import Options, makeService


class Echo(Processor):
    pass


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaultPort(self):
        self.assertEqual(self.parse()["listen"], ["tcp:8081"])

    def test_portAndListen(self):
        options = self.parse("--port", "9000", "--listen", "tcp:9001:interface=127.0.0.1", "-l", "unix:/tmp/x.sock")
        self.assertEqual(options["listen"], ["tcp:9001:interface=127.0.0.1", "unix:/tmp/x.sock", "tcp:9000"])

    def test_processorSpec(self):
        self.assertEqual(self.parse("--processor", "echo=a.b.C")["processors"], [("echo", "a.b.C")])
        self.assertRaises(usage.UsageError, self.parse, "--processor", "echo")

    def test_tokenFromEnvironment(self):
        self.patch(os, "environ", {"LHTTP_PUBLISH_TOKEN": "from-env"})
        self.assertEqual(self.parse()["publish-token"], "from-env")
        self.assertEqual(self.parse("--publish-token", "given")["publish-token"], "given")

    def test_limitsMustBePositive(self):
        self.assertRaises(usage.UsageError, self.parse, "--max-message-size", "0")
        self.assertRaises(usage.UsageError, self.parse, "--max-pending-connections", "0")
        self.assertRaises(usage.UsageError, self.parse, "--handshake-timeout", "0")

    def test_helpDocumentsEveryOption(self):
        text = str(Options())
        for name in ("--port", "--listen", "--processor", "--publish-token", "--max-message-size",
                     "--max-subscriptions", "--max-channel-length", "--demo", "--no-plugins", "--access-log",
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
                         ["ClientsService", "StreamServerEndpointService", "StreamServerEndpointService"])
        server = service.lhttpServer
        self.assertIsInstance(server.dispatcher.getProcessor("echo"), Echo)
        self.assertEqual(server.maxSubscriptions, 7)
        self.assertEqual(server.maxPendingConnections, 9)
        self.assertEqual(server.hostPolicy.patterns, ("chat.example.com",))
        site = children[1].factory
        self.assertEqual((site.maxPendingConnections, site.maxBodySize), (9, server.maxMessageSize))
