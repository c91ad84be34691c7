"""
History and recovery in the browser (issue 13): real headless Chromium
pages of the chat-room demo against real C{twistd lhttp --demo --history}
nodes. A reloaded page shows the room's recent messages; a page that was
offline catches up with exactly what was said meanwhile, none twice, also
when frames arrive twice and across a node restart. On a cluster
(C{--nats} with JetStream, history in a file store), a page whose node is
restarted, or whose nats-server is, misses nothing and is told nothing is
missing.

A page is taken offline from its own side: an init script wraps the
page's C{WebSocket} so that the test can close its connection and send
new ones to a closed port until it is let back online; the SDK's own
reconnect does the rest. The same wrapper can deliver every frame twice,
as an at-least-once delivery may.
"""

import json
import signal
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import pytest

from procs import freePort, waitFor
from test_browser import (
    Watched, chatTexts, chromium, inThread, say, waitConnected, waitDelivered, waitText,
)

HISTORY = ("--history", "room.*=100,1h")

NETWORK_SWITCH = """
(() => {
  const Real = window.WebSocket;
  const net = window.__net = { offline: false, duplicate: false, deadURL: DEAD_URL, sockets: new Set() };
  class Switchable extends Real {
    constructor(url, protocols) {
      super(net.offline ? net.deadURL : url, protocols);
      net.sockets.add(this);
      this.addEventListener("close", () => net.sockets.delete(this));
    }
    set onmessage(fn) {
      super.onmessage = fn && ((event) => {
        fn.call(this, event);
        if (net.duplicate) fn.call(this, event);
      });
    }
    get onmessage() { return super.onmessage; }
  }
  window.WebSocket = Switchable;
  net.goOffline = () => { net.offline = true; for (const s of net.sockets) s.close(); };
  net.goOnline = () => { net.offline = false; };
})();
"""


def openRoom(browser, node, nick, room, switchable=False):
    """
    A demo page in C{room}; with C{switchable}, one the test can take
    offline (L{NETWORK_SWITCH}).
    """
    watched = Watched(browser)
    if switchable:
        dead = f"ws://127.0.0.1:{freePort()}/"
        watched.page.add_init_script(NETWORK_SWITCH.replace("DEAD_URL", repr(dead)))
    watched.page.goto(f"{node.httpURL}demo/?nick={nick}&room={room}")
    waitConnected(watched.page)
    waitLive(watched.page, nick, room)
    return watched


def waitLive(page, nick, room):
    """
    Wait for the page's own join, live (not one from history): it comes
    back once the server subscribed the page and sent the room's history.
    """
    page.locator("#messages .message.system:not(.history)").filter(
        has_text=f"{nick} joined #{room}").first.wait_for()


def goOffline(page):
    page.evaluate("__net.goOffline()")
    page.wait_for_selector("#status[data-state=reconnecting]")


def goOnline(page):
    page.evaluate("__net.goOnline()")
    waitConnected(page)


