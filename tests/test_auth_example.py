"""
The example auth filter (examples/lhttp_examples/auth.py) on a real node:
no token, bad token, expired token refused; tokens in the URL or a header
accepted.
"""

import sys

import pytest_twisted

from lhttpclients import barrier, client
from procs import ROOT

sys.path.insert(0, str(ROOT / "examples"))

from lhttp_examples.auth import issueToken, verifyToken  # noqa: E402

SECRET = "test-secret"


def test_tokens():
    token = issueToken(SECRET, "ann", ttl=60, now=1000)
    assert verifyToken(SECRET, token, now=1030) == "ann"
    assert verifyToken(SECRET, token, now=1061) is None
    assert verifyToken("other", token, now=1030) is None
    assert verifyToken(SECRET, token.replace("ann", "bob"), now=1030) is None
    assert verifyToken(SECRET, "garbage") is None


@pytest_twisted.ensureDeferred
async def test_filterOnRealNode(startNode):
    node = startNode(
        "--filter", "lhttp_examples.auth.TokenAuthFilter",
        env={"LHTTP_AUTH_SECRET": SECRET}, pythonPath=[ROOT / "examples"],
    )
    stranger = await client(node.url)
    stranger.subscribe("room")
    stranger.send("hello", [("auth", issueToken("wrong", "eve"))])
    refused = [await stranger.nextMessage(10) for _ in range(2)]
    assert [m.getHeader("status") for m in refused] == ["401", "401"]

    viaURL = await client(node.url + "?token=" + issueToken(SECRET, "ann"))
    viaURL.subscribe("room")
    assert await barrier(viaURL) == []

    viaHeader = await client(node.url)
    viaHeader.send("login", [("auth", issueToken(SECRET, "bob")), ("subscribe", "room")])
    assert await barrier(viaHeader) == []
    viaHeader.publish("room", "chat", body="hi from bob")
    assert (await viaURL.nextMessage(10)).body == b"hi from bob"

    # The third failure closes the stranger's connection.
    stranger.send("again")
    await stranger.closed
    assert stranger.closeCode == 1008
