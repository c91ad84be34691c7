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

from lhttp.testing import FakeClient, memoryServer


class NullSubscriber:
    """
    A subscriber whose writes cost nothing, so the figure is lhttp's.
    """

    def sendPreparedMessage(self, prepared):
        pass


def makeServer(subscribers):
    """
    @return: C{(server, publish)}: a node with C{subscribers} subscribers
        on channel C{bench}, and the C{receive} of a connected client's
        pipeline (what the WebSocket protocol calls per message).
    """
    server = memoryServer()
    # The real framing, as the node does it (the factory's own prepare).
    server.channels._prepare = WebSocketServerFactory().prepareMessage
    for _ in range(subscribers):
        server.channels.add(NullSubscriber(), ["bench"])
    publisher = FakeClient(server)
    return server, publisher.protocol.pipeline.receive


def run(subscribers, messages):
    """
    @return: seconds per publish.
    """
    server, receive = makeServer(subscribers)
    message = b"LHTTP/1.0 subpub\r\npublish:bench\r\n\r\n" + b"1234567890123456789 " + b"x" * 64
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
