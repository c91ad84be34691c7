"""
L{lhttp.brokers.nats.NATSBroker} against L{lhttp.testing.FakeNATS}: the
subscription state machine and the publish order while nats-py pauses,
credentials kept out of C{/health} and logs, the subject prefix, and
messages NATS dropped. No sockets; the asyncio reactor runs the coroutines.
"""

import asyncio

import pytest
import pytest_twisted
from nats.errors import SlowConsumerError
from twisted.internet import reactor
from twisted.logger import capturedLogs, formatEvent
from zope.interface.verify import verifyObject

from lhttp.interfaces import IBroker
from lhttp.brokers.nats import NATSBroker, redactURL
from lhttp.testing import FakeNATS
from lhttpclients import eventually

SECRET_URL = "nats://alice:s3cret@127.0.0.1:4222"


async def started(prefix="", servers=(SECRET_URL,)):
    """
    A broker connected to a L{FakeNATS}, ready; and what it delivered
    locally, as C{(channels, payload)}.
    """
    fake = FakeNATS()
    delivered = []
    broker = NATSBroker(list(servers), reactor, prefix=prefix, settle=0,
                        clientFactory=lambda: fake)
    broker.attach(lambda channels, payload: delivered.append((tuple(channels), payload)))
    broker.start()
    await eventually(lambda: broker.ready, timeout=5, what="the broker to be ready")
    return broker, fake, delivered


async def fired(deferreds, timeout=5):
    await eventually(lambda: all(d.called for d in deferreds), timeout=timeout,
                     what="every subscribe to be confirmed")


def test_providesIBroker():
    assert verifyObject(IBroker, NATSBroker([SECRET_URL], reactor))


@pytest_twisted.ensureDeferred
async def test_concurrentSubscribesWhileNATSPausesMakeOneSubscriptionEach():
    broker, fake, _ = await started()
    fake.gate = asyncio.Event()
    waiting = []
    for i in range(300):
        waiting.append(broker.subscribe(f"c{i}"))
    await eventually(lambda: fake.log, what="the first NATS call")
    # While nats-py is paused: more subscribes, some channels left and
    # taken again, some left for good.
    for i in range(300, 600):
        waiting.append(broker.subscribe(f"c{i}"))
    for i in range(0, 600, 3):
        broker.unsubscribe(f"c{i}")
    for i in range(0, 600, 6):
        waiting.append(broker.subscribe(f"c{i}"))
    fake.gate.set()
    await fired([d for d in waiting if d is not None])

    wanted = sorted(f"c{i}" for i in range(600) if i % 3 or i % 6 == 0)
    assert fake.subjects() == wanted
    assert broker.describe()["subscriptions"] == len(wanted)


@pytest_twisted.ensureDeferred
async def test_leavingWhileNATSPausesLeavesNothing():
    broker, fake, _ = await started()
    for i in range(100):
        broker.subscribe(f"c{i}")
    await eventually(lambda: len(fake.subscriptions) == 100, what="100 subscriptions")
    fake.gate = asyncio.Event()
    for i in range(100):
        broker.unsubscribe(f"c{i}")
    await eventually(lambda: fake.log[-1][0] == "unsubscribe", what="an unsubscribe")
    for i in range(50):
        broker.subscribe(f"c{i}")
        broker.unsubscribe(f"c{i}")
    fake.gate.set()
    await eventually(lambda: not fake.subscriptions and not broker._syncing,
                     what="every subscription to go")
    assert broker.describe()["subscriptions"] == 0


@pytest_twisted.ensureDeferred
async def test_subscribeWaitsForNATS():
    """
    A subscribe's Deferred fires only after NATS has the subscription and
    a flush confirmed it.
    """
    broker, fake, _ = await started()
    fake.gate = asyncio.Event()
    d = broker.subscribe("room")
    await eventually(lambda: fake.log, what="the subscribe")
    assert not d.called
    fake.gate.set()
    await fired([d])
    assert fake.log[-2:] == [("subscribe", "room"), ("flush", None)]


@pytest_twisted.ensureDeferred
async def test_publishesKeepTheirOrderWhileNATSPauses():
    """
    nats-py pauses a publish when its buffer is full; publishes taken
    later (another reactor turn, another batch) must not overtake it.
    """
    broker, fake, delivered = await started()
    fake.gate = asyncio.Event()
    paused = []
    # The sixth publish waits (once), as on a full buffer.
    fake.pauseWhen = lambda operation, subject: (
        operation == "publish" and len(fake.published) == 5 and not paused
        and not paused.append(True)
    )
    taken = []
    for turn in range(5):
        for i in range(10):
            payload = f"{turn}.{i}".encode()
            broker.publish(["room"], payload)
            taken.append(("room", payload))
        # The next batch is taken in a later reactor turn.
        await eventually(lambda: broker._batch is None, what="the batch to go out")
    await eventually(lambda: len(fake.published) >= 5, what="the paused publish")
    fake.gate.set()
    await eventually(lambda: len(fake.published) == len(taken), what="every publish")
    assert fake.published == taken
    assert [payload for _, payload in delivered] == [payload for _, payload in taken]


