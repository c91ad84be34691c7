"""
Real WebSocket clients for integration tests, on lhttp.client.
"""

import itertools
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

from lhttp.client import connect
from procs import eventually  # noqa: F401 (re-exported: tests import it from here too)

_barriers = itertools.count()


async def client(url):
    return await connect(reactor, url)


async def signedIn(url, token, user):
    """
    A client that sent C{LHTTP/1.0 connect} with C{token} (a JWT) and was
    answered C{status:200} as C{user}: a real node's own authentication
    (docs/authentication.rst).
    """
    c = await client(url)
    c.send("connect", [("token", token)])
    reply = await c.nextMessage(10)
    assert (reply.command, reply.getHeader("status"), reply.getHeader("user")) == (
        "connect", "200", user), reply
    return c


async def subscribed(url, channels):
    """
    A client of the node at C{url} whose subscription to C{channels} has
    reached the whole cluster.
    """
    c = await client(url)
    c.subscribe(channels)
    await barrier(c)
    return c


async def barrier(client, timeout=10):
    """
    Make sure the server has handled everything this client sent so far:
    the connection's messages are handled in order, so once a message
    published to a private channel comes back, all earlier ones were.
    Returns the messages that arrived before it.
    """
    channel = f"barrier-{next(_barriers)}"
    client.send("barrier", [("subscribe", channel), ("publish", channel), ("unsubscribe", channel)])
    before = []
    while True:
        message = await client.nextMessage(timeout)
        if message.command == "barrier" and message.getHeader("publish") == channel:
            return before
        before.append(message)


async def health(node):
    """
    @return: C{(status code, JSON document)} of the node's C{/health}.
    """
    import json

    import treq

    response = await treq.get(node.httpURL + "health", timeout=5)
    return response.code, json.loads(await response.content())


async def untilHealth(node, status, timeout=20.0):
    """
    Wait until the node's C{/health} answers C{status}; return the seconds
    it took.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            code, document = await health(node)
        except Exception:
            code, document = None, None
        if code == status:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"/health of {node.url} is {code} {document}, not {status}, after {timeout}s")
        await deferLater(reactor, 0.1)


class RawWebSocket:
    """
    A blocking WebSocket client on a plain socket, for sending pre-built
    frames fast (storms), invalid frames, or not reading at all (slow
    consumers). L{frame} builds client frames; L{readFrame} reads the
    server's. Writes are locked so a reader thread may answer pings.
    """

    def __init__(self, port, host="127.0.0.1", path="/", headers=(), timeout=10, rcvbuf=None):
        """
        @param rcvbuf: a small kernel receive buffer (bytes), set before
            connecting, for a client that stops reading.
        """
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, port))
        self.lock = threading.Lock()
        self._buffer = b""
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n".encode("latin-1")
        )
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {self._buffer!r}")
            self._buffer += chunk
        self.response, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        self.status = int(self.response.split(b" ", 2)[1])

    @staticmethod
    def frame(payload, opcode=2, fin=True, mask=b"\x5a\xa5\x3c\xc3", rsv=0):
        """
        One masked client frame (opcode 1 text, 2 binary, 8 close...).
        """
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        key = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
        return head + mask + masked

    def sendall(self, data):
        with self.lock:
            self.sock.sendall(data)

    def _take(self, n):
        while len(self._buffer) < n:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("the server closed the TCP connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def readFrame(self):
        """
        @return: C{(opcode, payload)} of the server's next frame (answering
            pings first); a close frame's payload is C{(code, reason)}.
        @raise ConnectionError: the TCP connection closed first.
        """
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._take(2), "big")
            elif n == 127:
                n = int.from_bytes(self._take(8), "big")
            payload = self._take(n)
            opcode = b0 & 0x0F
            if opcode == 9:
                self.sendall(self.frame(payload, opcode=10))
                continue
            if opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                return 8, (code, payload[2:].decode("utf-8", "replace"))
            return opcode, payload

    def closeCode(self):
        """
        Read until the server's close frame; return its code (L{None} if the
        TCP connection ends without one).
        """
        while True:
            try:
                opcode, payload = self.readFrame()
            except (ConnectionError, OSError):
                return None
            if opcode == 8:
                return payload[0]

    def close(self):
        self.sock.close()


def readResponse(sock):
    """
    Read one HTTP response from a blocking socket: the head, then a body
    of its Content-Length (or up to the end of the connection if none, but
    none for a 1xx).

    @return: C{(status, head, body)}; C{head} is the lower-cased header
        block as L{bytes}.
    @raise ConnectionError: the connection ended before a whole head.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    head = head.lower()
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            length = int(value)
        elif name.strip() == b"transfer-encoding":
            chunked = b"chunked" in value
    if 100 <= status < 200:
        return status, head, body
    if chunked:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, head, _dechunk(body)
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, head, body


def _dechunk(data):
    body = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        size = int(size.split(b";")[0], 16)
        if not size:
            break
        body, data = body + data[:size], data[size + 2:]
    return body


def rawHTTP(port, data, timeout=10):
    """
    Send raw request bytes to a loopback port and read one response.

    @return: C{(status, head, body)} as L{readResponse}.
    """
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return readResponse(sock)
