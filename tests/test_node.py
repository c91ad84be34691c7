"""
A real C{twistd lhttp} process and real WebSocket clients: pub/sub, HTTP
publish, error replies (SPEC sections 2, 6 and 7).
"""

import json

import pytest_twisted
import treq

from lhttpclients import barrier, client


@pytest_twisted.ensureDeferred
async def test_subscribeSeveralPublishUnsubscribe(lhttpNode):
    alice = await client(lhttpNode.url + "chat")
    bob = await client(lhttpNode.url)
    alice.subscribe("x y z")
    await barrier(alice)

    first = b"LHTTP/1.0 chat\r\npublish:x z\r\nk:v\r\n\r\nhello"
    bob.sendLHTTP(first)
    bob.sendLHTTP(b"LHTTP/1.0 chat\r\npublish:nobody\r\n\r\nlost on purpose")
    marker = b"LHTTP/1.0 marker\r\npublish:y\r\n\r\n"
    bob.sendLHTTP(marker)
    received = [(await alice.nextMessage(10)).toBytes() for _ in range(3)]
    assert received == [first, first, marker]

    alice.unsubscribe("x y")
    await barrier(alice)
    bob.sendLHTTP(first)
    bob.sendLHTTP(marker)
    bob.sendLHTTP(b"LHTTP/1.0 marker2\r\npublish:z\r\n\r\n")
    assert [(await alice.nextMessage(10)).toBytes() for _ in range(2)] == [
        first,
        b"LHTTP/1.0 marker2\r\npublish:z\r\n\r\n",
    ]
    assert await barrier(alice) == []
    assert await barrier(bob) == []


@pytest_twisted.ensureDeferred
async def test_senderReceivesOwnPublishOnce(lhttpNode):
    alice = await client(lhttpNode.url)
    message = b"LHTTP/1.0 chat\r\nsubscribe:room\r\npublish:room\r\n\r\nme"
    alice.sendLHTTP(message)
    [echo] = await barrier(alice)
    assert echo.toBytes() == message


@pytest_twisted.ensureDeferred
async def test_errorRepliesKeepConnectionOpen(lhttpNode):
    alice = await client(lhttpNode.url)
    alice.sendLHTTP(b"LHTTP/1.0 chat\r\nno blank line")
    alice.sendLHTTP(b"LHTTP/1.0 chat\r\nsubscribe:every*\r\n\r\n")
    alice.sendLHTTP(b"LHTTP/1.0 upload\r\nmultipart:0 x\r\n\r\nabc")
    errors = await barrier(alice)
    assert [(e.command, e.getHeader("status")) for e in errors] == [("error", "400")] * 3
    assert "blank line" in errors[0].body.decode()


@pytest_twisted.ensureDeferred
async def test_httpPublishReachesSubscribers(lhttpNode):
    alice = await client(lhttpNode.url)
    alice.subscribe("news")
    await barrier(alice)
    body = b"LHTTP/1.0 notice\r\npublish:news\r\n\r\nfrom the backend"
    response = await treq.post(lhttpNode.publishURL, data=body)
    assert response.code == 200
    assert json.loads(await response.content()) == {"status": 200, "channels": ["news"]}
    assert (await alice.nextMessage(10)).toBytes() == body

    for bad, status in [
        (b"LHTTP/1.0 notice\r\n\r\nno publish header", 400),
        (b"garbage", 400),
        (b"LHTTP/1.0 n\r\npublish:a>\r\n\r\n", 400),
    ]:
        response = await treq.post(lhttpNode.publishURL, data=bad)
        assert response.code == status, bad
        await response.content()
    assert await barrier(alice) == []


@pytest_twisted.ensureDeferred
async def test_httpPublishTokenAndSizeLimit(startNode):
    node = startNode("--publish-token", "s3cret", "--max-message-size", "200")
    body = b"LHTTP/1.0 notice\r\npublish:news\r\n\r\nx"
    cases = [
        ({}, body, 401),
        ({"Authorization": "Bearer nope"}, body, 403),
        ({"Authorization": "Bearer s3cret"}, body + b"x" * 300, 413),
        ({"Authorization": "Bearer s3cret"}, body, 200),
    ]
    for headers, data, status in cases:
        response = await treq.post(node.publishURL, data=data, headers=headers)
        assert response.code == status, (headers, len(data))
        await response.content()


@pytest_twisted.ensureDeferred
async def test_oversizedWebSocketMessageClosesWith1009(startNode):
    node = startNode("--max-message-size", "100")
    alice = await client(node.url)
    alice.sendLHTTP(b"LHTTP/1.0 big\r\n\r\n" + b"x" * 500)
    await alice.closed
    assert alice.closeCode == 1009


@pytest_twisted.ensureDeferred
async def test_invalidUTF8TextFrameClosesWith1007(lhttpNode):
    alice = await client(lhttpNode.url)
    alice.sendMessage(b"LHTTP/1.0 x\r\n\r\n\xff\xfe", isBinary=False)
    await alice.closed
    assert alice.closeCode == 1007
