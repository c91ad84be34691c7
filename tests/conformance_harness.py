"""
An echo server for the Autobahn TestSuite cases (RFC 6455 conformance):
the project's own WebSocket stack, built exactly as a node builds it (an
L{lhttp.server.LHTTPServer}, its factory's protocol options, its Resource
tree in an L{lhttp.web.site.LHTTPSite}), with one change: the protocol echoes every WebSocket
message as it is, in the same frame type, instead of parsing LHTTP.

What is tested is our protocol class and options (failByDrop, size limits,
whatever else the factory sets), not LHTTP parsing.

Run::

    python tests/conformance_harness.py --port 9001            # node defaults
    python tests/conformance_harness.py --port 9001 --no-limits

and point a fuzzing client (C{kosoku ws://127.0.0.1:9001/}) at it.
C{--no-limits} turns the message and frame size limits off, for the 9.x
cases that send messages of up to 16 MiB (the default limit closes those
with 1009, as it should).
"""

import argparse
import sys

from lhttp.web.websocket import LHTTPServerProtocol


class EchoProtocol(LHTTPServerProtocol):
    """
    L{LHTTPServerProtocol} that sends every message back unchanged; open and
    close still go through the node's dispatcher as usual.
    """

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


def makeServer(noLimits=False, reactor=None):
    """
    @return: an L{LHTTPServer} whose WebSocket factory builds
        L{EchoProtocol}s.
    """
    from lhttp.server import LHTTPServer

    server = LHTTPServer(reactor=reactor)
    server.factory.protocol = EchoProtocol
    if noLimits:
        server.factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--no-limits", action="store_true",
                        help="no message or frame size limit (for the 9.x cases)")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    server = makeServer(args.no_limits, reactor)
    site = server.site(maxBodySize=server.config.maxMessageSize)
    endpoint = serverFromString(reactor, f"tcp:{args.port}:interface={args.interface}")
    endpoint.listen(site)
    reactor.run()


if __name__ == "__main__":
    main()
