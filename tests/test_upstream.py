"""
The upstream header end to end (SPEC section 5): real C{twistd lhttp}
nodes, real WebSocket clients, real HTTP backends on free loopback ports
(the example record backend as a process, and a Twisted web server in the
test process for slow, failing and echoing answers).
"""

import json
import sys
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from lhttpclients import barrier, client, eventually
from procs import ROOT, Process, freePort, portAccepts, waitFor

CHAT = (
    "LHTTP/1.0 chat\r\nupstream:POST http://127.0.0.1:{port}/record\r\n"
    "publish:channel_mike\r\n\r\nhello mike, I am jack"
)


class RecordBackendProcess(Process):
    """
    C{examples/record_backend.py} as a real process on a free port.
    """

    def __init__(self, path):
        self.port = freePort()
        self.url = f"http://127.0.0.1:{self.port}/"
        Process.__init__(
            self,
            [sys.executable, str(ROOT / "examples" / "record_backend.py"),
             "--port", str(self.port), "--file", str(path)],
            name="record-backend",
        )
        waitFor(lambda: portAccepts(self.port) or not self.alive(), what="the record backend")
        assert self.alive(), self.log()

    async def records(self, atLeast=0, timeout=10):
        """
        What the backend stored, once it holds at least C{atLeast} records.
        """
        async def enough():
            response = await treq.get(self.url + "records")
            records = json.loads(await response.content())
            # A tuple, so that an empty list of records still counts.
            return (records,) if len(records) >= atLeast else None

        [records] = await eventually(enough, timeout, what=f"{atLeast} record(s) at the backend")
        return records


@pytest.fixture
def recordBackend(tmp_path):
    backend = RecordBackendProcess(tmp_path / "records.jsonl")
    yield backend
    backend.stop()


class Backend(Resource):
    """
    In the test process: records requests; C{/slow} never answers,
    C{/fail} answers 500, C{/echo} answers 201 with the body it got.
    """

    isLeaf = True

    def __init__(self):
        Resource.__init__(self)
        self.requests = []
        self.waiting = []

    def render(self, request):
        body = request.content.read()
        self.requests.append((request.method, request.uri, body))
        if request.path == b"/slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        if request.path == b"/fail":
            request.setResponseCode(500)
            return b"broken"
        if request.path == b"/echo":
            request.setResponseCode(201)
            request.setHeader(b"content-type", b"text/plain")
            return b"echo:" + body
        return b"ok"

    def paths(self):
        return [uri for method, uri, body in self.requests]


@pytest_twisted.async_yield_fixture
async def backend():
    resource = Backend()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    resource.port = port.getHost().port
    resource.url = f"http://127.0.0.1:{resource.port}"
    yield resource
    for request in resource.waiting:
        request.transport.abortConnection()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_chatRecordScenario(startNode, recordBackend):
    """
    Mike gets jack's message; the backend gets one POST with the whole
    message as its body, the command and headers readable as HTTP headers;
    a GET with a query reaches it without a body; a named target works.
    """
    port = recordBackend.port
    node = startNode("--upstream-allow", recordBackend.url,
                     "--upstream-target", f"record=http://127.0.0.1:{port}/record")
    mike = await client(node.url)
    jack = await client(node.url)
    mike.subscribe("channel_mike")
    await barrier(mike)

    chat = CHAT.format(port=port).encode()
    jack.sendLHTTP(chat)
    assert (await mike.nextMessage(10)).toBytes() == chat
    jack.sendLHTTP(b"LHTTP/1.0 profile\r\nupstream:GET "
                   + f"http://127.0.0.1:{port}/path?user=a&age=26".encode() + b"\r\n\r\nnot sent")
    jack.sendLHTTP(b"LHTTP/1.0 chat\r\nupstream: POST record\r\n\r\nby name")
    assert await barrier(jack) == []

    records = await recordBackend.records(atLeast=3)
    posts = [r for r in records if r["method"] == "POST"]
    assert [r["body"] for r in posts].count(chat.decode()) == 1
    [chatRecord] = [r for r in posts if r["body"] == chat.decode()]
    assert chatRecord["path"] == "/record"
    assert chatRecord["command"] == "chat"
    assert chatRecord["headers"] == [
        ["upstream", f"POST http://127.0.0.1:{port}/record"], ["publish", "channel_mike"]]
    assert chatRecord["peer"].startswith("127.0.0.1:")
    [named] = [r for r in posts if r["body"].endswith("by name")]
    assert named["path"] == "/record"
    [get] = [r for r in records if r["method"] == "GET"]
    assert (get["path"], get["body"], get["command"]) == ("/path?user=a&age=26", "", "profile")

    # One more request as a marker: no duplicate of the chat came first.
    jack.sendLHTTP(b"LHTTP/1.0 marker\r\nupstream: POST record\r\n\r\n")
    records = await recordBackend.records(atLeast=4)
    assert [r["command"] for r in records].count("chat") == 2
    assert len(records) == 4


async def errorsUntilBarrier(sender):
    return [(m.getHeader("status"), m.getHeader("upstream")) for m in await barrier(sender)]


