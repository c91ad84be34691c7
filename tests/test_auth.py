"""
Connection authentication end to end (issue 21; docs/authentication.rst):
real C{twistd lhttp} nodes, real WebSocket clients, and a real HTTP server
in the test process playing the JWKS endpoint and the connect proxy (slow,
huge, garbage, refusing).

The attacker is always a second client, never the victim: its forged,
expired or misdirected tokens are refused with 401 and close 4401, its
messages before C{connect} do nothing, and the victim meanwhile keeps
round-tripping. No token appears in the node's log, C{/health} or
C{/metrics}.
"""

import json
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from lhttp.client import connect
from lhttp.testing import KeyPair, makeToken
from lhttpclients import barrier, client, eventually
from procs import LHTTPNode, freePort
from test_auth_unit import hs256With

SECRET = "an-integration-secret-of-32-bytes-or-more"

# Once authentication is on, channel permissions deny by default
# (docs/security.rst): the rules grant users what each test needs. The
# barriers' channels are one token; the rooms carry presence.
BARRIERS = ("--channel", "*=sub:users,pub:users")
ROOMS = ("--channel", "room.*=sub:users,pub:users,presence:users", *BARRIERS)


class Backend(Resource):
    """
    The application's side: C{/jwks} (a JWKS document) and C{/auth} (the
    connect proxy: the user is the C{session} cookie). C{jwksMode} and
    C{proxyMode}: C{"ok"}, C{"slow"} (never answers), C{"huge"},
    C{"garbage"}, or an HTTP status code.
    """

    isLeaf = True

    def __init__(self):
        Resource.__init__(self)
        self.keys = []
        self.jwksMode = self.proxyMode = "ok"
        self.waiting = []
        self.proxyRequests = []

    def render(self, request):
        if request.path == b"/jwks":
            mode, answer = self.jwksMode, {"keys": self.keys}
        else:
            body = json.loads(request.content.read())
            self.proxyRequests.append((request.getHeader("cookie"), body))
            cookie = request.getHeader("cookie") or ""
            user = cookie.partition("session=")[2]
            mode, answer = self.proxyMode, {"user": user, "expires": int(time.time()) + 3600}
        if mode == "slow":
            self.waiting.append(request)
            return NOT_DONE_YET
        if mode == "huge":
            return b"[" * (2 * 1024 * 1024)
        if mode == "garbage":
            return b"<html>garbage</html>"
        if isinstance(mode, int):
            request.setResponseCode(mode)
            return b"{}"
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()


@pytest_twisted.async_yield_fixture
async def backend():
    resource = Backend()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    resource.url = f"http://127.0.0.1:{port.getHost().port}"
    yield resource
    for request in resource.waiting:
        request.transport.abortConnection()
    await port.stopListening()


@pytest.fixture
def secretFile(tmp_path):
    path = tmp_path / "jwt-secret"
    path.write_text(SECRET + "\n")
    return str(path)


async def authenticated(node, user, token=None, headers=None):
    """
    A client that sent C{connect} with a token for C{user} and was
    answered 200.
    """
    c = await connect(reactor, node.url, headers)
    c.send("connect", [("token", token or makeToken(SECRET, user, expiresIn=3600))])
    reply = await c.nextMessage(10)
    assert (reply.command, reply.getHeader("status"), reply.getHeader("user")) == (
        "connect", "200", user), reply
    return c


async def refusedWith(node, headers, status, code, reason=None, timeout=10):
    """
    A new client sends C{connect} with C{headers}: it gets an error reply
    with C{status} (and C{reason} as its body) and is closed with C{code}.
    """
    attacker = await client(node.url)
    attacker.send("connect", headers)
    reply = await attacker.nextMessage(timeout)
    assert reply.toBytes().startswith(
        f"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:{status}\r\n".encode()), reply
    assert reply.getHeader("command") == "connect"
    if reason is not None:
        assert reply.body.decode() == reason
    wasClean, closeCode, _ = await attacker.closed
    assert closeCode == code
    return reply


