"""
The ceiling: the least a fan-out server on Autobahn can do, to compare lhttp
with in the same run.

No LHTTP parsing, no processors, no filters, no metrics: a message holding
C{subscribe:<channel>} puts the connection on that channel (an in-memory
set); a message holding C{publish:<channel>} is framed once
(C{prepareMessage}) and written to every subscriber of the channel
(C{sendPreparedMessage}), raw bytes as received. It answers the load
drivers (bench/loadgen.py, lhttpbench) and nothing more.

Like lhttp, it writes prepared frames straight to the transport: Autobahn's
own C{sendData} formats a debug log line on every write even when debug
logging is off, which costs several times what the write does. C{--stock}
keeps Autobahn's path, to show what that costs.

    python bench/ceiling.py --port 8090 [--reactor epoll|asyncio] [--stock]
"""

import argparse


def channelAfter(payload, marker):
    """
    The channel named after C{marker} (e.g. C{b"publish:"}) up to the end of
    its line, or L{None} if C{marker} is not in C{payload}.
    """
    start = payload.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = payload.find(b"\r\n", start)
    return payload[start:end if end >= 0 else len(payload)].strip()


def makeFactory(reactor, direct=True):
    """
    @param direct: write prepared frames straight to the transport, not
        through Autobahn's C{sendData} (which formats a debug log line per
        write even when debug logging is off); what lhttp does.
    """
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    channels = {}

    class CeilingProtocol(WebSocketServerProtocol):
        subscribed = ()

        if direct:
            def sendPreparedMessage(self, prepared):
                self.transport.write(prepared.payloadHybi)

        def onMessage(self, payload, isBinary):
            name = channelAfter(payload, b"subscribe:")
            if name is not None:
                channels.setdefault(name, set()).add(self)
                self.subscribed = (*self.subscribed, name)
            name = channelAfter(payload, b"publish:")
            if name is not None:
                targets = channels.get(name)
                if targets:
                    prepared = self.factory.prepareMessage(payload, isBinary)
                    for target in tuple(targets):
                        target.sendPreparedMessage(prepared)

        def onClose(self, wasClean, code, reason):
            for name in self.subscribed:
                channels.get(name, set()).discard(self)

    factory = WebSocketServerFactory(reactor=reactor)
    factory.protocol = CeilingProtocol
    return factory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--reactor", choices=["epoll", "asyncio"], default="epoll")
    parser.add_argument("--stock", action="store_true", help="write through Autobahn's sendData")
    args = parser.parse_args(argv)
    if args.reactor == "asyncio":
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    else:
        from twisted.internet import epollreactor

        epollreactor.install()
    from twisted.internet import reactor

    reactor.listenTCP(args.port, makeFactory(reactor, direct=not args.stock), backlog=4096, interface=args.interface)
    reactor.run()


if __name__ == "__main__":
    main()
