"""
The SDKs and tools against real C{twistd lhttp} nodes with authentication
on (issue 21): the Python client (L{lhttp.client.ReconnectingClient}),
C{lhttp listen/send --token} and the C SDK (C{sdk/c/tests/auth_client.c}),
on a node started with C{LHTTP_AUTH_JWT_SECRET}, C{--channel} rules and a
publish token for C{/publish} and C{/api}. (The SDKs' unit tests run
against tests/authnode.py, a scripted fake node.)

What each test attacks; an attacker is always a second client, never the
victim, and the victim keeps working:
- a real node accepts the SDK's connect message, gives user and expires,
  and accepts the SDK's refresh before expiry;
- a token signed with another secret: the Python client retries once with
  getToken, then stops with Unauthorized (4401); the CLI says so in one
  line and exits 1; the C SDK reports 401 then 4401; meanwhile a victim on
  the channel the forger publishes to hears none of it and round-trips;
- subscription tokens: the SDK's channel-token header is accepted for its
  channel; a second client with a token for another channel, or the
  victim's token, gets 403 and none of the victim's messages;
- /api/unsubscribe: the client drops the channel (onUnsubscribed) and does
  not subscribe to it again; /api/disconnect: 4403 stops the client (no
  reconnect), reconnect:true (4000) reconnects with a fresh token; another
  user on the same channel is untouched by either.
"""

import json
import subprocess
import sys
import tempfile
import time
import urllib.request

import jwt
import pytest
import pytest_twisted
import treq
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor

from lhttp.client import ReconnectingClient, Unauthorized
from lhttpclients import eventually
from test_c_sdk import sdkBuild  # noqa: F401  (the C SDK built once, with auth_client)

SECRET = "integration-secret-of-at-least-32-bytes!"
PUBLISH_TOKEN = "publish-token-for-the-api"
CLI = [sys.executable, "-m", "lhttp.cli"]


def token(user, ttl=3600, secret=SECRET, **claims):
    now = int(time.time())
    return jwt.encode({"sub": user, "exp": now + ttl, "iat": now, **claims}, secret, algorithm="HS256")


def channelToken(user, channel, ttl=3600):
    return token(user, ttl, channel=channel)


@pytest.fixture
def realAuthNode(startNode):
    """
    A real node with HS256 JWT auth and channel rules, and the publish
    token for /publish and /api.
    """
    return startNode(
        "--channel", "user.{sub}=sub:owner,pub:nobody",
        "--channel", "room.*=sub:users,pub:users",
        "--channel", "private.*=sub:token,pub:users",
        env={"LHTTP_AUTH_JWT_SECRET": SECRET, "LHTTP_PUBLISH_TOKEN": PUBLISH_TOKEN},
    )


def reconnecting(node, **options):
    client = ReconnectingClient(
        reactor, node.url,
        retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=1.0, jitter=lambda: 0),
        **options,
    )
    client.errors = []
    client.onAuthError = client.errors.append
    client.dropped = []
    client.onUnsubscribed = lambda channel, reason: client.dropped.append((channel, reason))
    client.startService()
    return client


async def victimOn(node, channel="room.1"):
    """
    A client (user C{victor}) subscribed to C{channel}, recording what it
    receives.
    """
    victim = reconnecting(node, token=token("victor"))
    victim.received = []
    victim.onMessage = victim.received.append
    victim.subscribe(channel)
    await victim.whenConnected().addTimeout(10, reactor)
    await victim.sync(10)
    return victim


async def stillRoundTrips(victim, channel="room.1"):
    """
    The victim heard nothing but its own messages, and its own publish
    comes back.
    """
    body = f"victim {time.monotonic()}".encode()
    victim.publish(channel, "chat", [], body)
    await eventually(lambda: body in [m.body for m in victim.received], 10, "the victim's round trip")
    assert all(m.body.startswith(b"victim ") for m in victim.received), victim.received
    assert victim.stopped is None and victim.errors == []


def listeningVictim(node, channel="room.1"):
    """
    C{lhttp listen --count 1} as user C{victor} on C{channel}, once its
    subscription is in place: the first message it prints is the only one.
    Its standard error goes to a file (C{victim.errors}), read until it says
    C{subscribed}.
    """
    errors = tempfile.TemporaryFile("w+")
    victim = subprocess.Popen(
        [*CLI, "listen", "--token", token("victor"), "--count", "1", node.url, channel],
        stdout=subprocess.PIPE, stderr=errors, text=True,
    )
    victim.errors = errors

    def said():
        errors.seek(0)
        return errors.read()

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and victim.poll() is None:
        if "subscribed" in said():
            return victim
        time.sleep(0.1)
    victim.kill()
    raise AssertionError(f"the listening victim never subscribed: {said()!r}")


