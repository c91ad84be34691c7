"""
Real WebSocket clients for integration tests, on lhttp.client.
"""

import itertools
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

from lhttp.client import connect

_barriers = itertools.count()


async def client(url):
    return await connect(reactor, url)


async def barrier(client, timeout=10):
    """
    Make sure the server has handled everything this client sent so far:
    the connection's messages are handled in order, so once a message
    published to a private channel comes back, all earlier ones were.
    Returns the messages that arrived before it.
    """
    channel = f"barrier-{next(_barriers)}"
    client.send("barrier", [("subscribe", channel), ("publish", channel), ("unsubscribe", channel)])
    before = []
    while True:
        message = await client.nextMessage(timeout)
        if message.command == "barrier" and message.getHeader("publish") == channel:
            return before
        before.append(message)


async def eventually(condition, timeout=20.0, interval=0.05, what="condition"):
    """
    Like L{procs.waitFor}, but lets the reactor run while it waits: use it
    inside tests that have clients connected.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await deferLater(reactor, interval)


async def untilTrue(check, timeout=20.0, interval=0.1, what="condition"):
    """
    Like L{eventually} for an async C{check()}: await it until it returns
    a true value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await deferLater(reactor, interval)


async def health(node):
    """
    @return: C{(status code, JSON document)} of the node's C{/health}.
    """
    import json

    import treq

    response = await treq.get(node.httpURL + "health", timeout=5)
    return response.code, json.loads(await response.content())


async def untilHealth(node, status, timeout=20.0):
    """
    Wait until the node's C{/health} answers C{status}; return the seconds
    it took.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            code, document = await health(node)
        except Exception:
            code, document = None, None
        if code == status:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"/health of {node.url} is {code} {document}, not {status}, after {timeout}s")
        await deferLater(reactor, 0.1)