@pytest_twisted.ensureDeferred
async def test_confirmWaitsForTheBatch():
    broker, fake, _ = await started()
    fake.gate = asyncio.Event()
    broker.publish(["room"], b"x")
    confirmed = broker.confirm()
    await eventually(lambda: fake.log, what="the publish")
    assert not confirmed.called
    fake.gate.set()
    await fired([confirmed])
    assert broker.describe()["published"] == 1


@pytest_twisted.ensureDeferred
async def test_subscribeFailureReleasesWaitersAndRetries():
    broker, fake, _ = await started()

    async def failingFlush(timeout=None):
        raise asyncio.TimeoutError()

    realFlush, fake.flush = fake.flush, failingFlush
    with capturedLogs() as events:
        d = broker.subscribe("room")
        await fired([d])
    assert any("not confirmed" in formatEvent(e) for e in events)
    fake.flush = realFlush
    d = broker.subscribe("other")
    await fired([d])
    assert fake.subjects() == ["other", "room"]


@pytest_twisted.ensureDeferred
async def test_credentialsNeverShown():
    with capturedLogs() as events:
        broker, fake, _ = await started()
        await fake.options["error_cb"](ConnectionRefusedError(f"cannot reach {SECRET_URL}"))
    described = repr(broker.describe())
    assert "s3cret" not in described
    assert "nats://alice:***@127.0.0.1:4222" in described
    text = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "alice:***@127.0.0.1" in text
    assert "s3cret" not in text


@pytest.mark.parametrize("url, shown", [
    ("nats://alice:s3cret@h:4222", "nats://alice:***@h:4222"),
    ("nats://t0ken@h:4222", "nats://***@h:4222"),
    ("tls://u:p@[::1]:4222", "tls://u:***@[::1]:4222"),
    ("nats://h:4222", "nats://h:4222"),
])
def test_redactURL(url, shown):
    assert redactURL(url) == shown


@pytest_twisted.ensureDeferred
async def test_subjectPrefix():
    broker, fake, delivered = await started(prefix="app1")
    await fired([broker.subscribe("room")])
    assert fake.subjects() == ["app1.room"]
    broker.publish(["room"], b"mine")
    await eventually(lambda: fake.published, what="the publish")
    assert fake.published == [("app1.room", b"mine")]
    await fake.deliver("app1.room", b"from elsewhere")
    assert delivered[-1] == (("room",), b"from elsewhere")


@pytest.mark.parametrize("prefix", ["a.*", ">", "a..b", "a b", ""])
def test_badPrefixRefused(prefix):
    if not prefix:
        assert NATSBroker([SECRET_URL], reactor, prefix=prefix).prefix == ""
        return
    with pytest.raises(ValueError):
        NATSBroker([SECRET_URL], reactor, prefix=prefix)


@pytest_twisted.ensureDeferred
async def test_droppedMessagesAreReported():
    """
    nats-py drops messages for a subscription whose queue is full (a slow
    consumer): the channel's subscribers are told, once a second at most.
    """
    broker, fake, delivered = await started()
    await fired([broker.subscribe("room")])
    for _ in range(3):
        await fake.options["error_cb"](SlowConsumerError("room", "", 1, None))
    notices = [payload for channels, payload in delivered if channels == ("room",)]
    assert len(notices) == 1
    assert b"reason:messages may have been missed" in notices[0]


@pytest_twisted.ensureDeferred
async def test_unconfirmedHistoryBatchNotAwaitedForEver():
    """
    A batch whose PING/PONG fails (the link went) is not confirmed: its
    publishers are told, and its acknowledgements are no longer awaited
    (left awaited, they would count against the ones awaited at once and
    stop publishing for good once there were enough of them).
    """
    from nats.errors import TimeoutError as NATSTimeout

    from lhttp.history import HistoryPolicy
    from lhttp.history.jetstream import JetStreamHistory

    fake = FakeNATS()
    broker = NATSBroker([SECRET_URL], reactor, settle=0, flushTimeout=0.2,
                        clientFactory=lambda: fake,
                        history=JetStreamHistory(HistoryPolicy(["room.*=10"])))
    broker.start()
    await eventually(lambda: broker.ready, timeout=5, what="the broker and its history ready")
    fake.js.loseAcks = True
    fake.flushError = NATSTimeout()
    failures = []
    broker.publish(["room.1"], b"LHTTP/1.0 chat\r\n\r\none", onFailure=failures.append)
    try:
        await broker.confirm()
    except Exception:
        pass
    assert len(failures) == 1
    [lost] = fake.js.lostAcks
    assert lost in fake.js.forgotten
    broker.stop()