def victimHeardOnlyTheBackend(node, victim, channel="room.1"):
    """
    The backend publishes C{after} to C{channel}: the listening victim's
    one message is that (nothing the attacker sent came first).
    """
    request = urllib.request.Request(
        node.publishURL, f"LHTTP/1.0 chat\r\npublish:{channel}\r\n\r\nafter".encode(),
        headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    out, _ = victim.communicate(timeout=20)
    victim.errors.seek(0)
    assert victim.returncode == 0, victim.errors.read()
    [line] = out.splitlines()
    assert line.endswith("after"), line


async def api(node, path, document):
    response = await treq.post(
        node.httpURL + path.lstrip("/"), json.dumps(document).encode(),
        headers={"Authorization": f"Bearer {PUBLISH_TOKEN}", "Content-Type": "application/json"},
    )
    return response.code, await response.text()


async def publish(node, channel, body):
    message = f"LHTTP/1.0 chat\r\npublish:{channel}\r\n\r\n{body}".encode()
    response = await treq.post(node.publishURL, message,
                               headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"})
    await response.content()
    assert response.code == 200, response.code


@pytest_twisted.ensureDeferred
async def test_pythonClientConnectsAndRefreshesBeforeExpiry(realAuthNode):
    given = []

    def getToken():
        given.append(token("alice", ttl=8))
        return given[-1]

    client = reconnecting(realAuthNode, getToken=getToken)
    try:
        await client.whenConnected().addTimeout(10, reactor)
        assert client.user == "alice"
        first = client.expires
        assert first is not None and abs(first - (time.time() + 8)) < 3
        # 8 s left: refreshed a quarter before, at about 6 s.
        await eventually(lambda: len(given) >= 2 and client.expires > first, 15, "a refresh")
        assert client.protocol is not None
        assert client.errors == []
    finally:
        await client.stopService()


@pytest_twisted.ensureDeferred
async def test_pythonClientStopsAfterTwoRefusals(realAuthNode):
    given = []

    def getToken():
        given.append(token("alice", secret="another secret of at least 32 bytes!"))
        return given[-1]

    victim = await victimOn(realAuthNode)
    client = reconnecting(realAuthNode, getToken=getToken)
    # The forger's subscription waits for a connection it never gets.
    client.subscribe("room.1")
    try:
        await eventually(lambda: client.stopped is not None, 15, "the client to stop")
        assert isinstance(client.stopped, Unauthorized)
        assert client.stopped.code == 4401
        assert client.stopped.reply.status == 401
        assert len(given) == 2
        assert not client.running
        await stillRoundTrips(victim)
    finally:
        await client.stopService()
        await victim.stopService()


@pytest_twisted.ensureDeferred
async def test_subscriptionTokenForItsChannelOnly(realAuthNode):
    alice = reconnecting(realAuthNode, token=token("alice"))
    mallory = reconnecting(realAuthNode, token=token("mallory"))
    bob = reconnecting(realAuthNode, token=token("bob"))
    received = {"alice": [], "mallory": []}
    alice.onMessage = received["alice"].append
    mallory.onMessage = received["mallory"].append
    try:
        for c in (alice, mallory, bob):
            await c.whenConnected().addTimeout(10, reactor)
        alice.subscribe("private.x", token=channelToken("alice", "private.x"))
        # Not the victim: a token for another channel, and alice's token.
        mallory.subscribe("private.x", token=channelToken("mallory", "private.y"))
        mallory.subscribe("private.z", token=channelToken("alice", "private.z"))
        await alice.sync(10)
        await mallory.sync(10)
        bob.publish("private.x", "chat", [], b"for alice")
        await eventually(lambda: [m.body for m in received["alice"]] == [b"for alice"], 10, "alice's message")
        refusals = [m for m in received["mallory"] if m.command == "error"]
        assert [m.getHeader("status") for m in refusals] == ["403", "403"]
        assert not any(m.body == b"for alice" for m in received["mallory"])
    finally:
        for c in (alice, mallory, bob):
            await c.stopService()


@pytest_twisted.ensureDeferred
async def test_serverSideUnsubscribeAndDisconnect(realAuthNode):
    client = reconnecting(realAuthNode, token=token("alice"))
    received = []
    client.onMessage = received.append
    other = await victimOn(realAuthNode)
    try:
        client.subscribe("room.1 room.2")
        await client.whenConnected().addTimeout(10, reactor)
        await client.sync(10)
        code, _ = await api(realAuthNode, "/api/unsubscribe", {"user": "alice", "channel": "room.1"})
        assert code == 200
        await eventually(lambda: client.dropped == [("room.1", "unsubscribed by the server")], 5, "unsubscribed")
        assert client.subscriptions == ["room.2"]
        code, answer = await api(realAuthNode, "/api/disconnect", {"user": "alice"})
        assert code == 200 and json.loads(answer)["closed"] == 1
        await eventually(lambda: client.stopped is not None, 5, "the client to stop")
        assert client.stopped.code == 4403
        # Another user on room.1 kept its subscription and its connection.
        await stillRoundTrips(other)
        assert other.connections == 1
    finally:
        await client.stopService()
        await other.stopService()


@pytest_twisted.ensureDeferred
async def test_disconnectWithReconnectGetsAFreshToken(realAuthNode):
    given = []

    def getToken():
        given.append(token("alice"))
        return given[-1]

    client = reconnecting(realAuthNode, getToken=getToken)
    try:
        await client.whenConnected().addTimeout(10, reactor)
        code, _ = await api(realAuthNode, "/api/disconnect", {"user": "alice", "reconnect": True})
        assert code == 200
        await eventually(lambda: client.connections == 2 and client.protocol is not None, 10, "a reconnect")
        assert len(given) == 2
        assert client.stopped is None
    finally:
        await client.stopService()


def test_cliListenWithAToken(realAuthNode, tmp_path):
    good = token("alice")
    listener = subprocess.Popen(
        [*CLI, "listen", "--token", good, "--count", "1", realAuthNode.url, "user.alice"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        # Publish (as the backend) until the subscription is in place.
        while listener.poll() is None and time.monotonic() < deadline:
            subprocess.run(
                ["curl", "-s", "-H", f"Authorization: Bearer {PUBLISH_TOKEN}",
                 "--data-binary", "LHTTP/1.0 chat\r\npublish:user.alice\r\n\r\nhi", realAuthNode.publishURL],
                capture_output=True, timeout=10,
            )
            try:
                listener.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        out, err = listener.communicate(timeout=10)
        assert listener.returncode == 0, err
        assert out.splitlines()[0].endswith("hi")
        assert good not in out + err
        assert good not in realAuthNode.log()
    finally:
        if listener.poll() is None:
            listener.kill()


def test_cliRefusedTokenIsOneLine(realAuthNode):
    bad = token("alice", secret="another secret of at least 32 bytes!")
    victim = listeningVictim(realAuthNode)
    try:
        for command in (["listen", "--token", bad, realAuthNode.url, "room.1"],
                        ["send", "--token", bad, realAuthNode.url,
                         r"LHTTP/1.0 chat\r\npublish:room.1\r\n\r\nforged"]):
            result = subprocess.run([*CLI, *command], capture_output=True, text=True, timeout=30)
            assert result.returncode == 1, result.stderr
            [line] = result.stderr.splitlines()
            assert line.startswith("! the node refused the token: 401 unauthorized"), line
            assert bad not in result.stdout + result.stderr
        victimHeardOnlyTheBackend(realAuthNode, victim)
    finally:
        if victim.poll() is None:
            victim.kill()


def test_cAuthClientAgainstARealNode(sdkBuild, realAuthNode):
    build, _ = sdkBuild
    run = lambda *args: subprocess.run(  # noqa: E731
        [build / "auth_client", realAuthNode.url, *args], capture_output=True, text=True, timeout=30,
    ).stdout.splitlines()
    lines = run(token("alice"), "room.1", token("alice"), token("bob"))
    assert lines[0].startswith("auth connect status=200 user=alice expires=")
    assert lines[1] == "message chat hello"
    assert lines[2].startswith("auth refresh status=200 user=alice")
    assert lines[3].startswith("auth refresh status=403")
    assert lines[-1] == "close 1000"
    # The forger's queued subscribe and "hello" to room.1 never reach the
    # victim there.
    victim = listeningVictim(realAuthNode)
    try:
        refused = run(token("alice", secret="another secret of at least 32 bytes!"), "room.1")
        assert refused[0].startswith("auth connect status=401")
        assert refused[-1] == "close 4401"
        victimHeardOnlyTheBackend(realAuthNode, victim)
    finally:
        if victim.poll() is None:
            victim.kill()