@pytest_twisted.ensureDeferred
async def test_offListAndOffTargetsAre403WithNoRequest(startNode, backend):
    """
    Off the allow-list (other path, port, host spelling, userinfo tricks)
    or with no allow-list at all: a 403 error reply, the message is not
    published, and no request reaches a listening backend.
    """
    allowing = startNode("--upstream-allow", backend.url + "/allowed/")
    closed = startNode()
    mike = await client(allowing.url)
    mike.subscribe("channel_mike")
    await barrier(mike)
    jack = await client(allowing.url)
    refused = [
        f"POST {backend.url}/other",
        f"POST {backend.url}/allowed/../other",
        f"POST {backend.url}@127.0.0.1:{freePort()}/allowed/",
        f"POST http://localhost:{backend.port}/allowed/",
    ]
    for target in refused:
        jack.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:{target}\r\npublish:channel_mike\r\n\r\nx".encode())
    assert await errorsUntilBarrier(jack) == [("403", None)] * len(refused)

    ann = await client(closed.url)
    ann.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:POST {backend.url}/allowed/x\r\n\r\nx".encode())
    [error] = await barrier(ann)
    assert (error.command, error.getHeader("status"), error.getHeader("command")) == ("error", "403", "chat")
    assert "not enabled" in error.body.decode()

    # An allowed request as a marker: once it arrives, the refused ones
    # would have too.
    jack.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:POST {backend.url}/allowed/marker\r\n\r\n".encode())
    await eventually(lambda: backend.requests, timeout=10, what="the marker request")
    assert backend.paths() == [b"/allowed/marker"]
    assert await barrier(mike) == []


@pytest_twisted.ensureDeferred
async def test_slowBackendTimesOutWithoutStallingOthers(startNode, backend):
    """
    A backend slower than --upstream-timeout: a 504 within timeout + 1 s,
    while later messages of the same connection and of others are served
    and their requests made; a refused connection and a 500 give 502.
    """
    dead = f"http://127.0.0.1:{freePort()}/"
    node = startNode("--upstream-allow", backend.url + "/", "--upstream-allow", dead,
                     "--upstream-timeout", "1.5")
    mike = await client(node.url)
    mike.subscribe("channel_mike")
    await barrier(mike)
    jack = await client(node.url)
    ann = await client(node.url)

    started = time.monotonic()
    jack.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:POST {backend.url}/slow\r\n\r\nslow".encode())
    jack.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:POST {backend.url}/after\r\npublish:channel_mike\r\n\r\njack".encode())
    ann.sendLHTTP(b"LHTTP/1.0 chat\r\npublish:channel_mike\r\n\r\nann")
    delivered = sorted([(await mike.nextMessage(5)).body for _ in range(2)])
    assert delivered == [b"ann", b"jack"]
    await eventually(lambda: b"/after" in backend.paths(), timeout=5, what="the request after the slow one")
    assert time.monotonic() - started < 1.4, "served only after the slow request gave up"
    # Both requests were made, each on its own connection: the backend may
    # take them in either order.
    assert sorted(backend.paths()) == [b"/after", b"/slow"]

    error = await jack.nextMessage(5)
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 2.5, elapsed
    assert [error.getHeader(h) for h in ("status", "reason", "command", "upstream")] == [
        "504", "gateway timeout", "chat", f"POST {backend.url}/slow"]

    jack.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:POST {dead}\r\n\r\n".encode())
    refused = await jack.nextMessage(5)
    assert (refused.getHeader("status"), refused.getHeader("reason")) == ("502", "bad gateway")
    jack.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:GET {backend.url}/fail\r\n\r\n".encode())
    failed = await jack.nextMessage(5)
    assert (failed.getHeader("status"), failed.getHeader("upstream")) == ("502", f"GET {backend.url}/fail")
    assert "500" in failed.body.decode()
    assert await barrier(jack) == []


@pytest_twisted.ensureDeferred
async def test_relayedResponse(startNode, backend):
    """
    With --upstream-relay the sender gets the backend's status and body;
    a body over --upstream-max-response is a 502.
    """
    node = startNode("--upstream-allow", backend.url + "/", "--upstream-relay",
                     "--upstream-max-response", "100")
    jack = await client(node.url)
    jack.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:PUT {backend.url}/echo\r\n\r\nhi".encode())
    reply = await jack.nextMessage(5)
    assert reply.command == "upstream"
    assert [reply.getHeader(h) for h in ("status", "command", "upstream", "content-type")] == [
        "201", "chat", f"PUT {backend.url}/echo", "text/plain"]
    assert reply.body.startswith(b"echo:LHTTP/1.0 chat\r\n") and reply.body.endswith(b"\r\n\r\nhi")

    jack.sendLHTTP(f"LHTTP/1.0 chat\r\nupstream:PUT {backend.url}/echo\r\n\r\n".encode() + b"x" * 100)
    tooLarge = await jack.nextMessage(5)
    assert (tooLarge.command, tooLarge.getHeader("status")) == ("error", "502")
    assert "larger than 100" in tooLarge.body.decode()
