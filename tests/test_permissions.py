"""
Channel permissions in memory (lhttp.auth.permissions, lhttp.auth.guard):
the C{--channel} grammar and its errors, the decision for every WHO and
every ACTION, user-id spoofing, capabilities, deny by default, and the
guard on a node (subscribe, publish, history, presence, /publish,
subscription tokens) through lhttp.testing's FakeClient. The same attacks
on real nodes: tests/test_permissions_node.py.
"""

import json
import time

import jwt
import pytest
from treq.testing import StubTreq
from twisted.internet.defer import fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from lhttp.auth.guard import permissionsOn
from lhttp.auth.identity import ANONYMOUS, Identity
from lhttp.auth.permissions import (
    ACTIONS, ChannelPermissions, membersOf, parseRule, validUser,
)
from lhttp.config import Config
from lhttp.errors import ChannelForbidden, Unauthorized
from lhttp.options import Options as LHTTPOptions
from lhttp.server import LHTTPServer
from lhttp.testing import FakeClient, memoryServer

RULES = (
    "user.{sub}=sub:owner|token,pub:nobody,history:owner,presence:owner",
    "dialog.>=sub:members,pub:members,history:members,presence:members",
    "room.*=sub:anyone,pub:users,history:users,presence:anyone",
    "private.*=sub:token,history:token,presence:token",
    "news.>=sub:anyone,pub:nobody",
)

ALICE = Identity("alice", method="jwt")
BOB = Identity("bob", method="jwt")


def decide(identity, channel, action, hasToken=False, rules=RULES):
    return ChannelPermissions(rules).allows(identity, channel, action, hasToken)


# The grammar.

def test_ruleParsed():
    rule = parseRule("user.{sub}.>=sub:owner|token, pub:nobody ,history:owner")
    assert rule.pattern == "user.{sub}.>"
    assert rule.grants == {
        "sub": frozenset({"owner", "token"}), "pub": frozenset(), "history": frozenset({"owner"}),
    }
    assert rule.ownerToken == 1


@pytest.mark.parametrize("text, names", [
    ("room.*", "PATTERN=ACTION:WHO"),
    ("room.*=", "PATTERN=ACTION:WHO"),
    ("=sub:anyone", "PATTERN=ACTION:WHO"),
    ("room.*=read:anyone", "unknown action 'read'"),
    ("room.*=sub:everyone", "unknown WHO 'everyone'"),
    ("room.*=sub:anyone|", "unknown WHO ''"),
    ("room.*=sub", "'sub' is not ACTION:WHO"),
    ("room.*=sub:anyone,sub:users", "action 'sub' is given twice"),
    ("room.*=sub:owner", "'owner' needs a {sub} token"),
    ("user.{sub}.{sub}=sub:owner", "at most one {sub}"),
    ("user.x{sub}=sub:owner", "{sub} is a whole token"),
    ("user.{user}=sub:anyone", "{sub} is a whole token"),
    ("room..x=sub:anyone", "pattern 'room..x'"),
    ("room.>.x=sub:anyone", "pattern 'room.>.x'"),
])
def test_grammarErrorsNameTheBadPart(text, names):
    with pytest.raises(ValueError) as caught:
        parseRule(text)
    message = str(caught.value)
    assert names in message and message.startswith("--channel")
    assert "\n" not in message


def test_configAndOptions():
    assert Config(channels=RULES).channels == RULES
    with pytest.raises(ValueError, match="unknown WHO 'all'"):
        Config(channels=("room.*=sub:all",))
    options = LHTTPOptions()
    options.parseOptions(["--channel", RULES[0], "--channel", RULES[2]])
    rules = options.config.channels
    assert [r.pattern for r in rules] == ["user.{sub}", "room.*"]
    from twisted.python.usage import UsageError

    with pytest.raises(UsageError, match="unknown action 'write'"):
        LHTTPOptions().parseOptions(["--channel", "room.*=write:anyone"])


