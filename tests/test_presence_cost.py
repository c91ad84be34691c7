"""
What presence costs a node when a client holds many subscriptions and
churns them (issue 19, item 2): work per message independent of the
client's subscription count, channel-pattern lookups no client can make
slow for the others, and C{join}/C{leave} messages bounded per connection.

The figures for real processes are printed by C{bench/presence_churn.py}.
"""

from twisted.trial.unittest import SynchronousTestCase

import lhttp.history
import lhttp.presence.policy
from lhttp.history import HistoryPolicy
from lhttp.patterns import PatternTable
from lhttp.presence.filter import PresenceFilter
from lhttp.presence.policy import PresencePolicy
from lhttp.testing import FakeClient, memoryServer


def send(client, text):
    client.receive(text.replace("\n", "\r\n").encode())


class SubscriptionCountTests(SynchronousTestCase):
    def test_perMessageWorkDoesNotGrowWithSubscriptions(self):
        """
        A client holding 990 subscriptions that subscribes and unsubscribes
        one more channel per message makes presence look at that channel
        only, not at all 990.
        """
        server = memoryServer(presence=("room.*",), presenceEvents=("room.*",),
                              maxSubscriptions=1000)
        policy = server.presence.policy
        asked = []
        concerns = policy.concerns
        policy.concerns = lambda channel: asked.append(channel) or concerns(channel)
        churner = FakeClient(server)
        for start in range(0, 990, 90):
            names = " ".join(f"room.{i}" for i in range(start, start + 90))
            send(churner, f"LHTTP/1.0 enter\nsubscribe:{names}\n\n")
        self.assertEqual(len(churner.connection.subscriptions), 990)
        del asked[:]
        for i in range(100):
            send(churner, "LHTTP/1.0 churn\nsubscribe:room.x\n\n")
            send(churner, "LHTTP/1.0 churn\nunsubscribe:room.x\n\n")
        # One look per change (old: 990 per message, 198,000 in all).
        self.assertLessEqual(len(asked), 200 * 2)
        send(churner, "LHTTP/1.0 presence-stats\nchannel:room.5\n\n")
        self.assertEqual(churner.messages()[-1].getHeader("clients"), "1")

    def test_subscriptionsChangedByAProcessorOutsideAMessageCount(self):
        """
        A subscription a processor makes later (in a callback) is seen at
        the connection's next message, as before.
        """
        from lhttp import Processor

        later = []

        class Later(Processor):
            def onMessage(self, connection, message):
                later.append(lambda: connection.subscribe("room.7"))

        server = memoryServer(presence=("room.*",))
        server.addProcessor("later", Later())
        client = FakeClient(server)
        send(client, "LHTTP/1.0 later\n\n")
        later.pop()()
        send(client, "LHTTP/1.0 presence-stats\nchannel:room.7\n\n")
        self.assertEqual(client.messages()[-1].getHeader("clients"), "1")


class PatternCacheTests(SynchronousTestCase):
    """
    The channel-pattern caches were dicts that stopped filling at 10,000
    entries: once an attacker had named 10,000 channels, every later
    lookup, everyone's, was a scan of every pattern.
    """

    def _countMatches(self):
        calls = []
        original = lhttp.history.matches

        def counting(pattern, channel):
            calls.append(channel)
            return original(pattern, channel)

        self.patch(lhttp.history, "matches", counting)
        if hasattr(lhttp.presence.policy, "matches"):
            # The old policy imported it into its own module.
            self.patch(lhttp.presence.policy, "matches", counting)
        return calls

    def test_historyPolicyAfterAFlood(self):
        patterns = [f"app{i}.*=10" for i in range(50)] + ["room.*=10"]
        policy = HistoryPolicy(patterns)
        for i in range(20000):
            policy.retentionFor(f"flood.{i}")
        calls = self._countMatches()
        for _ in range(100):
            self.assertEqual(policy.retentionFor("room.1").pattern, "room.*")
        self.assertIsNone(policy.retentionFor("flood.x"))
        # Answered from the LRU (room.1) or by one compiled match
        # (flood.x), never by a scan of the 51 patterns.
        self.assertEqual(calls, [])
        self.assertLessEqual(policy._table.cached(), PatternTable.cacheSize)

    def test_presencePolicyAfterAFlood(self):
        policy = PresencePolicy([f"app{i}.*" for i in range(50)] + ["room.*"], ["room.*"])
        for i in range(20000):
            policy.concerns(f"flood.{i}")
        calls = self._countMatches()
        for _ in range(100):
            self.assertTrue(policy.tracks("room.1"))
            self.assertTrue(policy.announces("room.1"))
        self.assertEqual(calls, [])
        self.assertLessEqual(policy._tracked.cached(), PatternTable.cacheSize)

    def test_firstMatchWinsAsBefore(self):
        policy = HistoryPolicy(["room.vip=5", "room.*=10", ">=20"])
        self.assertEqual(policy.retentionFor("room.vip").messages, 5)
        self.assertEqual(policy.retentionFor("room.a").messages, 10)
        self.assertEqual(policy.retentionFor("room.a.b").messages, 20)

    def test_sameAnswersAsMatches(self):
        patterns = ["room.*", ">", "a.>", "*.b", "x", "*", "a.*.c.>", "ü.*"]
        channels = ["a", "a.", ".a", "a.b", "a..b", "room.1", "room.1.2", "room.", "x",
                    "x.y", "a.q.c", "a.q.c.d", "ü.z", "a\nb", "room.\n", "(.)", "a+.b"]
        for pattern in patterns:
            table = PatternTable([pattern])
            for channel in channels:
                self.assertEqual(table.lookup(channel) is not None,
                                 lhttp.history.matches(pattern, channel), (pattern, channel))