def leaks(node, tokens, *texts):
    """
    The tokens found in the node's log or in C{texts}.
    """
    found = []
    for text in (node.log(), *texts):
        for token in tokens:
            # The signature alone must not be there either.
            if token in text or token.rsplit(".", 1)[-1] in text and len(token.rsplit(".", 1)[-1]) > 8:
                found.append(token)
    return found


@pytest_twisted.ensureDeferred
async def test_forgedTokensAreRefusedAndNeverLogged(startNode, secretFile, tmp_path):
    rsa = KeyPair("RSA")
    keyFile = tmp_path / "rsa.pem"
    keyFile.write_bytes(rsa.publicPEM)
    accessLog = tmp_path / "access.log"
    node = startNode("--auth-jwt-secret-file", secretFile, "--auth-jwt-public-key", str(keyFile),
                     "--auth-audience", "chat", "--auth-issuer", "https://id.example",
                     "--access-log", str(accessLog), "--presence", "user.*",
                     "--channel", "user.{sub}=sub:owner,pub:owner,presence:owner", *BARRIERS)
    good = dict(aud="chat", iss="https://id.example")
    victim = await authenticated(node, "alice", makeToken(SECRET, "alice", expiresIn=3600, **good))
    victim.subscribe("user.alice")
    await barrier(victim)

    now = int(time.time())
    import jwt

    attacks = [
        ("unsigned", jwt.encode({"sub": "alice", **good}, None, algorithm="none").rstrip("."),
         "malformed token"),
        ("alg none", jwt.encode({"sub": "alice", **good}, None, algorithm="none"),
         "unsigned tokens (alg 'none') are not accepted"),
        ("key confusion", hs256With(rsa.publicPEM, {"sub": "alice", **good}), "bad signature"),
        ("expired", makeToken(SECRET, "alice", exp=now - 60, **good), "token expired"),
        ("nbf", makeToken(SECRET, "alice", nbf=now + 600, **good), "token not yet valid"),
        ("aud", makeToken(SECRET, "alice", aud="admin", iss="https://id.example"), "wrong audience"),
        ("iss", makeToken(SECRET, "alice", aud="chat", iss="https://evil.example"), "wrong issuer"),
        ("other secret", makeToken("not-the-secret-but-32-bytes-long!!", "alice", **good),
         "bad signature"),
        ("no sub", makeToken(SECRET, None, **good), "no 'sub' claim"),
    ]
    for name, token, reason in attacks:
        await refusedWith(node, [("token", token)], 401, 4401, reason)
    await refusedWith(node, [], 401, 4401, "no 'token' header")

    # Before connect, a message does nothing: 401, and the victim's
    # channel hears nothing.
    attacker = await client(node.url)
    attacker.send("chat", [("subscribe", "user.alice"), ("publish", "user.alice")], b"forged")
    attacker.send("presence", [("channel", "user.alice")])
    for command in ("chat", "presence"):
        reply = await attacker.nextMessage(10)
        assert reply.toBytes() == (
            b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:401\r\nreason:unauthorized\r\n"
            b"command:" + command.encode() + b"\r\n\r\nsend 'LHTTP/1.0 connect' with a 'token' "
            b"header first")
    assert await barrier(victim) == []
    attacker.transport.loseConnection()

    # The signature of a good token, the attackers' tokens: nowhere.
    health = await (await treq.get(node.httpURL + "health")).text()
    metrics = await (await treq.get(node.httpURL + "metrics")).text()
    tokens = [token for _, token, _ in attacks] + [makeToken(SECRET, "alice", expiresIn=3600, **good)]
    await eventually(lambda: accessLog.exists() and accessLog.stat().st_size, 10, what="the access log")
    assert leaks(node, tokens, health, metrics, accessLog.read_text()) == []