def test_firstMatchingRuleDecides():
    rules = ("room.vip=sub:users", "room.*=sub:anyone")
    assert not decide(ANONYMOUS, "room.vip", "sub", rules=rules)
    assert decide(ANONYMOUS, "room.1", "sub", rules=rules)
    assert decide(ALICE, "room.vip", "sub", rules=rules)


# Every WHO, every ACTION.

@pytest.mark.parametrize("action", ACTIONS)
def test_everyWhoForEveryAction(action):
    def only(who):
        rules = ["user.{sub}=" + f"{action}:{who}"]
        if who != "owner":
            rules += [f"c.*={action}:{who}", f"d.>={action}:{who}"]
        return tuple(rules)

    anyone, users, members, owner, token, nobody = (
        only(w) for w in ("anyone", "users", "members", "owner", "token", "nobody")
    )
    assert decide(ANONYMOUS, "c.1", action, rules=anyone)
    assert decide(ALICE, "c.1", action, rules=anyone)
    assert not decide(ANONYMOUS, "c.1", action, rules=users)
    assert decide(ALICE, "c.1", action, rules=users)
    assert decide(ALICE, "d.#alice,bob", action, rules=members)
    assert not decide(Identity("carol"), "d.#alice,bob", action, rules=members)
    assert not decide(ANONYMOUS, "d.#alice,bob", action, rules=members)
    assert decide(ALICE, "user.alice", action, rules=owner)
    assert not decide(BOB, "user.alice", action, rules=owner)
    assert not decide(ANONYMOUS, "user.alice", action, rules=owner)
    assert decide(ALICE, "c.1", action, hasToken=True, rules=token)
    assert decide(ANONYMOUS, "c.1", action, hasToken=True, rules=token)
    assert not decide(ALICE, "c.1", action, rules=token)
    assert not decide(ALICE, "c.1", action, hasToken=True, rules=nobody)
    assert not decide(ALICE, "c.1", action, rules=nobody)
    # Another action than the one a rule lists: nobody.
    other = next(a for a in ACTIONS if a != action)
    assert not decide(ALICE, "c.1", other, rules=anyone)


def test_namespaceExamples():
    assert decide(ALICE, "user.alice", "sub")
    assert not decide(ALICE, "user.bob", "sub")
    assert not decide(ALICE, "user.alice", "pub")
    assert decide(ALICE, "dialog.#alice,bob", "pub")
    assert decide(BOB, "dialog.x.#alice,bob", "history")
    assert not decide(Identity("carol"), "dialog.#alice,bob", "sub")
    assert decide(ANONYMOUS, "room.1", "sub") and not decide(ANONYMOUS, "room.1", "pub")
    assert decide(ALICE, "room.1", "pub")
    assert not decide(ALICE, "private.x", "sub")
    assert decide(ALICE, "private.x", "sub", hasToken=True)
    assert not decide(ALICE, "news.a.b", "pub")


# Deny by default.

def test_denyByDefault():
    assert not decide(ALICE, "elsewhere", "sub")
    assert not decide(ALICE, "room.1.deeper", "sub")
    # Auth on and no rule at all: everything is refused.
    for action in ACTIONS:
        assert not decide(ALICE, "room.1", action, rules=())


def test_onlyWhenRulesOrAuth():
    assert not permissionsOn(Config())
    assert permissionsOn(Config(channels=("room.*=sub:anyone",)))
    assert permissionsOn(Config(), authenticated=True)
    assert memoryServer().guard is None
    assert memoryServer(channels=("a=sub:anyone",)).guard is not None


# Spoofing user-limited channels and owners.

def test_userIds():
    assert validUser("alice") and validUser("Ünïcode") and validUser("a-b_c@d")
    for bad in (None, "", "b,c", "x#b", "a.b", "a*", "a>", "a b", "a\tb", "a\x00", "a\x7f", 42):
        assert not validUser(bad), bad
    assert membersOf("dialog.#a,b") == ("a", "b")
    assert membersOf("dialog.#x#a,b") == ("a", "b")
    assert membersOf("dialog.plain") == ()


