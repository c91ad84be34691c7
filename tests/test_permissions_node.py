"""
Channel permissions attacked on real C{twistd lhttp} nodes, by a client
that is not the victim (issue 21): the owner's channel, user-limited
channels and spoofed user ids, C{POST /publish} on a C{pub:nobody}
channel, subscription tokens for another channel or user, capabilities;
after each refusal the attacker's connection works as before; a node
without rules behaves as it always did.

Who each client is comes from the node's own authentication: each client
sends C{LHTTP/1.0 connect} with a real HS256 JWT signed with the node's
secret (its capabilities in the C{caps} claim); subscription tokens are
real HS256 JWTs checked by the same verifier.
"""

import json
import shlex
import time

import jwt
import pytest
import pytest_twisted
import treq

from lhttp.testing import makeToken
from lhttpclients import barrier, client, signedIn
from procs import LHTTPNode

SECRET = "the node's subscription token secret, 32+ bytes"

RULES = (
    "user.{sub}=sub:owner,pub:owner,history:owner,presence:owner",
    "dialog.>=sub:members,pub:members,history:members,presence:members",
    "private.*=sub:token,pub:token,history:token",
    "alerts.*=sub:anyone,pub:nobody",
    # One-token channels (the tests' barriers): open.
    "*=sub:anyone,pub:anyone",
)


def nodeOptions(*more):
    options = []
    for rule in RULES:
        options += ["--channel", rule]
    return [
        *options, "--history", "user.*=10", "--history", "dialog.>=10",
        "--presence", "user.*", "--presence", "dialog.>",
        *more,
    ]


def startNode(*more, env=None):
    return LHTTPNode(
        *nodeOptions(*more), env={"LHTTP_AUTH_JWT_SECRET": SECRET, **(env or {})},
    ).waitReady()


@pytest.fixture(scope="module")
def node():
    started = startNode()
    yield started
    started.stop()


async def connectAs(node, user, caps=None):
    """
    A client authenticated as C{user} by the node: C{connect} with a JWT
    signed with the node's secret, C{caps} as its C{caps} claim.
    """
    claims = {} if caps is None else {"caps": caps}
    return await signedIn(node.url, makeToken(SECRET, user, expiresIn=3600, **claims), user)


async def refused(c, command, channel):
    """
    The next message is the design's 403 for C{channel}, answering
    C{command}; its body says what was refused.
    """
    m = await c.nextMessage(10)
    assert m.command == "error"
    assert m.headers == [
        ("lhttp-node", "reply"), ("status", "403"), ("reason", "forbidden"),
        ("command", command), ("channel", channel),
    ], m.headers
    return m.body.decode()


async def stillWorks(c):
    """
    Nothing else changed for the connection: it round-trips on an allowed
    channel, and nothing arrived meanwhile.
    """
    assert await barrier(c) == []


def subscriptionToken(user, channel, ttl=60, secret=SECRET):
    claims = {"channel": channel, "exp": int(time.time()) + ttl}
    if user is not None:
        claims["sub"] = user
    return jwt.encode(claims, secret, "HS256")


@pytest_twisted.ensureDeferred
async def test_ownerChannel(node):
    """
    Alice cannot subscribe to, publish to, read the history or the
    presence of C{user.b}, Bob's; Bob can.
    """
    bob = await connectAs(node, "b")
    bob.send("s", [("subscribe", "user.b")])
    await stillWorks(bob)
    alice = await connectAs(node, "a")
    for command, headers, verb in (
        ("chat", [("subscribe", "user.b")], "subscribe to"),
        ("chat", [("subscribe", "user.b"), ("since", "0")], "subscribe to"),
        ("chat", [("publish", "user.b")], "publish to"),
        ("history", [("channel", "user.b")], "read the history of"),
        ("presence", [("channel", "user.b")], "read the presence of"),
        ("presence-stats", [("channel", "user.b")], "read the presence of"),
    ):
        alice.send(command, headers, b"from alice")
        assert await refused(alice, command, "user.b") == f"{verb} 'user.b' is not allowed"
        await stillWorks(alice)
    # A message naming an allowed channel and the forbidden one: refused
    # whole (not subscribed to user.a either).
    alice.send("chat", [("subscribe", "user.a user.b")])
    await refused(alice, "chat", "user.b")
    assert await barrier(bob) == []
    bob.publish("user.b", "note", body=b"to myself")
    assert (await bob.nextMessage(10)).body == b"to myself"
    # Alice got none of it, and her own channel works.
    alice.send("s", [("subscribe", "user.a")])
    alice.publish("user.a", "note", body=b"mine")
    assert (await alice.nextMessage(10)).body == b"mine"
    bob.send("presence", [("channel", "user.b")])
    listing = await bob.nextMessage(10)
    assert (listing.command, listing.getHeader("count")) == ("presence", "1")