@pytest_twisted.ensureDeferred
async def test_refreshWithAnotherUsersTokenKeepsTheIdentity(startNode, secretFile):
    node = startNode("--auth-jwt-secret-file", secretFile, "--presence", "room.*", *ROOMS)
    alice = await authenticated(node, "alice")
    alice.subscribe("room.1")
    await barrier(alice)
    alice.send("refresh", [("token", makeToken(SECRET, "bob", expiresIn=3600))])
    reply = await alice.nextMessage(10)
    assert reply.toBytes() == (b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:403\r\n"
                               b"reason:forbidden\r\ncommand:refresh\r\n\r\ntoken is for another user")
    alice.send("presence", [("channel", "room.1")])
    presence = await alice.nextMessage(10)
    assert presence.command == "presence" and b"alice" in presence.body and b"bob" not in presence.body


@pytest_twisted.ensureDeferred
async def test_expiryNoticeRefreshAndClose(startNode, secretFile):
    node = startNode("--auth-jwt-secret-file", secretFile, "--auth-refresh-grace", "2",
                     "--auth-leeway", "0", *BARRIERS)
    soon = int(time.time()) + 2
    refreshing = await authenticated(node, "alice", makeToken(SECRET, "alice", exp=soon))
    lazy = await authenticated(node, "bob", makeToken(SECRET, "bob", exp=soon))
    for c in (refreshing, lazy):
        notice = await c.nextMessage(10)
        assert notice.toBytes() == (b"LHTTP/1.0 refresh\r\nlhttp-node:reply\r\nstatus:401\r\n"
                                    b"reason:token expired\r\ngrace:2\r\n\r\n")
    noticed = time.monotonic()
    later = int(time.time()) + 3600
    refreshing.send("refresh", [("token", makeToken(SECRET, "alice", exp=later))])
    reply = await refreshing.nextMessage(10)
    assert reply.toBytes() == (f"LHTTP/1.0 refresh\r\nlhttp-node:reply\r\nstatus:200\r\n"
                               f"user:alice\r\nexpires:{later}\r\n\r\n").encode()
    wasClean, code, _ = await lazy.closed
    assert code == 4419
    assert time.monotonic() - noticed < 2 + 1.5
    # The refreshed one keeps working past the grace.
    await eventually(lambda: time.monotonic() - noticed > 2.5, 10, what="the grace to pass")
    assert await barrier(refreshing) == []
    assert refreshing.closeCode is None


@pytest_twisted.ensureDeferred
async def test_notAuthenticatedInTimeIsClosed(startNode, secretFile):
    node = startNode("--auth-jwt-secret-file", secretFile, "--handshake-timeout", "1")
    started = time.monotonic()
    idle = await client(node.url)
    wasClean, code, _ = await idle.closed
    assert code == 4401
    assert time.monotonic() - started < 1 + 1.5


@pytest_twisted.ensureDeferred
async def test_presenceJoinCarriesTheSub(startNode, secretFile):
    """
    With --demo, a client's C{nick} header names it; with authentication
    on, only its token does.
    """
    node = startNode("--auth-jwt-secret-file", secretFile, "--demo", *ROOMS)
    alice = await authenticated(node, "alice")
    alice.subscribe("room.1")
    await barrier(alice)
    mallory = await authenticated(node, "mallory")
    mallory.send("chat", [("subscribe", "room.1"), ("nick", "alice")])
    join = await alice.nextMessage(10)
    assert join.command == "join" and join.getHeader("user") == "mallory", join


# The JWKS endpoint.

