"""
A terminal chat that needs no server code: only the reserved headers.

    python examples/pubsub_chat.py ws://127.0.0.1:8081/ room nick

Each line you type is published to the room; every message of the room is
printed as C{<nick> text}. Run it in two terminals to chat.

On the wire it subscribes with::

    LHTTP/1.0 subscribe\\r\\nsubscribe:room\\r\\n\\r\\n

and publishes each line with::

    LHTTP/1.0 chat\\r\\npublish:room\\r\\nnick:ann\\r\\n\\r\\nhello
"""

import sys

from twisted.internet import defer, stdio, task
from twisted.protocols.basic import LineReceiver

from lhttp.client import connect


class Keyboard(LineReceiver):
    delimiter = b"\n"

    def __init__(self, client, room, nick):
        self.client = client
        self.room = room
        self.nick = nick

    def lineReceived(self, line):
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text:
            self.client.publish([self.room], "chat", [("nick", self.nick)], text)

    def connectionLost(self, reason):
        self.client.sendClose()


def show(message):
    if message.command == "error":
        print(f"! {message.getHeader('status')} {message.body.decode('utf-8', 'replace')}", flush=True)
    else:
        nick = message.getHeader("nick", "?")
        print(f"<{nick}> {message.body.decode('utf-8', 'replace')}", flush=True)


async def main(reactor, url, room, nick):
    client = await connect(reactor, url)
    client.onLHTTPMessage = show
    client.subscribe([room])
    print(f"* joined {room} as {nick}", flush=True)
    stdio.StandardIO(Keyboard(client, room, nick), reactor=reactor)
    await client.closed


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: pubsub_chat.py ws://host:8081/ ROOM NICK")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, *sys.argv[1:])))