@pytest.mark.parametrize("attacker, channel", [
    ("b,c", "dialog.#b,c"),        # one id naming both members
    ("B", "dialog.#b,c"),          # another letter case
    ("\u0432", "dialog.#b,c"),     # Cyrillic ve (looks like B)
    ("\u0441", "dialog.#b,c"),     # Cyrillic es: looks like c
    ("x#b", "dialog.#x#b"),        # a # inside the id: the members are after the last #
    ("b ", "dialog.#b,c"),
    ("", "dialog.#,b"),
])
def test_memberSpoofingFails(attacker, channel):
    identity = Identity(attacker)
    for action in ACTIONS:
        assert not decide(identity, channel, action)


@pytest.mark.parametrize("attacker, channel", [
    ("B", "user.b"), ("\u0430", "user.a"), ("b.c", "user.b.c"), ("user", "user.user.x"),
])
def test_ownerSpoofingFails(attacker, channel):
    for action in ACTIONS:
        assert not decide(Identity(attacker), channel, action)


def test_ownerWithTheRest():
    rules = ("user.{sub}.>=sub:owner",)
    assert decide(ALICE, "user.alice.inbox", "sub", rules=rules)
    assert not decide(BOB, "user.alice.inbox", "sub", rules=rules)


# Capabilities.

def test_capabilitiesOverrideTheNamespace():
    caps = ((("room.*", "news.>"), frozenset({"sub", "pub"})), (("user.bob",), frozenset({"history"})))
    capable = Identity("alice", caps=caps)
    # A channel their patterns match: their union decides.
    assert decide(capable, "news.a.b", "pub")
    assert not decide(capable, "room.1", "history")
    assert decide(capable, "user.bob", "history")
    assert not decide(capable, "user.bob", "sub")
    # Other channels: the namespace.
    assert decide(capable, "user.alice", "sub")
    assert not decide(capable, "private.x", "sub")
    # Capabilities widen nothing when empty, and decide even with no rules.
    assert decide(capable, "room.1", "pub", rules=())
    empty = Identity("alice", caps=())
    assert decide(empty, "user.alice", "sub")


def test_unionOfMatchingCapabilities():
    caps = ((("room.*",), frozenset({"sub"})), (("room.>",), frozenset({"pub"})))
    identity = Identity("alice", caps=caps)
    assert decide(identity, "room.1", "sub") and decide(identity, "room.1", "pub")
    assert not decide(identity, "room.1", "presence")


# On a node.

def send(client, text):
    client.receive(text.replace("\n", "\r\n").encode())


def last(client):
    return client.messages()[-1]


def forbidden(message):
    return (
        message.command, message.getHeader("status"), message.getHeader("reason"),
        message.getHeader("channel"),
    )


class Tokens:
    """
    A subscription token verifier for tests: token text -> claims, or
    the error it fails with.
    """

    def __init__(self):
        self.claims = {}

    def verify(self, token):
        found = self.claims.get(token)
        if found is None:
            return fail(Unauthorized("invalid token (InvalidSignatureError)"))
        return succeed(found)