def publish(node, room, nick, text):
    """
    Publish a chat message as another client would, through C{/publish}.
    """
    time = datetime.now(timezone.utc).isoformat()
    message = (f"LHTTP/1.0 chat\r\npublish:room.{room}\r\nnick:{nick}\r\ntime:{time}\r\n"
               f"id:{uuid.uuid4().hex}\r\n\r\n{text}").encode()
    request = urllib.request.Request(node.publishURL, data=message, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.read()


def sayWhileAway(bob, ann, node, prefix, fromDan):
    """
    While ann's page is away: bob says 20 things in room blue, dan publishes
    C{fromDan} through C{node}'s /publish; ann has seen none of it.

    @return: what bob said.
    """
    away = [f"{prefix} {i}" for i in range(20)]
    for text in away:
        say(bob.page, text)
    waitDelivered(bob.page, away[-1])
    publish(node, "blue", "dan", fromDan)
    waitText(bob.page, fromDan)
    assert chatTexts(ann.page) == ["before"]
    return away


def notes(page):
    return page.locator("#messages .message.recovery .text").all_inner_texts()


def assertPresenceShown(page):
    """
    The "who is here" list: filled if the node has presence, "presence
    off" if it has not; never still asking.
    """
    page.wait_for_selector("#people[data-state=on], #people[data-state=off]")
    if page.get_attribute("#people", "data-state") == "off":
        assert page.inner_text("#people-note") == "presence off"
    else:
        assert page.locator("#people-list li").count() >= 1


def waitPeople(page, names):
    """
    Wait until the "who is here" list is exactly C{names}.
    """
    page.wait_for_function(
        "names => JSON.stringify(Array.from(document.querySelectorAll('#people-list li'),"
        " li => li.textContent.trim())) === JSON.stringify(names)",
        arg=sorted(names), timeout=20000,
    )


def test_reloadedPageShowsTheRoomsRecentMessages(startNode):
    """
    With history, a reloaded page, and a page joining later, show the
    room's recent messages once each, marked as history; the SDK's
    history() reads the last ones. Without history the demo says so and
    shows only what came after joining.
    """
    node = startNode("--demo", *HISTORY, "--presence", "room.*")
    plain = startNode("--demo")

    def scenario():
        with chromium() as browser:
            ann = openRoom(browser, node, "ann", "blue")
            assert ann.page.get_attribute("#room-info", "data-history") == "on"
            for text in ("first", "second: with a colon"):
                say(ann.page, text)
                waitDelivered(ann.page, text)
            publish(node, "blue", "dan", "from dan")
            waitText(ann.page, "from dan")
            assertPresenceShown(ann.page)

            ann.page.reload()
            waitConnected(ann.page)
            waitLive(ann.page, "ann", "blue")
            expected = ["first", "second: with a colon", "from dan"]
            assert chatTexts(ann.page) == expected
            assert ann.page.locator(".message.chat.history").count() == 3
            assert ann.page.locator(".message.chat.own").all_inner_texts()[-1].endswith(
                "second: with a colon")
            assert ann.page.locator(".message.chat.own").count() == 2
            last = ann.page.evaluate(
                "async () => (await lhttpChat.client.history('room.blue', 2))"
                ".map(m => [m.command, m.getHeader('nick'), m.body])"
            )
            # Joins are the node's events, not messages of the room: none is
            # kept, so none is replayed on a reload (issue 19).
            assert last == [["chat", "ann", "second: with a colon"], ["chat", "dan", "from dan"]]
            assert ann.page.locator(".message.system", has_text="joined #blue").count() == 1

            bob = openRoom(browser, node, "bob", "blue")
            assert chatTexts(bob.page) == expected
            # Who is here: both, by nickname, on both pages.
            waitPeople(ann.page, ["ann", "bob"])
            waitPeople(bob.page, ["ann", "bob"])
            say(bob.page, "live from bob")
            waitText(ann.page, "live from bob")
            assert ann.page.locator(".message.chat:not(.history)").all_inner_texts()[-1].endswith(
                "live from bob")

            cid = openRoom(browser, plain, "cid", "blue")
            cid.page.wait_for_selector("#room-info[data-history=off]")
            assert "--history" in cid.page.inner_text("#room-info")
            say(cid.page, "not kept")
            waitDelivered(cid.page, "not kept")
            cid.page.reload()
            waitConnected(cid.page)
            waitLive(cid.page, "cid", "blue")
            say(cid.page, "after reload")
            waitDelivered(cid.page, "after reload")
            assert chatTexts(cid.page) == ["after reload"]
            assertPresenceShown(cid.page)

            for watched in (ann, bob):
                watched.assertClean(node)
            cid.assertClean(plain)

    inThread(scenario)


def test_offlinePageCatchesUpWithExactlyWhatItMissed(startNode):
    """
    A page cut off while 21 messages are sent gets exactly those after it
    reconnects, in order, once each; frames delivered twice are shown
    once; across a node restart (a new epoch in memory) it gets what the
    new node kept, and says some may be missing.
    """
    node = startNode("--demo", *HISTORY)

    def scenario():
        with chromium() as browser:
            ann = openRoom(browser, node, "ann", "blue", switchable=True)
            bob = openRoom(browser, node, "bob", "blue")
            say(ann.page, "before")
            waitText(bob.page, "before")

            goOffline(ann.page)
            away = sayWhileAway(bob, ann, node, "while away", "dan too")

            goOnline(ann.page)
            waitText(ann.page, "dan too")
            assert chatTexts(ann.page) == ["before", *away, "dan too"]
            assert notes(ann.page) == ["caught up: 21 message(s) while away"]
            say(bob.page, "live again")
            waitText(ann.page, "live again")

            # At-least-once: every frame twice; the SDK drops the copies.
            before = ann.page.evaluate("lhttpChat.client.duplicates")
            ann.page.evaluate("__net.duplicate = true")
            say(bob.page, "sent once, delivered twice")
            say(bob.page, "marker")
            waitText(ann.page, "marker")
            ann.page.evaluate("__net.duplicate = false")
            assert chatTexts(ann.page)[-3:] == ["live again", "sent once, delivered twice", "marker"]
            assert ann.page.evaluate("lhttpChat.client.duplicates") - before == 2

            goOffline(ann.page)
            shown = chatTexts(ann.page)
            node.stop()
            bob.page.wait_for_selector("#status[data-state=reconnecting]")
            restarted = startNode("--demo", *HISTORY, port=node.port)
            after = [f"after the restart {i}" for i in range(3)]
            for text in after:
                publish(restarted, "blue", "dan", text)
            goOnline(ann.page)
            waitText(ann.page, after[-1])
            assert chatTexts(ann.page) == shown + after
            assert notes(ann.page)[-1].startswith("the server restarted")
            # Bob reconnected on his own, before or after those were sent:
            # either way he has each once.
            waitConnected(bob.page)
            waitText(bob.page, after[-1])
            assert chatTexts(bob.page)[-4:] == ["marker", *after]
            say(bob.page, "after all that")
            waitText(ann.page, "after all that")
            assert chatTexts(ann.page) == shown + after + ["after all that"]

            ann.assertClean(node)
            bob.assertClean(node)

    inThread(scenario)


CLUSTER_HISTORY = ("--history", "room.*=100")
# Milliseconds: a page whose node was down for seconds retries after an
# exponential backoff (up to the SDK's maxDelay, 15 s, plus jitter).
RECONNECT = 40000


def healthy(node):
    """
    Whether the node's C{/health} says 200: connected to NATS, history
    ready.
    """
    try:
        with urllib.request.urlopen(node.httpURL + "health", timeout=5) as response:
            return response.status == 200 and json.load(response)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def clusterNode(startNode, jetstream, port=None):
    node = startNode("--nats", jetstream.url, *CLUSTER_HISTORY, "--demo", port=port)
    waitFor(lambda: healthy(node), 30, what=f"/health of {node.url}")
    return node


@pytest.mark.parametrize("natsLate", [False, True], ids=["nodeReady", "natsLate"])
def test_clusterPageMissesNothingAcrossANodeRestart(jetstream, startNode, natsLate):
    """
    Two nodes on one JetStream: a page on node A, whose node is stopped
    while 21 messages are sent through node B (by a page on B and through
    B's /publish), reconnects by itself once A is back on its port and
    shows exactly those, in order, once each; the epoch did not change, so
    its note says it caught up, not that some may be missing. With
    C{natsLate}, nats-server is paused while A starts, so the page is back
    on A before A has its history: the recovery waits for it.
    """
    a = clusterNode(startNode, jetstream)
    b = clusterNode(startNode, jetstream)

    def scenario():
        with chromium() as browser:
            ann = openRoom(browser, a, "ann", "blue")
            bob = openRoom(browser, b, "bob", "blue")
            waitText(ann.page, "bob joined #blue")
            say(ann.page, "before")
            waitText(bob.page, "before")
            epoch = ann.page.evaluate("lhttpChat.client.getPosition('room.blue').epoch")
            assert epoch

            a.stop()
            ann.page.wait_for_selector("#status[data-state=reconnecting]")
            away = sayWhileAway(bob, ann, b, "while A was down", "dan through B")

            if natsLate:
                jetstream.signal(signal.SIGSTOP)
                try:
                    again = startNode("--nats", jetstream.url, *CLUSTER_HISTORY, "--demo",
                                      port=a.port)
                    ann.page.wait_for_selector("#status[data-state=open]", timeout=RECONNECT)
                    assert not healthy(again)
                finally:
                    jetstream.signal(signal.SIGCONT)
                for node in (again, b):
                    waitFor(lambda node=node: healthy(node), 30, what=f"/health of {node.url}")
            else:
                again = clusterNode(startNode, jetstream, port=a.port)
            ann.page.wait_for_selector("#status[data-state=open]", timeout=RECONNECT)
            assert "reconnected" in ann.page.inner_text("#status")
            waitText(ann.page, "dan through B")
            assert chatTexts(ann.page) == ["before", *away, "dan through B"]
            assert notes(ann.page) == ["caught up: 21 message(s) while away"]
            assert ann.page.evaluate(
                "lhttpChat.client.getPosition('room.blue').epoch") == epoch
            # Live again, and nothing came twice (a copy would be before it).
            say(bob.page, "live again")
            waitText(ann.page, "live again")
            say(ann.page, "ann is back")
            waitText(bob.page, "ann is back")
            assert chatTexts(ann.page) == ["before", *away, "dan through B", "live again",
                                           "ann is back"]
            assert chatTexts(bob.page) == chatTexts(ann.page)
            assert ann.page.evaluate("lhttpChat.client.duplicates") == 0
            assert ann.page.locator("#notice").is_hidden()

            ann.assertClean(again)
            bob.assertClean(b)

    inThread(scenario, timeout=150)


def test_clusterPageMissesNothingAcrossANATSRestart(jetstream, startNode):
    """
    The nats-server itself is restarted (same ports, same file store)
    while a page stays open on node A: what is sent through node B once it
    is back, before A is, reaches the page, every message once, in order,
    the epoch unchanged; and the page reloaded shows the whole room, from
    both sides of the restart.
    """
    a = clusterNode(startNode, jetstream)
    b = clusterNode(startNode, jetstream)

    def scenario():
        with chromium() as browser:
            ann = openRoom(browser, a, "ann", "blue")
            before = [f"before the restart {i}" for i in range(5)]
            for text in before:
                publish(b, "blue", "dan", text)
            waitText(ann.page, before[-1])
            epoch = ann.page.evaluate("lhttpChat.client.getPosition('room.blue').epoch")

            # Node A is paused across the restart, so what is sent through B
            # once B is back is sent before A has its history consumer
            # again: that one must resume after the last message A had.
            a.signal(signal.SIGSTOP)
            try:
                jetstream.restart()
                waitFor(lambda: healthy(b), 30, what=f"/health of {b.url}")
                after = [f"after the restart {i}" for i in range(20)]
                for text in after:
                    publish(b, "blue", "dan", text)
            finally:
                a.signal(signal.SIGCONT)
            waitFor(lambda: healthy(a), 30, what=f"/health of {a.url}")
            waitText(ann.page, after[-1])
            say(ann.page, "ann still here")
            waitDelivered(ann.page, "ann still here")
            assert chatTexts(ann.page) == [*before, *after, "ann still here"]
            assert ann.page.evaluate("lhttpChat.client.duplicates") == 0
            assert ann.page.evaluate(
                "lhttpChat.client.getPosition('room.blue').epoch") == epoch

            ann.page.reload()
            waitConnected(ann.page)
            waitLive(ann.page, "ann", "blue")
            assert chatTexts(ann.page) == [*before, *after, "ann still here"]
            assert ann.page.locator(".message.chat.history").count() == len(before) + len(after) + 1

            ann.assertClean(a)

    inThread(scenario, timeout=150)