class EventRateTests(SynchronousTestCase):
    def test_churnIsCoalesced(self):
        """
        A client subscribing and unsubscribing 1,000 times makes each
        subscriber of the room hear at most the burst plus the rate's
        worth of joins and leaves; once it stops, they hear how it ends.
        """
        server = memoryServer(presence=("room.*",), presenceEvents=("room.*",))
        clock = server.factory.reactor
        watcher = FakeClient(server)
        send(watcher, "LHTTP/1.0 enter\nsubscribe:room.1\n\n")
        watcher.clear()
        churner = FakeClient(server)
        for i in range(1000):
            send(churner, "LHTTP/1.0 churn\nsubscribe:room.1\n\n")
            send(churner, "LHTTP/1.0 churn\nunsubscribe:room.1\n\n")
        send(churner, "LHTTP/1.0 churn\nsubscribe:room.1\n\n")
        heard = [m.command for m in watcher.messages()]
        self.assertLessEqual(len(heard), PresenceFilter.eventBurst + 1)
        for _ in range(50):
            clock.advance(0.1)
        watcher.flush()
        heard = [m.command for m in watcher.messages()]
        # 5 s: at most the burst and 5 s at the rate.
        self.assertLessEqual(len(heard), PresenceFilter.eventBurst + 5 * PresenceFilter.eventRate + 1)
        # Joins and leaves alternate, starting with a join and ending
        # subscribed: the watcher's view is the truth.
        self.assertEqual(heard[0], "join")
        self.assertEqual(heard[-1], "join")
        self.assertTrue(all(a != b for a, b in zip(heard, heard[1:])), heard)
        send(watcher, "LHTTP/1.0 presence-stats\nchannel:room.1\n\n")
        self.assertEqual(watcher.messages()[-1].getHeader("clients"), "2")

    def test_heldJoinUndoneIsNeverSent(self):
        server = memoryServer(presenceEvents=("room.*",))
        clock = server.factory.reactor
        watcher = FakeClient(server)
        send(watcher, "LHTTP/1.0 enter\nsubscribe:room.1\n\n")
        churner = FakeClient(server)
        server.presence._seenOf(churner.connection).tokens = 0
        watcher.clear()
        send(churner, "LHTTP/1.0 enter\nsubscribe:room.1\n\n")
        send(churner, "LHTTP/1.0 bye\nunsubscribe:room.1\n\n")
        clock.advance(10)
        watcher.flush()
        self.assertEqual(watcher.messages(), [])

    def test_closeTellsTheLeavesOfWhatWasTold(self):
        server = memoryServer(presenceEvents=("room.*",))
        watcher = FakeClient(server)
        send(watcher, "LHTTP/1.0 enter\nsubscribe:room.1 room.2\n\n")
        churner = FakeClient(server)
        send(churner, "LHTTP/1.0 enter\nsubscribe:room.1\n\n")
        server.presence._seenOf(churner.connection).tokens = 0
        send(churner, "LHTTP/1.0 enter\nsubscribe:room.2\n\n")
        watcher.flush()
        watcher.clear()
        churner.disconnect()
        watcher.flush()
        # Told of room.1's join: told of its leave; room.2's join was
        # held, so nothing for it.
        self.assertEqual([(m.command, m.getHeader("channel")) for m in watcher.messages()],
                         [("leave", "room.1")])