@pytest_twisted.ensureDeferred
async def test_userLimitedChannelSpoofing(node):
    """
    Only b and c are members of C{dialog.#b,c}: ids that contain both, in
    another case, in Cyrillic look-alikes, or with a C{#}, are not.
    """
    channel = "dialog.#b,c"
    b = await connectAs(node, "b")
    c = await connectAs(node, "c")
    for member in (b, c):
        member.send("s", [("subscribe", channel)])
        await stillWorks(member)
    attackers = {
        "a": channel, "b,c": channel, "B": channel, "C": channel,
        "\u042c": channel,              # Cyrillic soft sign, looks like b
        "\u0441": channel,              # Cyrillic es, looks like c
        "x#b": "dialog.#x#b",           # members are after the last #: b only
    }
    for user, target in attackers.items():
        attacker = await connectAs(node, user)
        for command, headers in (
            ("chat", [("subscribe", target)]),
            ("chat", [("publish", target)]),
            ("history", [("channel", target)]),
            ("presence", [("channel", target)]),
        ):
            attacker.send(command, headers, b"spoofed")
            await refused(attacker, command, target)
        await stillWorks(attacker)
        attacker.sendClose(1000)
        await attacker.closed
    # The members heard nothing, and talk.
    assert await barrier(c) == []
    b.publish(channel, "chat", body=b"hi c")
    assert (await c.nextMessage(10)).body == b"hi c"


@pytest_twisted.ensureDeferred
async def test_subscriptionTokens(node):
    alice = await connectAs(node, "alice")
    bob = await connectAs(node, "bob")
    bob.send("s", [("subscribe", "private.x"), ("channel-token", subscriptionToken("bob", "private.x"))])
    await stillWorks(bob)
    attempts = {
        "another channel": subscriptionToken("alice", "private.y"),
        "another user": subscriptionToken("bob", "private.x"),
        "expired": subscriptionToken("alice", "private.x", ttl=-60),
        "another key": subscriptionToken("alice", "private.x", secret="not the node's secret, at least 32 bytes"),
        "anonymous": subscriptionToken(None, "private.x"),
        "garbage": "not.a.jwt",
    }
    for why, token in attempts.items():
        alice.send("join", [("subscribe", "private.x"), ("channel-token", token)])
        body = await refused(alice, "join", "private.y" if why == "another channel" else "private.x")
        assert token not in body, why
        await stillWorks(alice)
    alice.send("join", [("subscribe", "private.x")])
    await refused(alice, "join", "private.x")
    bob.publish("private.x", "chat", body=b"secret")
    assert (await bob.nextMessage(10)).body == b"secret"
    assert await barrier(alice) == []
    # A good one.
    alice.send("join", [("subscribe", "private.x"), ("channel-token", subscriptionToken("alice", "private.x"))])
    await stillWorks(alice)
    bob.publish("private.x", "chat", body=b"for both")
    assert (await alice.nextMessage(10)).body == b"for both"
    assert (await bob.nextMessage(10)).body == b"for both"
    # At its exp the subscription it allowed ends, and alice is told.
    alice.send("join", [("subscribe", "private.brief"),
                        ("channel-token", subscriptionToken("alice", "private.brief", ttl=2))])
    await stillWorks(alice)
    ended = await alice.nextMessage(10)
    assert ended.headers == [("lhttp-node", "reply"), ("channel", "private.brief"),
                             ("reason", "subscription token expired")]
    assert ended.command == "unsubscribed"
    bob.send("s", [("subscribe", "private.brief"),
                   ("channel-token", subscriptionToken("bob", "private.brief"))])
    bob.publish("private.brief", "chat", body=b"too late")
    assert (await bob.nextMessage(10)).body == b"too late"
    assert await barrier(alice) == []
    assert not any(token in node.log() for token in attempts.values() if len(token) > 20)


@pytest_twisted.ensureDeferred
async def test_capabilities(node):
    """
    Capabilities decide for the channels they match: a may subscribe to
    C{user.b}, not publish to it; elsewhere the rules decide.
    """
    a = await connectAs(node, "a", [{"channels": ["user.b"], "allow": ["sub"]}])
    a.send("s", [("subscribe", "user.b")])
    await stillWorks(a)
    a.send("chat", [("publish", "user.b")])
    await refused(a, "chat", "user.b")
    a.send("s", [("subscribe", "user.a")])
    await stillWorks(a)


