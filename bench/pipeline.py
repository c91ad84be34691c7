"""
lhttp's own cost per publish, without sockets: one LHTTP publish message
through the real dispatcher (parse, filters, channel checks, broker,
fan-out) to subscribers whose write does nothing. What Autobahn and Twisted
add (frame parsing, unmasking, writes) is not in it; bench/run.py measures
everything.

    python bench/pipeline.py [--subs 10] [--messages 200000]
    python bench/pipeline.py --profile      # cProfile's top functions
"""

import argparse
import cProfile
import pstats
import time

from autobahn.websocket.protocol import WebSocketServerFactory
from twisted.internet.task import Clock

from lhttp.server import LHTTPServer
from lhttp.testing import FakeClient


class NullWebSocket:
    """
    A subscriber whose writes cost nothing, so the figure is lhttp's.
    """

    def sendMessage(self, payload, isBinary=False):
        pass

    def sendPreparedMessage(self, prepared):
        pass

    def sendClose(self, code=None, reason=None):
        pass


def makeServer(subscribers):
    """
    @return: C{(server, publisher)}: a server with C{subscribers} clients on
        channel C{bench}, and a L{FakeClient} to publish from.
    """
    server = LHTTPServer(reactor=Clock())
    # The real framing, as the node does it (the factory's own prepare).
    server.channels._prepare = WebSocketServerFactory().prepareMessage
    for _ in range(subscribers):
        client = FakeClient(server)
        client.receive(b"LHTTP/1.0 subpub\r\nsubscribe:bench\r\n\r\n")
        client.connection.transport = client.socket = NullWebSocket()
        server.channels._snapshots.clear()
        for table in server.channels._subscribers.values():
            for old in list(table):
                if not isinstance(old, NullWebSocket):
                    del table[old]
                    table[client.socket] = None
    return server, FakeClient(server)


def run(subscribers, messages):
    """
    @return: seconds per publish.
    """
    server, publisher = makeServer(subscribers)
    message = b"LHTTP/1.0 subpub\r\npublish:bench\r\n\r\n" + b"1234567890123456789 " + b"x" * 64
    receive = publisher.receive
    start = time.perf_counter()
    for _ in range(messages):
        receive(message)
    elapsed = time.perf_counter() - start
    assert server.channels.deliveries == subscribers * messages, server.channels.deliveries
    return elapsed / messages


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subs", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, args.subs, args.messages)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return
    perPublish = min(run(args.subs, args.messages) for _ in range(3))
    print(f"subs={args.subs} us_per_publish={perPublish * 1e6:.2f} publishes_per_s={1 / perPublish:.0f}")


if __name__ == "__main__":
    main()