@pytest.mark.parametrize("mode", ["slow", "huge", "garbage"])
@pytest_twisted.ensureDeferred
async def test_jwksUnavailable(startNode, backend, mode):
    """
    A token whose key the node must fetch while the JWKS endpoint fails:
    503 and close 4503 within the 5 s timeout; a connection authenticated
    before keeps round-tripping meanwhile.
    """
    old, new = KeyPair("RSA"), KeyPair("EC")
    backend.keys = [old.jwk("k1")]
    node = startNode("--auth-jwks-url", backend.url + "/jwks", *BARRIERS)
    alice = await authenticated(node, "alice", makeToken(old.privatePEM, "alice", "RS256",
                                                         headers={"kid": "k1"}))
    backend.jwksMode = mode
    backend.keys.append(new.jwk("k2"))
    started = time.monotonic()
    bob = await client(node.url)
    bob.send("connect", [("token", makeToken(new.privatePEM, "bob", "ES256", headers={"kid": "k2"}))])
    if mode == "slow":
        # While bob waits for the keys, alice is served.
        for _ in range(5):
            assert await barrier(alice) == []
        assert bob.pending() == 0 and bob.closeCode is None
    reply = await bob.nextMessage(10)
    assert reply.toBytes().startswith(
        b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:503\r\nreason:authentication unavailable"
        b"\r\ncommand:connect\r\n\r\n"), reply
    assert (await bob.closed)[1] == 4503
    assert time.monotonic() - started < 5 + 2
    assert await barrier(alice) == []


@pytest_twisted.ensureDeferred
async def test_jwksRotation(startNode, backend):
    """
    A new key id is fetched; a forged kid is refused (503 while the node
    will not fetch again yet).
    """
    old, new = KeyPair("RSA"), KeyPair("Ed25519")
    backend.keys = [old.jwk("k1")]
    node = startNode("--auth-jwks-url", backend.url + "/jwks")
    await authenticated(node, "alice", makeToken(old.privatePEM, "alice", "RS256", headers={"kid": "k1"}))
    backend.keys.append(new.jwk("k2"))
    await authenticated(node, "bob", makeToken(new.privatePEM, "bob", "EdDSA", headers={"kid": "k2"}))
    await refusedWith(node, [("token", makeToken(new.privatePEM, "eve", "EdDSA", headers={"kid": "k1"}))],
                      401, 4401, "no key of this server verifies 'EdDSA' tokens")
    # An unknown kid within 30 s of the last fetch: the node will not
    # fetch again yet, so it cannot tell (503, retry with backoff).
    await refusedWith(node, [("token", makeToken(KeyPair().privatePEM, "eve", "RS256",
                                                 headers={"kid": "k9"}))], 503, 4503,
                      "unknown key id; the server fetches its keys again shortly, try again")


# The connect proxy.

@pytest_twisted.ensureDeferred
async def test_connectProxy(startNode, backend):
    node = startNode("--auth-proxy", backend.url + "/auth", "--auth-proxy-timeout", "2",
                     "--auth-proxy-header", "X-Csrf", *BARRIERS)
    alice = await connect(reactor, node.url, {"Cookie": "session=alice", "X-Csrf": "c1",
                                              "Authorization": "Bearer secret"})
    # Sent at once, unasked.
    reply = await alice.nextMessage(10)
    assert reply.toBytes().startswith(
        b"LHTTP/1.0 connect\r\nlhttp-node:reply\r\nstatus:200\r\nuser:alice\r\nexpires:")
    assert backend.proxyRequests[-1] == ("session=alice", {"peer": "127.0.0.1", "refresh": False})
    assert await barrier(alice) == []

    for mode, status, code in (("slow", 503, 4503), ("garbage", 503, 4503), ("huge", 503, 4503),
                               (500, 503, 4503), (401, 401, 4401), (403, 401, 4401)):
        backend.proxyMode = mode
        started = time.monotonic()
        other = await connect(reactor, node.url, {"Cookie": "session=mallory"})
        # Its message waits for the proxy's answer, then is refused.
        other.send("chat", [("publish", "room.1")], b"x")
        if mode == "slow":
            for _ in range(3):
                assert await barrier(alice) == []
        reply = await other.nextMessage(10)
        assert (reply.command, reply.getHeader("status"), reply.getHeader("command")) == (
            "error", str(status), "connect"), (mode, reply)
        assert (await other.closed)[1] == code
        assert time.monotonic() - started < 2 + 2
        assert await barrier(alice) == []