@pytest_twisted.ensureDeferred
async def test_publishEndpoint(node):
    """
    Without a publish token a /publish caller is anonymous: 403 on a
    C{pub:nobody} channel. With one it is the trusted backend.
    """
    listener = await connectAs(node, "a")
    listener.send("s", [("subscribe", "alerts.1")])
    await stillWorks(listener)
    response = await treq.post(node.publishURL, b"LHTTP/1.0 alert\r\npublish:alerts.1\r\n\r\nx")
    assert response.code == 403
    assert json.loads(await response.content()) == {
        "status": 403, "reason": "forbidden", "channel": "alerts.1",
        "detail": "publish to 'alerts.1' is not allowed",
    }
    assert await barrier(listener) == []

    trusted = startNode(env={"LHTTP_PUBLISH_TOKEN": "backend token"})
    try:
        listener = await connectAs(trusted, "b")
        listener.send("s", [("subscribe", "alerts.1 user.b")])
        await stillWorks(listener)
        message = b"LHTTP/1.0 alert\r\npublish:alerts.1 user.b\r\n\r\nfrom the backend"
        response = await treq.post(trusted.publishURL, message)
        assert response.code == 401
        response = await treq.post(trusted.publishURL, message,
                                   headers={"Authorization": "Bearer backend token"})
        assert response.code == 200, await response.content()
        assert [(await listener.nextMessage(10)).body for _ in range(2)] == [b"from the backend"] * 2
    finally:
        trusted.stop()


@pytest_twisted.ensureDeferred
async def test_noRulesNoAuthAsBefore(lhttpNode):
    """
    A node without --channel rules and without authentication: anyone
    subscribes, publishes, reads history and presence of any channel.
    """
    bob = await client(lhttpNode.url)
    bob.send("s", [("subscribe", "user.b dialog.#b,c")])
    assert await barrier(bob) == []
    eve = await client(lhttpNode.url)
    eve.send("s", [("subscribe", "user.b"), ("publish", "user.b dialog.#b,c")], b"eve")
    assert [(await bob.nextMessage(10)).body for _ in range(2)] == [b"eve", b"eve"]
    response = await treq.post(lhttpNode.publishURL, b"LHTTP/1.0 n\r\npublish:user.b\r\n\r\nhttp")
    assert response.code == 200
    assert (await bob.nextMessage(10)).body == b"http"


@pytest_twisted.ensureDeferred
async def test_docsChatRules():
    """
    docs/security.rst's chat rules on a real node do what the page says.
    """
    from docsnippets import blockWith

    words = shlex.split(blockWith("sh", "--channel 'user.{sub}", ["docs/security.rst"]).replace("\\\n", " "))
    rules = [words[i + 1] for i, w in enumerate(words) if w == "--channel"]
    assert len(rules) == 4
    options = [o for rule in rules for o in ("--channel", rule)]
    # Anonymous readers, as the page says: --auth-anonymous.
    chat = LHTTPNode(*options, "--auth-anonymous",
                     env={"LHTTP_AUTH_JWT_SECRET": SECRET}).waitReady()
    try:
        alice, bob, carol = [await connectAs(chat, u) for u in ("alice", "bob", "carol")]
        anonymous = await client(chat.url)
        alice.send("s", [("subscribe", "user.alice dialog.#alice,bob room.1")])
        bob.send("s", [("subscribe", "dialog.#alice,bob")])
        alice.send("chat", [("subscribe", "user.bob")])
        await refused(alice, "chat", "user.bob")
        alice.send("chat", [("publish", "user.alice")])
        await refused(alice, "chat", "user.alice")
        carol.send("chat", [("subscribe", "dialog.#alice,bob")])
        await refused(carol, "chat", "dialog.#alice,bob")
        anonymous.send("chat", [("publish", "room.1")])
        await refused(anonymous, "chat", "room.1")
        alice.send("chat", [("publish", "news.today")])
        await refused(alice, "chat", "news.today")
        bob.publish("dialog.#alice,bob", "chat", body=b"hi alice")
        assert (await alice.nextMessage(10)).body == b"hi alice"
        carol.publish("room.1", "chat", body=b"hello room")
        assert (await alice.nextMessage(10)).body == b"hello room"
        # Anonymous readers subscribe to the rooms and the news (a refusal
        # would refuse both).
        anonymous.send("s", [("subscribe", "news.today room.2")])
        # Handled once the next message's refusal is in.
        anonymous.send("chat", [("publish", "room.2")])
        await refused(anonymous, "chat", "room.2")
        carol.publish("room.2", "chat", body=b"hello readers")
        assert (await anonymous.nextMessage(10)).body == b"hello readers"
    finally:
        chat.stop()
