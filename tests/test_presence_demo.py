"""
The demo's "who is here" across a reconnect (issue 19, item 3): real
headless Chromium pages of the chat-room demo against a real
C{twistd lhttp --demo --presence} node. After its connection drops and
comes back, a page is subscribed again with the C{nick} header it joined
with, so the list shows the people by nickname, not as guests.
"""

from test_browser import chromium, inThread
from test_browser_history import goOffline, goOnline, openRoom, waitPeople


def test_whoIsHereKeepsNicknamesAcrossAReconnect(startNode):
    node = startNode("--demo", "--presence", "room.*")

    def scenario():
        with chromium() as browser:
            ann = openRoom(browser, node, "ann", "blue", switchable=True)
            bob = openRoom(browser, node, "bob", "blue", switchable=True)
            waitPeople(bob.page, ["ann", "bob"])
            # Bob's connection drops and comes back: the SDK subscribes
            # him again, on its own.
            goOffline(bob.page)
            goOnline(bob.page)
            # Then ann's: her page asks who is here once it is back.
            goOffline(ann.page)
            goOnline(ann.page)
            waitPeople(ann.page, ["ann", "bob"])
            waitPeople(bob.page, ["ann", "bob"])

    inThread(scenario)
