"""
Live gaps in the browser (issue 20, item 2): a real headless Chromium page
of the chat-room demo against a real C{twistd lhttp --demo --history}
node. A frame the page never gets (an init script wraps the page's
C{WebSocket} and drops it before the SDK sees it, as if lost on the way)
is seen from the next message's C{prev} and recovered by the SDK on the
same connection: the page shows every message once, in order, and never
reconnects.
"""


from test_browser import Watched, chatTexts, chromium, inThread, say, waitConnected, waitDelivered, waitText
from test_browser_history import HISTORY, openRoom, waitLive

# Drops the first frame whose body is LOST, counts the sockets made.
LOSSY = """
(() => {
  const Real = window.WebSocket;
  const net = window.__net = { made: 0, lost: 0 };
  class Lossy extends Real {
    constructor(url, protocols) {
      super(url, protocols);
      net.made += 1;
    }
    set onmessage(fn) {
      super.onmessage = fn && ((event) => {
        if (typeof event.data === "string" && event.data.endsWith("\\r\\n\\r\\nLOST") && !net.lost) {
          net.lost += 1;
          return;
        }
        fn.call(this, event);
      });
    }
    get onmessage() { return super.onmessage; }
  }
  window.WebSocket = Lossy;
})();
"""


def test_lostFrameRecoveredWithoutReconnecting(startNode):
    node = startNode("--demo", *HISTORY)

    def scenario():
        with chromium() as browser:
            ann = Watched(browser)
            ann.page.add_init_script(LOSSY.replace("LOST", "lost on the way"))
            ann.page.goto(f"{node.httpURL}demo/?nick=ann&room=blue")
            waitConnected(ann.page)
            waitLive(ann.page, "ann", "blue")
            bob = openRoom(browser, node, "bob", "blue")
            said = ["one", "two", "lost on the way", "four", "five"]
            for text in said:
                say(bob.page, text)
            waitDelivered(bob.page, said[-1])
            waitText(ann.page, said[-1])
            assert ann.page.evaluate("__net.lost") == 1
            assert chatTexts(ann.page) == said
            assert ann.page.evaluate("[__net.made, lhttpChat.client.gaps, lhttpChat.client.gapsRecovered, "
                                     "lhttpChat.client.duplicates]") == [1, 1, 1, 0]
            ann.assertClean(node)
            bob.assertClean(node)

    inThread(scenario)
