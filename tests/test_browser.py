"""
The JavaScript SDK and the chat-room demo end to end: real headless
Chromium pages against real C{twistd lhttp --demo} servers.

Chromium and Playwright are required, not optional: without them these
tests fail and say what to install (C{apt-get install chromium},
C{pip install playwright}; Playwright's own browser download is not used).

Playwright's sync API refuses to run in a thread whose asyncio loop is
running, which is the case under pytest-twisted's asyncio reactor, so each
browser scenario runs in a worker thread of its own.
"""

import os
import re
import shutil
import textwrap
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
README = ROOT / "docs" / "javascript.rst"

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu",
    "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
# Milliseconds; generous for a loaded 2-core CI machine.
WAIT = 15000


def chromiumPath():
    """
    The Chromium to drive: C{$LHTTP_CHROMIUM}, else Debian's.
    """
    for candidate in (os.environ.get("LHTTP_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    return None


def inThread(scenario, timeout=100):
    """
    Run C{scenario()} in a worker thread and return its result, re-raising
    what it raised.
    """
    outcome = {}

    def run():
        try:
            outcome["value"] = scenario()
        except BaseException as e:  # re-raised in the test's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, name="browser-scenario", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"browser scenario still running after {timeout}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@contextmanager
def chromium():
    """
    A headless Chromium browser, closed afterwards.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is required for the browser tests: pip install playwright")
    path = chromiumPath()
    if path is None:
        pytest.fail("Chromium is required for the browser tests: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """
    A page whose JavaScript errors and requests are recorded, so a test can
    assert the page loaded nothing from outside the server and raised nothing.
    """

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1100, "height": 640})
        self.page.set_default_timeout(WAIT)
        self.errors = []
        self.requests = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def assertClean(self, server):
        assert self.errors == [], f"JavaScript errors: {self.errors}"
        outside = [u for u in self.requests
                   if not (u.startswith(server.httpURL) or u.startswith("data:"))]
        assert outside == [], f"requests outside the lhttp server: {outside}"


def openChat(browser, server, nick, room):
    watched = Watched(browser)
    watched.page.goto(f"{server.httpURL}demo/?nick={nick}&room={room}")
    waitConnected(watched.page)
    # Our own join comes back only once the server has subscribed us.
    waitText(watched.page, f"{nick} joined #{room}")
    return watched


def waitConnected(page):
    page.wait_for_selector("#status[data-state=open]")


def waitText(page, text):
    page.locator("#messages .message").filter(has_text=text).first.wait_for()


def say(page, text):
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")


def waitDelivered(page, text):
    """
    Wait until our own message C{text} is back from the server.
    """
    page.locator("#messages .message.own:not(.pending)").filter(has_text=text).wait_for()


def chatTexts(page):
    return page.locator("#messages .message.chat .text").all_inner_texts()


def test_chatRoomSurvivesServerRestart(startNode):
    """
    Two pages chat in one room while a third, in another room, sees none of
    it; the server is restarted on the same port, the pages reconnect and
    re-subscribe, a message sent while the server was down is delivered,
    and the chat goes on; rooms are joined and left. A screenshot is left
    in test-artifacts/.
    """
    node = startNode("--demo")

    def scenario():
        with chromium() as browser:
            ann = openChat(browser, node, "ann", "blue")
            bob = openChat(browser, node, "bob", "blue")
            cid = openChat(browser, node, "cid", "green")

            say(ann.page, "hello bob")
            waitText(bob.page, "hello bob")
            say(bob.page, "hi ann, it is 12:30:45")
            waitText(ann.page, "hi ann, it is 12:30:45")
            assert bob.page.locator(".message.chat").filter(has_text="hello bob") \
                .locator(".sender").inner_text() == "ann"
            # Green's own message round-trips after blue's: had blue's reached
            # green, they would be on the page by now.
            say(cid.page, "anyone in green?")
            waitDelivered(cid.page, "anyone in green?")
            assert chatTexts(cid.page) == ["anyone in green?"]

            node.stop()
            for watched in (ann, bob, cid):
                watched.page.wait_for_selector("#status[data-state=reconnecting]")
            say(ann.page, "sent while the server was down")
            assert ann.page.locator(".message.pending").count() == 1

            restarted = startNode("--demo", port=node.port)
            assert restarted.port == node.port
            for watched in (ann, bob, cid):
                waitConnected(watched.page)
                assert "reconnected" in watched.page.inner_text("#status")
            # Queued while down, sent after ann's channels were re-subscribed.
            waitDelivered(ann.page, "sent while the server was down")

            say(bob.page, "back again")
            waitDelivered(bob.page, "back again")
            waitText(ann.page, "back again")
            say(ann.page, "welcome back")
            waitText(bob.page, "welcome back")
            say(cid.page, "still only green")
            waitDelivered(cid.page, "still only green")
            assert chatTexts(cid.page) == ["anyone in green?", "still only green"]
            assert chatTexts(ann.page) == [
                "hello bob", "hi ann, it is 12:30:45",
                "sent while the server was down", "back again", "welcome back",
            ]

            # Join a second room from the form, then leave the first.
            bob.page.fill("#room-input", "Green")
            bob.page.click("#join")
            waitText(cid.page, "bob joined #green")
            assert bob.page.inner_text("#room-title") == "green"
            bob.page.click("#room-list li[data-room=blue] button")
            bob.page.click("#leave")
            waitText(ann.page, "bob left #blue")
            assert bob.page.locator("#room-list li").all_inner_texts() == ["# green"]
            say(cid.page, "bob is here")
            waitText(bob.page, "bob is here")

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "chat-room.png"
            ann.page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10000

            for watched in (ann, bob, cid):
                watched.assertClean(node)

    inThread(scenario)


def readmeExample():
    """
    The first C{.. code-block:: html} of the SDK's page, dedented.
    """
    text = README.read_text()
    match = re.search(r"^\.\. code-block:: html\n\n((?:    .*\n|\n)+)", text, re.MULTILINE)
    assert match, f"no html code block in {README}"
    return textwrap.dedent(match.group(1))


def showAt(page, url, html):
    """
    Show C{html} as the page at C{url}, a path of the lhttp server that has
    no file (its 404 page is replaced): the document then really comes from
    the server's origin and address. A page made by Playwright's
    C{route.fulfill} instead has no address, and Chromium's Local Network
    Access checks block its WebSocket to 127.0.0.1.
    """
    page.goto(url)
    page.evaluate("html => { document.open(); document.write(html); document.close(); }", html)


MODULE_PAGE = """<!doctype html>
<meta charset="utf-8">
<script type="module">
  import "./lhttp.js";
  const { Lhttp } = globalThis;
  const results = document.documentElement.dataset;
  const client = new Lhttp("ws://" + location.host + "/");
  client.on_message = (ctx) => {
    if (ctx.getCommand() === "blob") {
      results.binary = ctx.binary && ctx.getBody() instanceof Uint8Array;
      results.bytes = Array.from(ctx.getBody()).join(",");
      return;
    }
    results.time = ctx.getHeader("time");
    results.body = ctx.getBody();
  };
  client.on_error = (ctx) => {
    if (ctx.error instanceof Lhttp.LhttpError) {
      results.status = ctx.error.status;
      results.reason = ctx.error.reason;
    }
  };
  client.subscribe("module-test");
  client.publish("module-test", "chat", [["time", "12:30:45"]], "from an ES module");
  client.send("chat", [["publish", "bad*channel"]], "refused");
  client.publish("module-test", "blob", null, new Uint8Array([0, 255, 13, 10, 13, 10, 7]));
</script>
"""


def test_readmeExampleAndModuleImport(startNode):
    """
    The README's SDK example, pasted into a page served by C{--demo}, works;
    the SDK also loads as an ES module, where header values with ':', an
    error reply and a binary message from the real server come through.
    """
    node = startNode("--demo")
    example = readmeExample()
    assert '<script src="/demo/lhttp.js"></script>' in example

    def scenario():
        with chromium() as browser:
            watched = Watched(browser)
            page = watched.page
            showAt(page, f"{node.httpURL}demo/readme-example.html", example)
            page.wait_for_function(
                "document.getElementById('log')?.textContent"
                ".includes('readme: hello from the SDK')"
            )
            assert page.inner_text("#log").splitlines()[0] == "connected"

            showAt(page, f"{node.httpURL}demo/module-example.html", MODULE_PAGE)
            page.wait_for_function(
                "() => { const d = document.documentElement.dataset; return d.body && d.status && d.bytes; }"
            )
            results = page.evaluate("() => ({...document.documentElement.dataset})")
            assert results["time"] == "12:30:45"
            assert results["body"] == "from an ES module"
            assert results["status"] == "400"
            assert results["reason"]
            assert results["binary"] == "true", "a binary frame gives a Uint8Array body"
            assert results["bytes"] == "0,255,13,10,13,10,7"
            watched.assertClean(node)

    inThread(scenario)


AUTH_SECRET = "the browser test's JWT secret, 32 bytes or more"
AUTH_PUBLISH_TOKEN = "the browser test's publish token"
AUTH_PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="/demo/lhttp.js"></script>
<script>
  const d = document.documentElement.dataset;
  window.tokenTimes = [];
  window.received = [];
  window.errors = [];
  window.opens = 0;
  window.closes = [];
  const client = window.client = new Lhttp("ws://" + location.host + "/", {
    getToken: async () => {
      window.tokenTimes.push(Date.now() / 1000);
      return await window.mintToken();
    },
  });
  client.on_open = () => {
    window.opens += 1;
    window.firstExpires = window.firstExpires || client.expires;
    d.user = client.user;
  };
  client.on_close = (ctx) => window.closes.push(ctx.code);
  client.on_error = (ctx) => window.errors.push(
    ctx.error instanceof Lhttp.LhttpError ? ctx.error.status + " " + ctx.getHeader("channel")
                                          : String(ctx.error));
  client.on_message = (ctx) => {
    if (ctx.getBody() === "ready") d.ready = "1";
    else window.received.push(ctx.getBody());
  };
  // Its own channel (its own message back: the subscription is in place),
  // and another user's (refused: 403).
  client.subscribe("user.alice");
  client.publish("user.alice", "chat", null, "ready");
  client.subscribe("user.bob");
</script>
"""


def test_jsSDKAuthenticatesAndRefreshes(startNode):
    """
    C{new Lhttp(url, {getToken})} against a node with JWT authentication
    and a C{user.{sub}} rule: it connects as the token's C{sub}, its
    subscription to its own channel gets what the backend publishes to
    C{/publish} with the publish token (another user's channel: 403), and
    a short-lived token is refreshed before it expires, on the same
    connection (no close, no second open), which keeps receiving.
    """
    import time
    import urllib.request

    from lhttp.testing import makeToken

    node = startNode("--demo", "--channel", "user.{sub}=sub:owner,pub:owner",
                     env={"LHTTP_AUTH_JWT_SECRET": AUTH_SECRET,
                          "LHTTP_PUBLISH_TOKEN": AUTH_PUBLISH_TOKEN})
    ttl = 8

    def backendPublishes(body):
        request = urllib.request.Request(
            node.publishURL, f"LHTTP/1.0 chat\r\npublish:user.alice\r\n\r\n{body}".encode(),
            headers={"Authorization": f"Bearer {AUTH_PUBLISH_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def scenario():
        with chromium() as browser:
            watched = Watched(browser)
            page = watched.page
            page.expose_function("mintToken", lambda: makeToken(AUTH_SECRET, "alice", expiresIn=ttl))
            showAt(page, f"{node.httpURL}demo/auth-example.html", AUTH_PAGE)
            page.wait_for_function("document.documentElement.dataset.ready === '1'")
            state = lambda: page.evaluate(  # noqa: E731
                "() => ({user: client.user, expires: client.expires, first: window.firstExpires,"
                " tokens: window.tokenTimes, received: window.received, errors: window.errors,"
                " opens: window.opens, closes: window.closes})")
            first = state()
            assert first["user"] == "alice"
            assert abs(first["first"] - (time.time() + ttl)) < 4, first
            assert first["errors"] == ["403 user.bob"], first

            backendPublishes("from the backend")
            page.wait_for_function("window.received.includes('from the backend')")

            # Refreshed (a second token) before the first one expired.
            page.wait_for_function(
                f"window.tokenTimes.length >= 2 && client.expires > {first['first']}",
                timeout=(ttl + 10) * 1000)
            refreshed = state()
            assert refreshed["tokens"][1] < first["first"], refreshed
            backendPublishes("after the refresh")
            page.wait_for_function("window.received.includes('after the refresh')")
            final = state()
            assert (final["opens"], final["closes"]) == (1, []), final
            assert final["received"] == ["from the backend", "after the refresh"], final
            assert final["errors"] == ["403 user.bob"], final
            watched.assertClean(node)

    inThread(scenario)
    # No token (a JWT starts with eyJ) in the node's log.
    assert "eyJ" not in node.log()