@pytest_twisted.ensureDeferred
async def test_connectProxyDown(startNode):
    node = startNode("--auth-proxy", f"http://127.0.0.1:{freePort()}/auth")
    other = await client(node.url)
    reply = await other.nextMessage(10)
    assert (reply.getHeader("status"), reply.getHeader("reason")) == ("503", "authentication unavailable")
    assert (await other.closed)[1] == 4503


def test_twoMethodsRefuseToStart(secretFile):
    node = LHTTPNode("--auth-proxy", "http://127.0.0.1:1/auth",
                     env={"LHTTP_AUTH_JWT_SECRET": SECRET})
    try:
        node.popen.wait(30)
        assert node.popen.returncode != 0
        assert "are two authentication methods; a node uses one" in node.log()
        assert SECRET not in node.log()
    finally:
        node.stop()




# docs/authentication.rst's worked examples, as pasted (ports swapped).

def _userEnv():
    import os
    import sys

    return {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}


def _startShell(command, name):
    from procs import ROOT, Process

    from test_readme import keepPythonPath

    return Process(["bash", "-c", keepPythonPath(command)], cwd=str(ROOT), env=_userEnv(), name=name)


@pytest_twisted.ensureDeferred
async def test_docsJWTExample(tmp_path):
    import sys

    from docsnippets import blockWith
    from procs import Process, portAccepts

    port = freePort()
    node = _startShell(blockWith("sh", "LHTTP_AUTH_JWT_SECRET=change-me").replace("8081", str(port)),
                       "auth-doc-node")
    try:
        await eventually(lambda: portAccepts(port) or not node.alive(), what="the node")
        assert node.alive(), node.log()
        script = tmp_path / "jwt_example.py"
        script.write_text(blockWith("python", "def tokenFor(user)").replace("8081", str(port)))
        example = Process([sys.executable, str(script)], name="jwt-example")
        await eventually(lambda: not example.alive(), 30, what="the example to finish")
        assert example.log().splitlines()[-2:] == ["connect 200 alice", "b'hi'"], example.log()
        example.stop()
        # And the node refuses a client without a token.
        stranger = await client(f"ws://127.0.0.1:{port}/")
        stranger.send("chat", [("publish", "room.1")])
        assert (await stranger.nextMessage(10)).getHeader("status") == "401"
    finally:
        node.stop()


@pytest_twisted.ensureDeferred
async def test_docsProxyExample(tmp_path):
    import sys

    from docsnippets import blockWith
    from procs import Process, portAccepts

    backendPort, port = freePort(), freePort()
    script = tmp_path / "proxy_backend.py"
    script.write_text(blockWith("python", "class ConnectProxy").replace("8000", str(backendPort)))
    backend = Process([sys.executable, str(script)], name="proxy-backend")
    node = _startShell(blockWith("sh", "--auth-proxy http://127.0.0.1:8000")
                       .replace("8000", str(backendPort)).replace("8081", str(port)), "proxy-doc-node")
    try:
        await eventually(lambda: (portAccepts(port) and portAccepts(backendPort))
                         or not node.alive() or not backend.alive(), what="the node and backend")
        assert node.alive() and backend.alive(), node.log() + backend.log()
        alice = await connect(reactor, f"ws://127.0.0.1:{port}/", {"Cookie": "session=s3cr3t-session-id"})
        reply = await alice.nextMessage(10)
        assert (reply.command, reply.getHeader("status"), reply.getHeader("user")) == ("connect", "200", "alice")
        stranger = await connect(reactor, f"ws://127.0.0.1:{port}/", {"Cookie": "session=guess"})
        reply = await stranger.nextMessage(10)
        assert (reply.command, reply.getHeader("status")) == ("error", "401")
        assert (await stranger.closed)[1] == 4401
    finally:
        node.stop()
        backend.stop()
