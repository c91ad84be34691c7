"""
Mount lhttp inside your own Twisted web site: your pages and LHTTP on one
port.

    python examples/embed.py --port 8080

serves your page at http://127.0.0.1:8080/ and LHTTP at
ws://127.0.0.1:8080/lhttp/ (any path below it), with HTTP publishing at
http://127.0.0.1:8080/lhttp/publish.
"""

import argparse

from twisted.internet import endpoints, task
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.static import Data

from lhttp import LHTTPServer


def makeSite(reactor):
    root = Resource()
    root.putChild(b"", Data(b"<h1>My site</h1><p>LHTTP lives at /lhttp/.</p>", "text/html"))

    server = LHTTPServer(reactor=reactor)
    root.putChild(b"lhttp", server.resource())
    # The node's Site: its limits on the HTTP phase apply to your pages too.
    return server.site(root)


def main(reactor, *argv):
    parser = argparse.ArgumentParser(description="A web site with lhttp mounted at /lhttp/.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args(argv)
    endpoint = endpoints.TCP4ServerEndpoint(reactor, args.port, interface=args.interface)
    endpoint.listen(makeSite(reactor))
    print(f"serving http://{args.interface}:{args.port}/ and ws://{args.interface}:{args.port}/lhttp/", flush=True)
    return Deferred()


if __name__ == "__main__":
    import sys

    task.react(main, sys.argv[1:])