@pytest_twisted.ensureDeferred
async def test_unacknowledgedHistoryPublishRetriedWithItsId():
    """
    History messages JetStream stores but whose acknowledgements never
    come back (lost on the way) are published once more with the same
    Nats-Msg-Id: the stream holds each once, and the publishes are
    confirmed with their positions.
    """
    from lhttp.history import HistoryPolicy
    from lhttp.history.jetstream import JetStreamHistory

    fake = FakeNATS()
    broker = NATSBroker([SECRET_URL], reactor, settle=0, flushTimeout=0.2,
                        clientFactory=lambda: fake,
                        history=JetStreamHistory(HistoryPolicy(["room.*=10"])))
    delivered = []
    broker.attach(lambda channels, payload, *position: delivered.append((channels, payload)))
    broker.start()
    await eventually(lambda: broker.ready, timeout=5, what="the broker and its history ready")
    fake.js.loseAcks = True
    receipts = []
    for body in (b"one", b"two"):
        broker.publish(["room.1"], b"LHTTP/1.0 chat\r\n\r\n" + body,
                       onConfirmed=receipts.append)
    await broker.confirm()
    sent = [(operation, subject) for operation, subject in fake.log if operation.startswith("js.")]
    assert sent == [("js.publishStored", "room.1")] * 2 + [("js.publish", "room.1")] * 2
    [stream] = fake.js.streams.values()
    assert [payload for _, _, payload, _ in stream.messages] == [
        b"LHTTP/1.0 chat\r\n\r\none", b"LHTTP/1.0 chat\r\n\r\ntwo"]
    ids = [headers["Nats-Msg-Id"] for _, _, _, headers in stream.messages]
    assert len(set(ids)) == 2
    assert broker.retried == 2
    # Given up on, not awaited for ever.
    assert fake.js.lostAcks and all(acks in fake.js.forgotten for acks in fake.js.lostAcks)
    assert [[offset for _, _, offset in r.positions] for r in receipts] == [[1], [2]]
    # No local subscriber of room.1: the node does not receive it back (live
    # delivery per served channel, tests/test_history_live.py on a real
    # nats-server).
    assert delivered == []


@pytest_twisted.ensureDeferred
async def test_liveMessagesOfAHistoryChannelAreReadInline():
    """
    A history channel's live subscription is read as messages arrive
    (C{FakeNATS.inline}, as nats-py's reading loop does with
    L{lhttp.brokers.connection.NATS}): delivered with their position
    without the subscription's callback; one whose position is not a
    number goes the usual way and is counted as forged; the reader goes
    with the subscription.
    """
    from lhttp.brokers.connection import LIVE
    from lhttp.history import HistoryPolicy
    from lhttp.history.jetstream import JetStreamHistory

    fake = FakeNATS()
    history = JetStreamHistory(HistoryPolicy(["room.*=10"]))
    broker = NATSBroker([SECRET_URL], reactor, settle=0, clientFactory=lambda: fake,
                        history=history)
    delivered = []
    broker.attach(lambda channels, payload, position=None: delivered.append((channels, payload, position)))
    broker.start()
    await eventually(lambda: broker.ready, timeout=5, what="the broker and its history ready")
    await broker.subscribe("room.1")
    [subscription] = [s for s in fake.subscriptions if s.subject == LIVE + "room.1"]
    assert subscription._id in fake.inline
    called = []
    callback, subscription.cb = subscription.cb, lambda message: called.append(message) or callback(message)

    await fake.deliver(LIVE + "room.1", b"LHTTP/1.0 chat\r\n\r\none",
                       {"Nats-Stream": "LHTTP_HISTORY", "Nats-Sequence": "5", "Nats-Last-Sequence": "0"})
    await fake.deliver(LIVE + "room.1", b"LHTTP/1.0 chat\r\n\r\ntwo",
                       {"Nats-Sequence": "7", "Nats-Last-Sequence": "5"})
    assert [(c, p, pos[1:]) for c, p, pos in delivered] == [
        (("room.1",), b"LHTTP/1.0 chat\r\n\r\none", (5, 0)),
        (("room.1",), b"LHTTP/1.0 chat\r\n\r\ntwo", (7, 5))]
    assert called == []

    await fake.deliver(LIVE + "room.1", b"LHTTP/1.0 chat\r\n\r\nbad", {"Nats-Sequence": "x"})
    assert len(called) == 1 and history.forged == 1 and len(delivered) == 2

    broker.unsubscribe("room.1")
    await eventually(lambda: subscription._id not in fake.inline, timeout=5, what="the reader gone")
    broker.stop()
