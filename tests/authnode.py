"""
A scripted fake node that speaks the authentication wire forms of
C{docs/protocol.rst} ("Authentication"), for the SDK and tool tests while
a client is tested alone: C{connect} and C{refresh} with their replies,
the 401/403/503 error replies, the close codes, C{channel-token} on
subscribe, and the node's C{unsubscribed}. Plain subscribe/publish between
its connections (enough for C{lhttp listen}, C{send} and their round
trips). Not a node: no permissions, no history; tests of real nodes are
elsewhere.

Which token does what (L{TOKENS}; a token not listed is refused with 401):

  - C{alice-1}, C{alice-2}, C{alice-3}: user C{alice}, C{expires} 1 hour
    from now (C{alice-short}: 40 s, C{alice-forever}: no C{expires});
  - C{bob-1}: user C{bob} (a refresh with it on alice's connection: 403);
  - C{expired}: 401 C{token expired}, then close 4401;
  - C{unavailable}: 503 C{authentication unavailable}, then close 4503;
  - C{kick}: accepted as C{carol}, then close 4403 (C{kick-reconnect}:
    4000; C{kick-expired}: the refresh notice, then 4419 after 0.2 s);
  - C{notice}: accepted as C{dave}, then the node's refresh notice.

A subscribe with C{channel-token} accepts C{sub-<channel>} for each
channel; any other token gets a 403 error reply for that channel. A
subscribe to C{drop.<x>} is answered by C{unsubscribed} for that channel.

In memory (L{AuthNode}, with L{twisted.test.iosim}) or as a process on a
port: C{python tests/authnode.py PORT}, which prints C{listening} and then
one line per message it receives (C{recv <escaped message>}), so a test
can read what a client sent.
"""

import sys

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from lhttp.codec import Message, parse
from lhttp.errors import LHTTPError

NODE = ("lhttp-node", "reply")
HOUR = 3600

TOKENS = {
    "alice-1": ("alice", HOUR),
    "alice-2": ("alice", HOUR),
    "alice-3": ("alice", HOUR),
    "alice-short": ("alice", 40),
    "alice-forever": ("alice", None),
    "bob-1": ("bob", HOUR),
    "kick": ("carol", HOUR),
    "kick-reconnect": ("carol", HOUR),
    "kick-expired": ("carol", HOUR),
    "notice": ("dave", HOUR),
}
AFTER = {"kick": 4403, "kick-reconnect": 4000, "kick-expired": 4419}


def errorReply(status, reason, command, body, channel=None):
    headers = [NODE, ("status", str(status)), ("reason", reason), ("command", command)]
    if channel is not None:
        headers.append(("channel", channel))
    return Message("error", headers, body.encode())


def credentialReply(command, user, ttl, clock):
    headers = [NODE, ("status", "200"), ("user", user)]
    if ttl is not None:
        headers.append(("expires", str(int(clock.seconds()) + ttl)))
    return Message(command, headers)


class AuthNodeProtocol(WebSocketServerProtocol):
    """
    One connection to the fake node.
    """

    user = None

    def onOpen(self):
        self.factory.node.connections.append(self)
        self.received = []
        self.channels = set()

    def onClose(self, wasClean, code, reason):
        node = self.factory.node
        if self in node.connections:
            node.connections.remove(self)

    def sendLHTTP(self, message):
        self.sendMessage(message.toBytes(), False)

    def onMessage(self, payload, isBinary):
        node = self.factory.node
        node.log(payload)
        try:
            message = parse(payload)
        except LHTTPError:
            return
        self.received.append(message)
        if self.user is None:
            if message.command == "connect":
                self.connect(message.getHeader("token"))
            else:
                self.sendLHTTP(errorReply(
                    401, "unauthorized", message.command,
                    "send 'LHTTP/1.0 connect' with a 'token' header first"))
            return
        if message.command == "connect":
            self.sendLHTTP(errorReply(400, "already connected", "connect", "already connected"))
        elif message.command == "refresh":
            self.refresh(message.getHeader("token"))
        else:
            self.route(message)

    def connect(self, token):
        clock = self.factory.node.clock
        if token == "unavailable":
            self.sendLHTTP(errorReply(503, "authentication unavailable", "connect", "keys unavailable"))
            self.sendClose(4503, "authentication unavailable")
            return
        if token not in TOKENS:
            self.sendLHTTP(errorReply(401, "unauthorized", "connect", "token expired"))
            self.sendClose(4401, "unauthorized")
            return
        self.user, ttl = TOKENS[token]
        self.sendLHTTP(credentialReply("connect", self.user, ttl, clock))
        if token == "notice":
            self.notice()
        elif token == "kick-expired":
            self.notice()
            clock.callLater(0.2, self.sendClose, 4419, "token expired")
        elif token in AFTER:
            self.sendClose(AFTER[token], "disconnected by the server")

    def notice(self):
        self.sendLHTTP(Message("refresh", [
            NODE, ("status", "401"), ("reason", "token expired"), ("grace", "10"),
        ]))

    def refresh(self, token):
        if token not in TOKENS:
            self.sendLHTTP(errorReply(401, "unauthorized", "refresh", "token expired"))
        elif TOKENS[token][0] != self.user:
            self.sendLHTTP(errorReply(403, "forbidden", "refresh", "token is for another user"))
        else:
            self.sendLHTTP(credentialReply("refresh", self.user, TOKENS[token][1],
                                           self.factory.node.clock))

    def route(self, message):
        subscribe = (message.getHeader("subscribe") or "").split()
        tokens = (message.getHeader("channel-token") or "").split()
        for index, channel in enumerate(subscribe):
            if tokens and (len(tokens) != len(subscribe) or tokens[index] != f"sub-{channel}"):
                self.sendLHTTP(errorReply(
                    403, "forbidden", message.command,
                    f"subscribe to {channel!r} is not allowed", channel))
                continue
            self.channels.add(channel)
            if channel.startswith("drop."):
                self.channels.discard(channel)
                self.sendLHTTP(Message("unsubscribed", [
                    NODE, ("channel", channel), ("reason", "unsubscribed by the server"),
                ]))
        for channel in (message.getHeader("publish") or "").split():
            for connection in list(self.factory.node.connections):
                if channel in connection.channels:
                    connection.sendLHTTP(message)
        for channel in (message.getHeader("unsubscribe") or "").split():
            self.channels.discard(channel)


class AuthNode:
    """
    The fake node: C{factory} builds its connections; C{connections} are
    the open ones; C{clock} gives C{expires} and the delayed closes.
    """

    def __init__(self, clock, out=None):
        self.clock = clock
        self.out = out
        self.connections = []
        self.factory = WebSocketServerFactory("ws://node/", reactor=clock)
        self.factory.protocol = AuthNodeProtocol
        self.factory.node = self

    def log(self, payload):
        if self.out is not None:
            from lhttp.cli import escape

            self.out.write(f"recv {escape(payload)}\n")
            self.out.flush()


def receivedBy(process):
    """
    @return: the messages the fake node running as C{process} received,
        escaped as its log lines have them.
    """
    return [line[5:] for line in process.log().splitlines() if line.startswith("recv ")]


def main(port):
    from twisted.internet import reactor

    node = AuthNode(reactor, sys.stdout)
    reactor.listenTCP(port, node.factory, interface="127.0.0.1")
    print("listening", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
