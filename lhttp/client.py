"""
A Twisted LHTTP client: connect, send, subscribe, publish, and receive
messages as Deferreds.

    client = yield connect(reactor, "ws://127.0.0.1:8081/")
    client.subscribe(["room"])
    client.publish(["room"], "chat", [("nick", "ann")], "hello")
    message = yield client.nextMessage(timeout=5)
"""

from collections import deque

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from hyperlink import URL
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionDone

from lhttp.codec import Message, parse


class LHTTPClientProtocol(WebSocketClientProtocol):
    """
    One client connection. Incoming messages are parsed and queued until
    L{nextMessage} takes them, or given to C{onLHTTPMessage} if set.

    @ivar closed: a L{Deferred} that fires with C{(wasClean, code, reason)}
        when the WebSocket closes.
    """

    onLHTTPMessage = None

    def __init__(self):
        WebSocketClientProtocol.__init__(self)
        self._received = deque()
        self._waiting = deque()
        self.closed = Deferred()
        self.closeCode = None

    def onOpen(self):
        opened, self.factory.opened = self.factory.opened, None
        if opened is not None:
            opened.callback(self)

    def onMessage(self, payload, isBinary):
        message = parse(payload)
        if self.onLHTTPMessage is not None:
            self.onLHTTPMessage(message)
        elif self._waiting:
            self._waiting.popleft().callback(message)
        else:
            self._received.append(message)

    def onClose(self, wasClean, code, reason):
        self.closeCode = code
        opened, self.factory.opened = self.factory.opened, None
        if opened is not None:
            opened.errback(ConnectionDone(f"WebSocket closed before opening: {code} {reason}"))
        while self._waiting:
            self._waiting.popleft().errback(ConnectionDone(f"closed: {code} {reason}"))
        self.closed.callback((wasClean, code, reason))

    def nextMessage(self, timeout=None):
        """
        @param timeout: seconds to wait, or L{None} to wait forever.
        @return: a L{Deferred} firing with the next L{Message}, failing with
            L{TimeoutError} after C{timeout}.
        """
        if self._received:
            d = Deferred()
            d.callback(self._received.popleft())
            return d
        d = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(d)
        if timeout is not None:
            d.addTimeout(timeout, self.factory.reactor)
        return d

    def pending(self):
        """
        @return: how many received messages wait to be taken.
        """
        return len(self._received)

    def sendLHTTP(self, message, isBinary=False):
        """
        Send a L{Message}, or raw bytes (sent as they are, valid or not).
        """
        if isinstance(message, Message):
            message = message.toBytes()
        self.sendMessage(message, isBinary)

    def send(self, command, headers=(), body=b""):
        self.sendLHTTP(Message(command, headers, body))

    def subscribe(self, channels, command="subscribe"):
        self.send(command, [("subscribe", _joined(channels))])

    def unsubscribe(self, channels, command="unsubscribe"):
        self.send(command, [("unsubscribe", _joined(channels))])

    def publish(self, channels, command, headers=(), body=b""):
        self.send(command, [("publish", _joined(channels)), *headers], body)


def _joined(channels):
    return channels if isinstance(channels, str) else " ".join(channels)


def connect(reactor, url, headers=None, timeout=30):
    """
    Open an LHTTP WebSocket client connection.

    @param url: C{ws://host:port/path} or C{wss://...}.
    @param headers: extra handshake headers (e.g. C{{"Origin": ...}}).
    @return: a L{Deferred} firing with an L{LHTTPClientProtocol} once the
        WebSocket is open.
    """
    parsed = URL.from_text(url)
    secure = parsed.scheme == "wss"
    port = parsed.port or (443 if secure else 80)
    factory = WebSocketClientFactory(url, headers=headers, reactor=reactor)
    factory.protocol = LHTTPClientProtocol
    factory.opened = Deferred()
    kind = "tls" if secure else "tcp"
    host = parsed.host.replace(":", r"\:")
    endpoint = clientFromString(reactor, f"{kind}:{host}:{port}:timeout={timeout}")
    connecting = endpoint.connect(factory)
    opened = factory.opened

    def failed(failure):
        if factory.opened is not None:
            factory.opened = None
            opened.errback(failure)

    connecting.addErrback(failed)
    return opened


__all__ = ["LHTTPClientProtocol", "TimeoutError", "connect"]
