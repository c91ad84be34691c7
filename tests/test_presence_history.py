"""
Joins and leaves are the node's events, not a channel's history (issue
19, item 3): on a channel that keeps history and has presence events,
they reach the subscribers live, once, and are neither stored nor
replayed, on the embedded broker and on JetStream.
"""

import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from lhttp.testing import FakeClient, memoryServer
from lhttpclients import barrier, client, subscribed, untilHealth


def send(c, text):
    c.receive(text.replace("\n", "\r\n").encode())


class EmbeddedTests(SynchronousTestCase):
    def test_eventsAreNotKept(self):
        server = memoryServer(history=("room.*=100",), presence=("room.*",),
                              presenceEvents=("room.*",))
        ann = FakeClient(server)
        send(ann, "LHTTP/1.0 enter\nsubscribe:room.1\n\n")
        bob = FakeClient(server)
        send(bob, "LHTTP/1.0 enter\nsubscribe:room.1\n\n")
        send(bob, "LHTTP/1.0 chat\npublish:room.1\n\nhello")
        send(bob, "LHTTP/1.0 bye\nunsubscribe:room.1\n\n")
        ann.flush()
        live = [(m.command, m.getHeader("lhttp-node")) for m in ann.messages()]
        self.assertEqual(live, [("join", "event"), ("join", "event"), ("chat", "position"),
                                ("leave", "event")])
        self.assertEqual(server.broker.history.count, 1)
        # A reload: recovery from the start replays the chat only.
        carl = FakeClient(server)
        send(carl, "LHTTP/1.0 enter\nsubscribe:room.1\nsince:0\n\n")
        carl.flush()
        got = [(m.command, m.getHeader("count")) for m in carl.messages()]
        self.assertEqual(got, [("recovery", "1"), ("chat", None), ("join", None)])


@pytest_twisted.ensureDeferred
async def test_onJetStreamEventsReachEveryNodeAndAreNotReplayed(jetstream, startNode):
    options = ("--nats", jetstream.url, "--history", "room.*=100", "--presence", "room.*",
               "--presence-events", "room.*")
    here, there = startNode(*options), startNode(*options)
    for node in (here, there):
        await untilHealth(node, 200)
    watcher = await subscribed(there.url, "room.1")
    joiners = []
    for i in range(2):
        c = await subscribed(here.url, "room.1")
        joiners.append(c)
    joiners[0].publish("room.1", "chat", [], "hello")
    joiners[1].unsubscribe("room.1")
    await barrier(joiners[1])
    seen = []
    while len([m for m in seen if m.command in ("join", "leave", "chat")]) < 4:
        seen.append(await watcher.nextMessage(10))
    seen += await barrier(watcher)
    live = [(m.command, m.getHeader("lhttp-node"))
            for m in seen if m.command in ("join", "leave", "chat")]
    # Once each, from the other node: two joins, the chat, a leave.
    assert sorted(live) == sorted([("join", "event"), ("join", "event"),
                                   ("chat", "position"), ("leave", "event")]), live
    # A reload from the start gets the chat only (and its own join).
    reader = await client(there.url)
    reader.send("enter", [("subscribe", "room.1"), ("since", "0")])
    got = await barrier(reader)
    assert [(m.command, m.getHeader("count")) for m in got if m.command != "join"] == [
        ("recovery", "1"), ("chat", None)], [m.toBytes() for m in got]
    assert len([m for m in got if m.command == "join"]) == 1
