"""
The HTTP phase of a connection is bounded (issue 12, item 5): a request
trickled byte by byte is cut off at the handshake timeout, and connections
that are not yet WebSockets are capped without locking real clients out.
Against real C{twistd lhttp} nodes with real sockets.
"""

import select
import socket
import time

from lhttpclients import RawWebSocket

HEAD = "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


def trickle(port, first, rest, interval=0.25, timeout=8):
    """
    Send C{first}, then C{rest} a byte every C{interval} seconds, until the
    server ends the connection or C{timeout} passes.

    @return: C{(seconds until the server ended it or None, what it sent)}.
    """
    start = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(first)
        while time.monotonic() - start < timeout:
            if rest:
                try:
                    sock.send(rest[:1])
                except OSError:
                    return time.monotonic() - start, received
                rest = rest[1:]
            readable, _, _ = select.select([sock], [], [], interval)
            if readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                received += data
                if not data:
                    return time.monotonic() - start, received
    return None, received


def test_trickledHandshakeCutOffAtTheDeadline(startNode):
    node = startNode("--handshake-timeout", "2")
    head = HEAD.format(port=node.port).encode()
    # A byte every 0.25 s: Twisted's idle timeout never fires.
    seconds, answer = trickle(node.port, head[:20], head[20:] + b"X-Slow: " + b"z" * 200)
    assert seconds is not None and seconds < 2 + 1.5, seconds
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_trickledPublishBodyCutOffAtTheDeadline(startNode):
    node = startNode("--handshake-timeout", "2")
    body = b"LHTTP/1.0 notice\r\npublish:room\r\n\r\n" + b"x" * 200
    head = (
        f"POST /publish HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    seconds, answer = trickle(node.port, head, body)
    assert seconds is not None and seconds < 2 + 1.5, seconds
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def openTricklers(port, count):
    """
    Connections that started a handshake and send nothing more (for now).
    """
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(HEAD.format(port=port).encode())
        socks.append(sock)
    return socks


def closedByServer(sock, timeout):
    """
    Whether the server ends C{sock} within C{timeout} seconds (after, at
    most, an answer).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], max(0, deadline - time.monotonic()))
        if not readable:
            return False
        try:
            data = sock.recv(65536)
        except OSError:
            return True
        if not data:
            return True
        assert data.startswith(b"HTTP/1.1 503 "), data
    return False


def stillOpen(sock):
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def test_oldestPendingMakesRoomForRealClients(startNode):
    node = startNode("--max-pending-connections", "5", "--handshake-timeout", "30")
    tricklers = openTricklers(node.port, 5)
    everyTrickler = list(tricklers)
    clients = []
    try:
        for n in range(3):
            start = time.monotonic()
            client = RawWebSocket(node.port, timeout=5)
            clients.append(client)
            assert client.status == 101
            assert time.monotonic() - start < 1
            # The trickler waiting longest made room; the others wait on.
            oldest, tricklers = tricklers[0], tricklers[1:]
            assert closedByServer(oldest, 2), n
            assert all(stillOpen(sock) for sock in tricklers), n
            # The attacker fills the cap again.
            tricklers += openTricklers(node.port, 1)
            everyTrickler += tricklers[-1:]
    finally:
        for sock in everyTrickler:
            sock.close()
        for client in clients:
            client.close()


def test_pendingConnectionsCountAgainstMaxConnections(startNode):
    node = startNode("--max-connections", "3", "--handshake-timeout", "30")
    tricklers = openTricklers(node.port, 2)
    clients = [RawWebSocket(node.port, timeout=5)]
    try:
        # Two pending and one WebSocket: full, nobody dropped yet.
        assert stillOpen(tricklers[0]) and stillOpen(tricklers[1])
        clients.append(RawWebSocket(node.port, timeout=5))
        assert closedByServer(tricklers[0], 2)
        assert stillOpen(tricklers[1])
        clients.append(RawWebSocket(node.port, timeout=5))
        assert closedByServer(tricklers[1], 2)
        assert [c.status for c in clients] == [101, 101, 101]
        # Three WebSockets: no room, nothing to drop; a new connection is
        # refused at once, before it sends a byte.
        with socket.create_connection(("127.0.0.1", node.port), timeout=2) as refused:
            assert refused.recv(65536).startswith(b"HTTP/1.1 503 ")
        assert RawWebSocket(node.port, timeout=5).status == 503
    finally:
        for sock in tricklers:
            sock.close()
        for client in clients:
            client.close()
