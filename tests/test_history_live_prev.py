"""
The C{prev} header on the embedded engine (issue 20, item 2): every
message of a history channel, live, recovered or in a history reply,
carries the offset of the channel's previous message, so a receiver sees
a gap the moment it happens; no client can set it.
"""

from twisted.trial.unittest import SynchronousTestCase

from lhttp.codec import parseMultipart
from lhttp.testing import FakeClient, memoryServer
from test_history_bounds import historyRequest, only, publish, subscribe


def positions(messages):
    return [(int(m.getHeader("offset")), int(m.getHeader("prev"))) for m in messages]


class PrevTests(SynchronousTestCase):
    def setUp(self):
        self.server = memoryServer(history=("room.*=100",))
        self.sender = FakeClient(self.server)

    def test_liveMessagesChain(self):
        """
        Interleaved channels: each message's prev is its own channel's
        previous offset (0 for the first), not the node's previous one.
        """
        victim = FakeClient(self.server)
        victim.receive(subscribe("room.1 room.2"))
        victim.clear()
        for body in "abcdef":
            self.sender.receive(publish("room.1" if body in "ace" else "room.2", body))
        victim.flush()
        got = victim.messages()
        one = [m for m in got if m.getHeader("channel") == "room.1"]
        two = [m for m in got if m.getHeader("channel") == "room.2"]
        self.assertEqual(positions(one), [(1, 0), (3, 1), (5, 3)])
        self.assertEqual(positions(two), [(2, 0), (4, 2), (6, 4)])

    def test_recoveredAndHistoryChain(self):
        """
        A recovery's messages carry their predecessors, the first one's
        being the offset recovered from; a history page's too, its oldest
        part's being the message before the page.
        """
        for body in "abcdef":
            self.sender.receive(publish("room.1" if body in "ace" else "room.2", body))
        back = FakeClient(self.server)
        back.receive(subscribe("room.1", since=1))
        back.flush()
        recovery, *recovered = back.messages()
        self.assertEqual(recovery.getHeader("recovered"), "true")
        self.assertEqual(positions(recovered), [(3, 1), (5, 3)])
        back.clear()
        back.receive(historyRequest("room.1", limit=2))
        reply = only(back)
        parts = parseMultipart(reply.body, reply.getHeader("multipart"))
        from lhttp.codec import parse

        self.assertEqual(positions([parse(p.body) for p in parts]), [(3, 1), (5, 3)])

    def test_nobodyForgesIt(self):
        """
        A publish carrying prev on a history channel is refused whole.
        """
        victim = FakeClient(self.server)
        victim.receive(subscribe("room.1"))
        victim.clear()
        self.sender.receive(publish("room.1", "x", "prev:99\r\n"))
        reply = only(self.sender)
        self.assertEqual(reply.getHeader("reason"), "reserved header")
        self.assertIn("'prev'", reply.body.decode())
        self.assertEqual(victim.messages(), [])
