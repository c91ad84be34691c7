"""
C{twistd lhttp}: command-line options into a service tree.

This is the one place that touches the global reactor.
"""

import os
from importlib import resources

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site
from twisted.web.static import File

from lhttp.channels import DEFAULT_MAX_CHANNEL_LENGTH
from lhttp.plugin import loadProcessor, processorPlugins
from lhttp.server import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_SUBSCRIPTIONS,
    LHTTPServer,
)

log = Logger()

DEFAULT_PORT = 8081
TOKEN_VARIABLE = "LHTTP_PUBLISH_TOKEN"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run an LHTTP server: WebSocket clients connect to any path "
        "(ws://host:8081/ or ws://host:8081/chat) and send LHTTP messages; "
        "the subscribe/publish/unsubscribe headers give pub/sub over channels; "
        "backends publish with POST /publish. Processors for commands are "
        "found as Twisted plugins (see lhttp.plugin) or named with --processor."
    )

    optFlags = [
        ["demo", None, "Also serve the chat-room demo and the JavaScript SDK at /demo/."],
        ["no-plugins", None, "Do not load processors from installed Twisted plugins."],
    ]

    optParameters = [
        ["port", "p", None,
         f"TCP port to listen on, all interfaces (default {DEFAULT_PORT} if no --listen).", int],
        ["publish-token", None, None,
         "Require 'Authorization: Bearer <token>' on POST /publish. "
         f"Default: the {TOKEN_VARIABLE} environment variable; unset means no token."],
        ["max-message-size", None, DEFAULT_MAX_MESSAGE_SIZE,
         "Largest message in bytes: a larger WebSocket message closes the "
         "connection with 1009, a larger /publish body gets 413.", int],
        ["max-subscriptions", None, DEFAULT_MAX_SUBSCRIPTIONS,
         "Channels one connection may subscribe to (over it: a 429 error reply).", int],
        ["max-channel-length", None, DEFAULT_MAX_CHANNEL_LENGTH,
         "Longest channel name, in characters.", int],
        ["access-log", None, None, "Write an HTTP access log to this file (default: none)."],
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []
        self["processors"] = []

    def opt_listen(self, description):
        """Listen on a Twisted endpoint, e.g. tcp:8081:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem or unix:/run/lhttp.sock. Repeatable."""
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_processor(self, spec):
        """Handle a command with a processor: COMMAND=dotted.name of an IProcessor class, factory or instance. Repeatable; wins over a plugin for the same command."""
        command, equals, name = spec.partition("=")
        if not equals or not command or not name:
            raise usage.UsageError(f"--processor wants COMMAND=dotted.name, not {spec!r}")
        self["processors"].append((command, name))

    def postOptions(self):
        if self["port"] is not None:
            self["listen"].append(f"tcp:{self['port']}")
        if not self["listen"]:
            self["listen"].append(f"tcp:{DEFAULT_PORT}")
        if self["publish-token"] is None:
            self["publish-token"] = os.environ.get(TOKEN_VARIABLE) or None
        for name in ("max-message-size", "max-subscriptions", "max-channel-length"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be a positive integer")


class _QuietSite(Site):
    """
    A Site with no per-request access log: publishing is per message, and
    logging each one costs more than the publish.
    """

    def log(self, request):
        pass


def registerProcessors(server, options):
    for command, name in options["processors"]:
        server.addProcessor(command, loadProcessor(name))
    if options["no-plugins"]:
        return
    for plugin in processorPlugins():
        if server.dispatcher.getProcessor(plugin.command) is None:
            server.addProcessor(plugin.command, plugin.load())
            log.info(
                "Processor for {command!r} from plugin {plugin}",
                command=plugin.command, plugin=plugin.processor,
            )


def demoDirectory():
    return str(resources.files("lhttp") / "web")


def makeSite(root, options):
    if options["access-log"]:
        return Site(root, logPath=options["access-log"])
    return _QuietSite(root)


def makeService(options):
    from twisted.internet import reactor

    server = LHTTPServer(
        reactor=reactor,
        maxMessageSize=options["max-message-size"],
        maxSubscriptions=options["max-subscriptions"],
        maxChannelLength=options["max-channel-length"],
        publishToken=options["publish-token"],
    )
    registerProcessors(server, options)
    root = server.resource()
    if options["demo"]:
        root.putChild(b"demo", File(demoDirectory()))
    site = makeSite(root, options)

    service = MultiService()
    for description in options["listen"]:
        StreamServerEndpointService(
            serverFromString(reactor, description), site
        ).setServiceParent(service)
    service.lhttpServer = server
    return service
