"""
History requests on JetStream read only what is asked, and page: real
C{twistd lhttp --nats --history} nodes on a real C{nats-server -js}, a
real WebSocket client, and a NATS client that counts the JetStream API
requests the node makes.
"""

import pytest_twisted
from nats.aio.client import Client as NATS

from lhttp.brokers.nats import deferred as future
from lhttp.codec import parse, parseMultipart
from lhttpclients import client, eventually, subscribed
from test_history_cluster import node, publishMany, ready


async def historyPage(c, channel, **headers):
    c.send("history", [("channel", channel)] + [(k, str(v)) for k, v in headers.items()])
    while True:
        reply = await c.nextMessage(30)
        if reply.command in ("history", "error"):
            break
    assert reply.command == "history", (reply.headers, reply.body[:200])
    parts = parseMultipart(reply.body, reply.getHeader("multipart")) if reply.body else []
    return reply, [parse(p.body) for p in parts]


@pytest_twisted.ensureDeferred
async def test_limitOneReadsOneMessage(jetstream, startNode):
    """
    history limit:1 on a 1,000-message channel: the node asks JetStream
    for a couple of messages, not for all 1,000 (it made 1,001 requests).
    """
    a = node(startNode, jetstream)
    await ready(a)
    publisher = await client(a.url)
    await publishMany(publisher, "room.big", [f"m{i}" for i in range(1000)])
    reader = await subscribed(a.url, "room.big")

    spy = NATS()
    await future(spy.connect(jetstream.url))

    async def allStored():
        info = await future(spy.jsm().stream_info("LHTTP_HISTORY"))
        return info.state.messages >= 1000

    # The barrier says the node took the publishes, not that JetStream
    # stored them all.
    await eventually(allStored, timeout=20, what="the 1,000 messages stored")
    requests = []

    async def counted(message):
        requests.append(message.subject)

    await future(spy.subscribe("$JS.API.>", cb=counted))
    await future(spy.flush())
    reply, messages = await historyPage(reader, "room.big", limit=1)
    await future(spy.flush())
    print(f"\nhistory limit:1 on 1,000 messages: {len(requests)} JetStream requests")
    assert [m.body for m in messages] == [b"m999"]
    assert reply.getHeader("more") == "true"
    assert len(requests) <= 3, requests

    # The pages before it, two at a time, to the start: every message once.
    got = [m.body for m in messages]
    requests.clear()
    for _ in range(3):
        reply, messages = await historyPage(
            reader, "room.big", limit=2, before=reply.getHeader("before"))
        got = [m.body for m in messages] + got
    assert got == [f"m{i}".encode() for i in range(993, 1000)]
    assert len(requests) <= 3 * 4, requests
    await future(spy.close())


@pytest_twisted.ensureDeferred
async def test_largeMessagesArePaged(jetstream, startNode):
    """
    Messages of 200 KiB under a 256 KiB message limit: the default history
    request answers one page that fits, and the pages give them all.
    """
    a = startNode("--nats", jetstream.url, "--history", "room.*=100",
                  "--max-message-size", str(256 * 1024))
    await ready(a)
    publisher = await client(a.url)
    bodies = [(f"{i:03d}" + "x" * (200 * 1024)) for i in range(6)]
    await publishMany(publisher, "room.large", bodies)
    reader = await subscribed(a.url, "room.large")
    reply, messages = await historyPage(reader, "room.large")
    got = [m.body for m in messages]
    pages = 1
    while reply.getHeader("more") == "true":
        assert len(reply.toBytes()) <= 256 * 1024
        reply, messages = await historyPage(reader, "room.large", before=reply.getHeader("before"))
        got = [m.body for m in messages] + got
        pages += 1
    assert got == [b.encode() for b in bodies]
    assert pages == 6
    assert reply.getHeader("complete") == "true"
