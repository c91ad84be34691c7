"""
The examples, run as a user runs them: processors found as Twisted plugins
by a real C{twistd lhttp}, the embedding example, the no-code chat.
"""

import json
import sys

import pytest_twisted
import treq

from lhttpclients import barrier, client, eventually
from procs import ROOT, Process, freePort, portAccepts

EXAMPLES = ROOT / "examples"
UPLOAD = b"LHTTP/1.0 upload\r\nmultipart:0 14\r\n\r\nk1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2"


@pytest_twisted.ensureDeferred
async def test_pluginProcessorsEchoAndUpload(startNode):
    node = startNode(pythonPath=[EXAMPLES])
    alice = await client(node.url)
    alice.sendLHTTP(b"LHTTP/1.0 echo\r\n\r\nhello")
    echo = await alice.nextMessage(10)
    assert echo.toBytes() == b"LHTTP/1.0 echoed\r\necho-by:lhttp\r\n\r\nhello"

    alice.sendLHTTP(UPLOAD)
    uploaded = await alice.nextMessage(10)
    assert uploaded.command == "uploaded"
    assert uploaded.getHeader("parts") == "2"
    assert json.loads(uploaded.body) == [
        {"headers": [["k1", "v1"]], "body": "body1"},
        {"headers": [["k2", "v2"]], "body": "body2"},
    ]
    # The startup line names what the plugins gave.
    assert "'echo': 'lhttp_examples.echo.EchoProcessor'" in node.log()


@pytest_twisted.ensureDeferred
async def test_withoutPluginsEchoIsUnhandled(startNode):
    node = startNode("--no-plugins", pythonPath=[EXAMPLES])
    alice = await client(node.url)
    alice.sendLHTTP(b"LHTTP/1.0 echo\r\n\r\nhello")
    [error] = await barrier(alice)
    assert (error.getHeader("status"), error.getHeader("reason")) == ("404", "no processor")


@pytest_twisted.ensureDeferred
async def test_processorOption(startNode):
    node = startNode(
        "--no-plugins", "--processor", "say=lhttp_examples.echo.EchoProcessor",
        pythonPath=[EXAMPLES],
    )
    alice = await client(node.url)
    alice.sendLHTTP(b"LHTTP/1.0 say\r\n\r\nhi")
    assert (await alice.nextMessage(10)).command == "echoed"


def startProcess(args, name, stdin=False):
    return Process([sys.executable, *args], name=name, cwd=str(ROOT), stdin=stdin)


@pytest_twisted.ensureDeferred
async def test_embeddingServesUserPageAndLHTTP():
    port = freePort()
    site = startProcess([str(EXAMPLES / "embed.py"), "--port", str(port)], "embed")
    try:
        await eventually(lambda: portAccepts(port) or not site.alive(), what="embed example")
        assert site.alive(), site.log()
        page = await treq.get(f"http://127.0.0.1:{port}/")
        assert b"My site" in await page.content()

        alice = await client(f"ws://127.0.0.1:{port}/lhttp/")
        bob = await client(f"ws://127.0.0.1:{port}/lhttp/room")
        alice.subscribe("room")
        await barrier(alice)
        bob.publish("room", "chat", body="over the embedded tree")
        assert (await alice.nextMessage(10)).body == b"over the embedded tree"

        body = b"LHTTP/1.0 notice\r\npublish:room\r\n\r\nvia http"
        response = await treq.post(f"http://127.0.0.1:{port}/lhttp/publish", data=body)
        assert response.code == 200
        assert (await alice.nextMessage(10)).toBytes() == body
    finally:
        site.stop()


@pytest_twisted.ensureDeferred
async def test_pubsubChatNeedsNoServerCode(lhttpNode):
    chat = startProcess(
        [str(EXAMPLES / "pubsub_chat.py"), lhttpNode.url, "lobby", "ann"], "chat", stdin=True
    )
    try:
        await eventually(lambda: "* joined lobby" in chat.log() or not chat.alive(), what="chat joined")
        bob = await client(lhttpNode.url)
        bob.subscribe("lobby")
        await barrier(bob)
        chat.popen.stdin.write(b"hello from ann\n")
        chat.popen.stdin.flush()
        typed = await bob.nextMessage(10)
        assert (typed.getHeader("nick"), typed.body) == ("ann", b"hello from ann")
        # The chat says it joined once it sent its subscribe; publish until
        # the server has handled that too.
        for attempt in range(20):
            bob.publish("lobby", "chat", [("nick", "bob")], f"hi ann {attempt}")
            try:
                await eventually(lambda: "<bob> hi ann" in chat.log(), timeout=1, what="bob's line")
                break
            except AssertionError:
                pass
        assert "<bob> hi ann" in chat.log(), chat.log()
    finally:
        chat.stop()


@pytest_twisted.ensureDeferred
async def test_demoAuthBackend():
    """
    examples/demo_auth_backend.py signs a 10-minute HS256 token for a
    nickname that can own a C{user.<nick>} channel, refuses other
    nicknames, lets only the configured origin's pages call it, and will
    not start without the secret.
    """
    import jwt

    secret = "s" * 32
    script = str(EXAMPLES / "demo_auth_backend.py")
    without = Process([sys.executable, script], name="backend-nosecret", cwd=str(ROOT),
                      env={"LHTTP_AUTH_JWT_SECRET": ""})
    await eventually(lambda: not without.alive(), what="the backend without a secret to exit")
    assert without.stop() != 0 and "LHTTP_AUTH_JWT_SECRET" in without.log()

    port = freePort()
    backend = Process([sys.executable, script, "--port", str(port), "--origin", "http://127.0.0.1:8081"],
                      name="demo-auth-backend", cwd=str(ROOT), env={"LHTTP_AUTH_JWT_SECRET": secret})
    try:
        await eventually(lambda: portAccepts(port) or not backend.alive(), what="the backend")
        url = f"http://127.0.0.1:{port}/token"
        answer = await treq.post(url, json={"nick": "alice"}, headers={"Origin": "http://127.0.0.1:8081"})
        assert answer.code == 200
        assert answer.headers.getRawHeaders("access-control-allow-origin") == ["http://127.0.0.1:8081"]
        document = await answer.json()
        claims = jwt.decode(document["token"], secret, algorithms=["HS256"])
        assert (claims["sub"], claims["exp"] - claims["iat"], document["user"], document["expires"]) == \
            ("alice", 600, "alice", claims["exp"])
        for nick in ("a.b", "a#b", "", "x" * 33, None, 7):
            refused = await treq.post(url, json={"nick": nick})
            assert refused.code == 400, nick
        huge = await treq.post(url, data=b"{" + b" " * 5000 + b"}")
        assert huge.code == 413
        stranger = await treq.request("OPTIONS", url, headers={"Origin": "http://evil.example"})
        assert stranger.headers.getRawHeaders("access-control-allow-origin") is None
        assert "eyJ" not in backend.log()
    finally:
        backend.stop()