class GuardOnNodeTests(SynchronousTestCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        self.clock.advance(1000)
        self.tokens = Tokens()
        self.server = LHTTPServer(
            Config(channels=RULES, history=("user.*=10", "room.*=10", "private.*=10"),
                   presence=("user.*", "room.*", "private.*")),
            reactor=self.clock, verifySubscriptionToken=self.tokens.verify,
        )

    def client(self, identity):
        client = FakeClient(self.server)
        client.connection.identity = identity
        return client

    def test_refusedWhole(self):
        """
        A message naming a forbidden channel is refused whole, with the
        wire form of the design, and nothing else happens.
        """
        attacker = self.client(ALICE)
        victim = self.client(BOB)
        send(victim, "LHTTP/1.0 s\nsubscribe:user.bob\n\n")
        self.assertEqual(victim.messages(), [])
        attacker.clear()
        send(attacker, "LHTTP/1.0 chat\nsubscribe:room.1 user.bob\npublish:room.1\n\nhi")
        self.assertEqual(
            attacker.payloads(),
            [b"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:403\r\nreason:forbidden\r\n"
             b"command:chat\r\nchannel:user.bob\r\n\r\nsubscribe to 'user.bob' is not allowed"],
        )
        self.assertEqual(attacker.connection.subscriptions, frozenset())
        # Nor was room.1 published to.
        watcher = self.client(BOB)
        send(watcher, "LHTTP/1.0 s\nsubscribe:room.1\n\n")
        send(attacker, "LHTTP/1.0 chat\npublish:user.bob\n\nhi")
        self.assertEqual(forbidden(last(attacker)), ("error", "403", "forbidden", "user.bob"))
        self.assertEqual(last(attacker).body, b"publish to 'user.bob' is not allowed")
        self.assertEqual(victim.messages(), [])
        self.assertEqual(watcher.messages(), [])
        # The connection goes on as before.
        send(attacker, "LHTTP/1.0 chat\nsubscribe:user.alice room.1\n\n")
        self.assertEqual(attacker.connection.subscriptions, {"user.alice", "room.1"})
        send(attacker, "LHTTP/1.0 chat\npublish:room.1\n\nhello")
        self.assertEqual(last(watcher).body, b"hello")

    def test_historyAndPresence(self):
        attacker = self.client(ALICE)
        for command, verb in (("history", "read the history of"),
                              ("presence", "read the presence of"),
                              ("presence-stats", "read the presence of")):
            attacker.clear()
            send(attacker, f"LHTTP/1.0 {command}\nchannel:user.bob\n\n")
            self.assertEqual(forbidden(last(attacker)), ("error", "403", "forbidden", "user.bob"))
            self.assertEqual(last(attacker).getHeader("command"), command)
            self.assertEqual(last(attacker).body.decode(), f"{verb} 'user.bob' is not allowed")
        # Allowed, it answers as before.
        send(attacker, "LHTTP/1.0 s\nsubscribe:user.alice\n\n")
        send(attacker, "LHTTP/1.0 presence-stats\nchannel:user.alice\n\n")
        self.assertEqual(last(attacker).getHeader("clients"), "1")
        send(attacker, "LHTTP/1.0 history\nchannel:user.alice\n\n")
        self.assertEqual(last(attacker).command, "history")

    def test_historyRefusedBeforeItsSubscription(self):
        """
        A message that asks for history and subscribes too is refused
        whole: its subscribe does not happen.
        """
        anonymous = self.client(ANONYMOUS)
        send(anonymous, "LHTTP/1.0 history\nchannel:room.1\nsubscribe:room.1\n\n")
        self.assertEqual(forbidden(last(anonymous)), ("error", "403", "forbidden", "room.1"))
        self.assertEqual(anonymous.connection.subscriptions, frozenset())

    def test_subscriptionToken(self):
        alice = self.client(ALICE)
        self.tokens.claims["good"] = {"sub": "alice", "channel": "private.x", "exp": 1100}
        self.tokens.claims["other-channel"] = {"sub": "alice", "channel": "private.y", "exp": 1100}
        self.tokens.claims["other-user"] = {"sub": "bob", "channel": "private.x", "exp": 1100}
        self.tokens.claims["no-exp"] = {"sub": "alice", "channel": "private.x"}
        for token, why in (("other-channel", "is for 'private.y'"),
                           ("other-user", "another user"),
                           ("no-exp", "no exp"),
                           ("forged", "is not valid: invalid token")):
            alice.clear()
            send(alice, f"LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:{token}\n\n")
            reply = last(alice)
            self.assertEqual(forbidden(reply)[:3], ("error", "403", "forbidden"))
            self.assertIn(why, reply.body.decode())
            self.assertNotIn(token, reply.body.decode().replace("'private", ""))
            self.assertEqual(alice.connection.subscriptions, frozenset())
        self.assertEqual(forbidden(last(alice))[3], "private.x")
        # Without a token: the rule says token.
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\n\n")
        self.assertEqual(forbidden(last(alice)), ("error", "403", "forbidden", "private.x"))
        alice.clear()
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x room.1\nchannel-token:good\n\n")
        self.assertEqual(alice.messages(), [])
        self.assertEqual(alice.connection.subscriptions, {"private.x", "room.1"})
        # It grants history and presence too, until its exp.
        send(alice, "LHTTP/1.0 presence-stats\nchannel:private.x\n\n")
        self.assertEqual(last(alice).getHeader("clients"), "1")
        # A later token extends the grant.
        self.tokens.claims["later"] = {"sub": "alice", "channel": "private.x", "exp": 1200}
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:later\n\n")
        self.clock.advance(101)
        send(alice, "LHTTP/1.0 presence-stats\nchannel:private.x\n\n")
        self.assertEqual(last(alice).getHeader("clients"), "1")
        # At its exp the grant ends, and with it the subscription only it
        # allowed: the client is told.
        alice.clear()
        self.clock.advance(100)
        self.assertEqual(alice.payloads(), [
            b"LHTTP/1.0 unsubscribed\r\nlhttp-node:reply\r\nchannel:private.x\r\n"
            b"reason:subscription token expired\r\n\r\n"])
        self.assertEqual(alice.connection.subscriptions, {"room.1"})
        send(alice, "LHTTP/1.0 presence-stats\nchannel:private.x\n\n")
        self.assertEqual(forbidden(last(alice)), ("error", "403", "forbidden", "private.x"))
        # Another connection of the same user holds no grant.
        again = self.client(ALICE)
        send(again, "LHTTP/1.0 s\nsubscribe:private.x\n\n")
        self.assertEqual(forbidden(last(again)), ("error", "403", "forbidden", "private.x"))

    def test_aBadTokenGrantsNoneOfTheOthers(self):
        alice = self.client(ALICE)
        self.tokens.claims["x"] = {"sub": "alice", "channel": "private.x", "exp": 1100}
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x private.y\nchannel-token:x forged\n\n")
        self.assertEqual(forbidden(last(alice))[1], "403")
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\n\n")
        self.assertEqual(forbidden(last(alice)), ("error", "403", "forbidden", "private.x"))

    def test_aRefusedMessageGrantsNothing(self):
        """
        Good tokens on a message refused for another reason (a forbidden
        publish) grant nothing.
        """
        alice = self.client(ALICE)
        self.tokens.claims["x"] = {"sub": "alice", "channel": "private.x", "exp": 1100}
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:x\npublish:user.bob\n\n")
        self.assertEqual(forbidden(last(alice)), ("error", "403", "forbidden", "user.bob"))
        self.assertEqual(self.server.guard.granted(alice.connection), {})
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\n\n")
        self.assertEqual(forbidden(last(alice)), ("error", "403", "forbidden", "private.x"))
        self.assertEqual(alice.connection.subscriptions, frozenset())

    def test_anonymousSubscriptionToken(self):
        anonymous = self.client(ANONYMOUS)
        self.tokens.claims["anon"] = {"channel": "private.x", "exp": 1100}
        self.tokens.claims["alice"] = {"sub": "alice", "channel": "private.x", "exp": 1100}
        send(anonymous, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:alice\n\n")
        self.assertIn("another user", last(anonymous).body.decode())
        send(anonymous, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:anon\n\n")
        self.assertEqual(anonymous.connection.subscriptions, {"private.x"})

    def test_tokenHeaderErrors(self):
        alice = self.client(ALICE)
        send(alice, "LHTTP/1.0 s\nchannel-token:x\n\n")
        self.assertEqual(last(alice).getHeader("status"), "400")
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:a b\n\n")
        self.assertEqual(last(alice).getHeader("status"), "400")

    def test_noVerifier(self):
        server = memoryServer(channels=RULES)
        alice = FakeClient(server)
        alice.connection.identity = ALICE
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:abc\n\n")
        self.assertEqual(forbidden(last(alice)), ("error", "403", "forbidden", "private.x"))
        self.assertIn("verifies no subscription tokens", last(alice).body.decode())

    def test_processorsOwnSubscribeIsTrusted(self):
        """
        A processor's own C{connection.subscribe} is the application's
        code, like the backend's /publish: not checked.
        """
        from lhttp import Processor

        class Join(Processor):
            def onMessage(self, connection, message):
                connection.subscribe("user.bob")

        self.server.addProcessor("join", Join())
        alice = self.client(ALICE)
        send(alice, "LHTTP/1.0 join\n\n")
        self.assertEqual(alice.connection.subscriptions, {"user.bob"})

    def test_grantsForgottenAtClose(self):
        alice = self.client(ALICE)
        self.tokens.claims["good"] = {"sub": "alice", "channel": "private.x", "exp": 1100}
        send(alice, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:good\n\n")
        self.assertEqual(self.server.guard.granted(alice.connection), {"private.x": 1100})
        connection = alice.connection
        alice.disconnect()
        self.assertEqual(self.server.guard.granted(connection), {})
        self.assertEqual(self.server.guard._grants, {})
        self.assertEqual(self.clock.getDelayedCalls(), [
            c for c in self.clock.getDelayedCalls() if c.func != self.server.guard._expire])

    def test_subscriptionKeptWhenTheRulesAllowIt(self):
        """
        A token on a channel the rules open anyway: nothing ends at its exp.
        """
        alice = self.client(ALICE)
        self.tokens.claims["room"] = {"sub": "alice", "channel": "room.1", "exp": 1010}
        send(alice, "LHTTP/1.0 s\nsubscribe:room.1\nchannel-token:room\n\n")
        alice.clear()
        self.clock.advance(20)
        self.assertEqual(alice.payloads(), [])
        self.assertEqual(alice.connection.subscriptions, {"room.1"})


class PublishResourceTests(SynchronousTestCase):
    def post(self, server, body, headers=None):
        http = StubTreq(server.resource())
        response = self.successResultOf(http.post("http://localhost/publish", data=body,
                                                  headers=headers))
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_anonymousWithoutPublishToken(self):
        server = memoryServer(channels=RULES)
        watcher = FakeClient(server)
        watcher.connection.identity = ALICE
        send(watcher, "LHTTP/1.0 s\nsubscribe:news.a room.1\n\n")
        code, document = self.post(server, b"LHTTP/1.0 n\r\npublish:room.1 news.a\r\n\r\nx")
        self.assertEqual((code, document), (403, {
            "status": 403, "reason": "forbidden", "channel": "room.1",
            "detail": "publish to 'room.1' is not allowed",
        }))
        self.assertEqual(watcher.messages(), [])
        server = memoryServer(channels=("room.*=sub:anyone,pub:anyone",))
        self.assertEqual(self.post(server, b"LHTTP/1.0 n\r\npublish:room.1\r\n\r\nx")[0], 200)

    def test_trustedWithPublishToken(self):
        server = memoryServer(channels=RULES, publishToken="t")
        watcher = FakeClient(server)
        watcher.connection.identity = ALICE
        send(watcher, "LHTTP/1.0 s\nsubscribe:user.alice\n\n")
        code, _ = self.post(server, b"LHTTP/1.0 n\r\npublish:user.alice\r\n\r\nx",
                            {"Authorization": "Bearer t"})
        self.assertEqual(code, 200)
        self.assertEqual(last(watcher).body, b"x")


# The node's subscription-token check: its own JWT verifier.

SECRET = "a test secret, 32 bytes or longer"


def test_subscriptionTokensCheckedWithTheNodesJWTVerifier():
    """
    A node with a JWT secret checks C{channel-token}s with its JWT
    verifier (C{sub} optional); bad ones fail with L{Unauthorized} that
    never names the token. The connect proxy verifies none.
    """
    from lhttp.auth.jwt import JWTVerifier
    from lhttp.auth.keys import secretKey
    from lhttp.server import subscriptionVerifier

    assert subscriptionVerifier(object()) is None
    verify = subscriptionVerifier(JWTVerifier([secretKey(SECRET)]))
    now = int(time.time())
    good = jwt.encode({"channel": "p.x", "exp": now + 60}, SECRET, "HS256")
    claims = []
    verify(good).addCallback(claims.append)
    assert claims == [{"channel": "p.x", "exp": now + 60}]
    for bad in (
        jwt.encode({"channel": "p.x", "exp": now + 60}, "another test secret, 32 bytes or more", "HS256"),
        jwt.encode({"channel": "p.x", "exp": now - 60}, SECRET, "HS256"),
        jwt.encode({"channel": "p.x", "exp": now + 60}, None, "none"),
        "garbage",
    ):
        errors = []
        verify(bad).addErrback(errors.append)
        assert errors[0].check(Unauthorized), bad
        assert bad not in errors[0].getErrorMessage()


def test_forbiddenIsAnLHTTPError():
    error = ChannelForbidden("user.bob", "history")
    assert (error.status, error.reason, error.detail) == (
        403, "forbidden", "read the history of 'user.bob' is not allowed")


def test_docsSamples():
    """
    docs/security.rst's refusal samples are what a node sends: the error
    reply byte for byte, the /publish answer as JSON.
    """
    from docsnippets import blockWith

    text = blockWith("::", "reason:forbidden\\r\\ncommand:chat", ["docs/security.rst"])
    request, reply = [line.encode().decode("unicode_escape").encode("latin-1")
                      for line in text.splitlines()]
    server = memoryServer(channels=RULES)
    alice, bob = FakeClient(server), FakeClient(server)
    alice.connection.identity, bob.connection.identity = ALICE, BOB
    bob.receive(b"LHTTP/1.0 s\r\nsubscribe:user.bob\r\n\r\n")
    alice.receive(request)
    assert alice.payloads() == [reply]
    assert bob.payloads() == []
    assert alice.connection.subscriptions == frozenset()

    sample = json.loads(blockWith("json", '"detail": "publish to', ["docs/security.rst"]))
    http = StubTreq(server.resource())
    response = http.post("http://localhost/publish", data=b"LHTTP/1.0 n\r\npublish:news.a\r\n\r\n")
    answers = []
    response.addCallback(lambda r: r.content()).addCallback(answers.append)
    assert json.loads(answers[0]) == sample


def test_subscriptionTokenExpirySample():
    """
    docs/security.rst's C{unsubscribed} sample is what a node sends when a
    subscription token's exp passes.
    """
    from docsnippets import blockWith

    text = blockWith("::", "reason:subscription token expired", ["docs/security.rst"])
    sample = text.strip().encode().decode("unicode_escape").encode("latin-1")
    clock = MemoryReactorClock()
    tokens = Tokens()
    tokens.claims["t"] = {"sub": "alice", "channel": "private.x", "exp": 10}
    server = LHTTPServer(Config(channels=RULES), reactor=clock, verifySubscriptionToken=tokens.verify)
    alice = FakeClient(server)
    alice.connection.identity = ALICE
    send(alice, "LHTTP/1.0 s\nsubscribe:private.x\nchannel-token:t\n\n")
    assert alice.payloads() == []
    clock.advance(10)
    assert alice.payloads() == [sample]
