"""
The chat-room demo's auth mode end to end (issue 21, item 5): the example
token backend (examples/demo_auth_backend.py) and a real C{twistd lhttp
--demo} node with the same JWT secret and the channel rules of
docs/javascript.rst; headless Chromium pages as alice and bob, and raw
clients that are not the victim.
"""

import secrets
import shlex
import sys
from urllib.parse import quote

import jwt
import pytest_twisted
import treq
from twisted.internet import defer, reactor, threads

from docsnippets import blockWith
from lhttp.client import connect
from procs import ROOT, Process, freePort, portAccepts, waitFor
from test_browser import ARTIFACTS, Watched, chatTexts, chromium, say, waitConnected, waitText
from test_browser_history import waitPeople

BACKEND = ROOT / "examples" / "demo_auth_backend.py"


def documentedNode():
    """
    The node options docs/javascript.rst gives for the demo's auth mode
    (its C{twistd} command, without the port), and its backend's.
    """
    block = blockWith("::", "demo_auth_backend.py --port 8090")
    commands = [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    [backend] = [c for c in commands if "examples/demo_auth_backend.py" in c]
    [twistd] = [c for c in commands if "twistd" in c]
    options = twistd[twistd.index("lhttp") + 1:]
    at = options.index("--port")
    del options[at:at + 2]
    return options, backend[backend.index("examples/demo_auth_backend.py") + 1:]


# Seconds a backend token is valid: short, so a page refreshes its token
# during the test (the SDK refreshes when a quarter of it is left).
TTL = 12


def startBackend(secret, origin):
    port = freePort()
    backend = Process(
        [sys.executable, str(BACKEND), "--port", str(port), "--origin", origin, "--ttl", str(TTL)],
        env={"LHTTP_AUTH_JWT_SECRET": secret}, name="demo-auth-backend",
    )
    waitFor(lambda: portAccepts(port) or not backend.alive(), what="the demo's token backend")
    assert backend.alive(), backend.log()
    return backend, f"http://127.0.0.1:{port}/token"


async def tokenFor(tokenURL, nick):
    response = await treq.post(tokenURL, json={"nick": nick})
    assert response.code == 200, await response.text()
    return (await response.json())["token"]


def openSignedIn(browser, node, tokenURL, nick, room):
    watched = Watched(browser)
    watched.page.goto(f"{node.httpURL}demo/?auth={quote(tokenURL, safe='')}&nick={nick}&room={room}")
    waitConnected(watched.page)
    # The node's word on who the page is: its connect reply's user.
    watched.page.wait_for_selector(f"#user[data-user={nick}]")
    # The join event names the token's user.
    waitText(watched.page, f"{nick} joined #{room}")
    return watched


async def ownBarrier(raw, inbox):
    """
    L{lhttpclients.barrier} through the one channel a signed-in client may
    subscribe and publish to here, its own inbox (the node denies the
    others): the messages that arrived before the round trip.
    """
    raw.send("barrier", [("subscribe", inbox), ("publish", inbox), ("unsubscribe", inbox)])
    before = []
    while True:
        message = await raw.nextMessage(10)
        if message.command == "barrier" and message.getHeader("publish") == inbox:
            return before
        before.append(message)


def inboxSender(page, text):
    item = page.locator("#inbox-list .message").filter(has_text=text)
    item.wait_for()
    return item.locator(".sender").inner_text()


def roomSender(page, text):
    item = page.locator("#messages .message.chat").filter(has_text=text)
    item.wait_for()
    return item.locator(".sender").inner_text()


@pytest_twisted.ensureDeferred
async def test_demoAuthModeInboxesAndNames(startNode):
    """
    alice and bob sign in through the backend and see each other join;
    bob writes to alice's inbox and she reads it, named by the node; bob's
    page and a raw client with bob's token are refused C{user.alice} (403)
    and get nothing of it; a client without a token claiming to be alice
    gets 401s and nothing, one with bob's token claiming alice's nickname
    is shown as bob, and one with a token the backend did not sign is
    refused; alice's page refreshes its token and stays connected.
    """
    options, backendOptions = documentedNode()
    assert "--demo" in options and "user.{sub}=sub:owner,pub:users,history:owner" in options
    assert backendOptions == ["--port", "8090", "--origin", "http://127.0.0.1:8081"]
    secret = secrets.token_hex(32)
    node = startNode(*options, env={"LHTTP_AUTH_JWT_SECRET": secret})
    backend, tokenURL = startBackend(secret, node.httpURL.rstrip("/"))

    def inReactor(steps):
        return threads.blockingCallFromThread(reactor, lambda: defer.ensureDeferred(steps()))

    async def bobReadsAliceInbox():
        raw = await connect(reactor, node.url, token=await tokenFor(tokenURL, "bob"), timeout=10)
        assert raw.user == "bob"
        raw.subscribe("user.alice")
        [refused] = await ownBarrier(raw, "user.bob")
        assert (refused.getHeader("status"), refused.getHeader("reason"),
                refused.getHeader("channel")) == ("403", "forbidden", "user.alice"), refused
        # bob's token with alice's nickname: the node names him bob.
        raw.publish(["room.blue"], "chat", [("nick", "alice"), ("id", "spoof")], "I am alice")
        return raw

    async def strangers():
        # No token at all, claiming alice's nickname: refused, nothing done.
        anonymous = await connect(reactor, node.url, timeout=10)
        anonymous.send("chat", [("subscribe", "user.alice"), ("nick", "alice")])
        anonymous.publish(["room.blue"], "chat", [("nick", "alice")], "from nobody")
        refusals = [await anonymous.nextMessage(10) for _ in range(2)]
        assert [(m.getHeader("status"), m.getHeader("command")) for m in refusals] == \
            [("401", "chat"), ("401", "chat")], refusals
        anonymous.transport.loseConnection()
        # A token for alice the backend did not sign.
        forged = jwt.encode({"sub": "alice"}, secrets.token_hex(32), algorithm="HS256")
        try:
            await connect(reactor, node.url, token=forged, timeout=10)
        except Exception as e:
            return e
        raise AssertionError("a forged token was accepted")

    async def nothingMore(raw):
        assert await ownBarrier(raw, "user.bob") == []
        raw.transport.loseConnection()

    def scenario():
        with chromium() as browser:
            alice = openSignedIn(browser, node, tokenURL, "alice", "blue")
            bob = openSignedIn(browser, node, tokenURL, "bob", "blue")
            waitText(alice.page, "bob joined #blue")
            waitPeople(alice.page, ["alice", "bob"])
            waitPeople(bob.page, ["alice", "bob"])
            assert alice.page.text_content("#inbox-channel") == "user.alice"

            # Without a nick in its URL the page asks for one first.
            carol = Watched(browser)
            carol.page.goto(f"{node.httpURL}demo/?auth={quote(tokenURL, safe='')}&room=blue")
            carol.page.wait_for_selector("#signin:not([hidden])")
            assert carol.page.locator("#status").get_attribute("data-state") == "signin"
            carol.page.fill("#signin-nick", "carol")
            carol.page.click("#signin-button")
            carol.page.wait_for_selector("#user[data-user=carol]")
            waitText(alice.page, "carol joined #blue")
            carol.page.close()
            waitText(alice.page, "carol left #blue")

            say(bob.page, "hello alice")
            assert roomSender(alice.page, "hello alice") == "bob"

            bob.page.fill("#dm-to", "alice")
            bob.page.fill("#dm-text", "psst, alice")
            bob.page.press("#dm-text", "Enter")
            assert inboxSender(alice.page, "psst, alice") == "bob"

            # bob's page asks for alice's inbox: the node refuses, says why.
            bob.page.evaluate("lhttpChat.client.subscribe('user.alice')")
            notice = bob.page.locator("#notice").filter(has_text="user.alice")
            notice.wait_for()
            assert "forbidden" in notice.inner_text()

            raw = inReactor(bobReadsAliceInbox)
            assert roomSender(alice.page, "I am alice") == "bob"
            forged = inReactor(strangers)
            assert "401" in str(forged) or "unauthorized" in str(forged).lower(), repr(forged)

            # alice's page refreshes its token before it expires, and
            # stays on the same connection.
            expires = alice.page.evaluate("lhttpChat.client.expires")
            alice.page.wait_for_function(f"lhttpChat.client.expires > {expires}",
                                         timeout=(TTL + 10) * 1000)
            assert alice.page.inner_text("#status") == "connected"

            bob.page.fill("#dm-text", "after the refresh")
            bob.page.press("#dm-text", "Enter")
            assert inboxSender(alice.page, "after the refresh") == "bob"
            # Nothing of alice's inbox reached bob's page or raw client, and
            # nothing the strangers sent reached the room.
            inReactor(lambda: nothingMore(raw))
            assert bob.page.locator("#inbox-list .message:not(.own)").count() == 0
            assert "from nobody" not in chatTexts(alice.page)
            waitPeople(alice.page, ["alice", "bob"])

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "chat-room-auth.png"
            alice.page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10000

            for watched in (alice, bob, carol):
                assert watched.errors == [], watched.errors
                outside = [u for u in watched.requests
                           if not u.startswith((node.httpURL, tokenURL, "data:"))]
                assert outside == [], outside

    try:
        await threads.deferToThread(scenario)
        # Tokens were asked for (and alice's again, to refresh it), and none
        # is in the backend's or the node's log.
        log = backend.log()
        assert log.count("POST /token") >= 4, log
        for text in (log, node.log()):
            assert "eyJ" not in text, text
    finally:
        backend.stop()
