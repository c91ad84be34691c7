"""
C{POST /publish} judges a request by its head: a body that is too large,
or sent without the token, is refused before it is read, never stored on
disk, and the connection closes politely (issue 12, item 2). Against real
C{twistd lhttp} nodes whose C{TMPDIR} is an empty directory of the test's.
"""

import json
import os
import select
import socket
import time

from lhttpclients import readResponse
from procs import rss

LIMIT = 65536
MESSAGE = b"LHTTP/1.0 notice\r\npublish:room\r\n\r\n"


def tempFiles(node, tmpdir):
    """
    Files of the node's in its TMPDIR: listed, or open though deleted
    (Twisted's request bodies are unnamed temporary files).
    """
    found = os.listdir(tmpdir)
    fds = f"/proc/{node.popen.pid}/fd"
    for fd in os.listdir(fds):
        try:
            target = os.readlink(os.path.join(fds, fd))
        except OSError:
            continue
        if target.startswith(str(tmpdir)):
            found.append(target)
    return found


def head(node, *headers):
    lines = [f"POST /publish HTTP/1.1", f"Host: 127.0.0.1:{node.port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(node):
    return socket.create_connection(("127.0.0.1", node.port), timeout=5)


def endsSoon(sock):
    """
    Whether the server ends the connection (FIN or reset) within the
    socket's timeout, reading and discarding what comes first.
    """
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        return False
    except OSError:
        pass
    return True


def test_tooLargeAnsweredBeforeTheBody(startNode, tmp_path):
    node = startNode("--max-message-size", str(LIMIT), env={"TMPDIR": str(tmp_path)})
    with connect(node) as sock:
        # 400 MiB announced, not one byte of it sent: the answer must not
        # wait for it.
        sock.sendall(head(node, "Content-Length: 419430400"))
        status, response, body = readResponse(sock)
        assert (status, json.loads(body)["reason"]) == (413, "message too large")
        assert b"connection: close" in response
        assert endsSoon(sock)
    assert tempFiles(node, tmp_path) == []


def test_noTokenAnsweredBeforeTheBody(startNode):
    node = startNode("--publish-token", "s3cret")
    answers = []
    for headers in (
        ["Content-Length: 209715200"],
        ["Content-Length: 209715200", "Authorization: Bearer wrong"],
        ["Transfer-Encoding: chunked", "Expect: 100-continue"],
    ):
        with connect(node) as sock:
            sock.sendall(head(node, *headers))
            status, response, body = readResponse(sock)
            answers.append((status, json.loads(body)["reason"]))
            assert b"100 continue" not in response
            assert endsSoon(sock)
    assert answers == [(401, "unauthorized"), (403, "forbidden"), (401, "unauthorized")]


def sendUntilEnded(sock, chunk, limit, timeout=20):
    """
    Send C{chunk} again and again, as a client that does not look for an
    early answer would, until the server ends the connection (or C{limit}
    bytes were sent, or C{timeout} seconds passed).

    @return: C{(bytes sent, what the server sent, seconds from its first
        byte to the end or None)}.
    """
    sock.setblocking(False)
    sent, answer, answered, ended = 0, b"", None, None
    deadline = time.monotonic() + timeout
    while ended is None and sent < limit and time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock], [], 1)
        try:
            if readable:
                data = sock.recv(65536)
                answer += data
                if answered is None:
                    answered = time.monotonic()
                if not data:
                    ended = time.monotonic()
            if writable and ended is None:
                sent += sock.send(chunk)
        except BlockingIOError:
            continue
        except OSError:
            ended = time.monotonic()
    return sent, answer, (ended - answered if ended and answered else None)


def test_chunkedBodyCutOffAtTheLimit(startNode, tmp_path):
    node = startNode("--max-message-size", str(LIMIT), env={"TMPDIR": str(tmp_path)})
    before = rss(node.popen.pid)
    with connect(node) as sock:
        sock.sendall(head(node, "Transfer-Encoding: chunked") + b"%x\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
        sent, answer, lingered = sendUntilEnded(sock, b"%x\r\n%s\r\n" % (65536, b"x" * 65536), 256 * 2**20)
    assert answer.startswith(b"HTTP/1.1 413 "), (sent, answer[:100])
    assert b'"reason": "message too large"' in answer
    # Answered after the limit, not after the client's 256 MiB, and then
    # closed after a bounded linger although the client kept sending.
    assert lingered is not None and lingered < 4, lingered
    assert sent < 64 * 2**20, sent
    assert rss(node.popen.pid) - before < 16 * 2**20
    assert tempFiles(node, tmp_path) == []


def test_acceptedBodyKeptInMemory(startNode, tmp_path):
    node = startNode(env={"TMPDIR": str(tmp_path)})
    # Over Twisted's 100 kB in-memory threshold, under the 1 MiB limit.
    message = MESSAGE + b"x" * 300000
    with connect(node) as sock:
        sock.sendall(head(node, f"Content-Length: {len(message)}", "Expect: 100-continue"))
        status, _, _ = readResponse(sock)
        # "100 Continue" comes once the node has chosen where the body goes.
        assert status == 100
        assert tempFiles(node, tmp_path) == []
        sock.sendall(message)
        status, _, body = readResponse(sock)
        assert (status, json.loads(body)["channels"]) == (200, ["room"])
