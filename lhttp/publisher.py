"""
Publishing from a backend: C{POST /publish} with treq::

    from lhttp.publisher import publish

    await publish(["room"], "notice", [("from", "billing")], "paid",
                  url="http://127.0.0.1:8081/publish")

and server-side control, C{POST /api/disconnect} and
C{POST /api/unsubscribe} (docs/operations.rst)::

    from lhttp.publisher import disconnect, unsubscribe

    await disconnect("alice", url="http://127.0.0.1:8081/", token=token)
    await unsubscribe("alice", "room.1", url="http://127.0.0.1:8081/", token=token)
"""

import json
from urllib.parse import urlsplit, urlunsplit

import treq as _treq
from twisted.internet.defer import ensureDeferred

from lhttp.channels import channelList
from lhttp.codec import Message, serialize
from lhttp.errors import LHTTPError

DEFAULT_URL = "http://127.0.0.1:8081/publish"
DEFAULT_NODE_URL = "http://127.0.0.1:8081/"


class PublishRefused(LHTTPError):
    """
    The node answered C{/publish} with an error status (400, 401, 403, 413,
    503): nothing was published.

    @ivar status: the HTTP status.
    """

    def __init__(self, status, reason, detail):
        LHTTPError.__init__(self, detail, reason)
        self.status = status


def publish(channels, command="publish", headers=(), body=b"", url=DEFAULT_URL, token=None, treq=None,
            key=None):
    """
    Publish a new message through a node's C{/publish}.

    @param channels: channel names, or one space-separated string.
    @param command: the message's command.
    @param headers: more C{(name, value)} headers for subscribers.
    @param body: L{bytes} or L{str}.
    @param url: the node's C{/publish} URL.
    @param token: the publish token, if the node wants one.
    @param treq: a treq-like HTTP client (default: L{treq}; tests pass
        L{treq.testing.StubTreq}).
    @param key: an idempotency key: publishing again with the same one
        (after a 503, say) stores and delivers it once.
    @return: a L{Deferred} firing with the node's JSON answer (a L{dict}:
        C{positions} on history channels, C{duplicate} for a repeat), or
        failing with L{PublishRefused} (503: not known to be stored; publish
        again with the same key).
    """
    return ensureDeferred(
        _publish(channels, command, headers, body, url, token, treq or _treq, key)
    )


async def _publish(channels, command, headers, body, url, token, client, key=None):
    names = " ".join(channelList(channels))
    extra = [("idempotency-key", key)] if key is not None else []
    message = Message(command, [("publish", names), *extra, *headers], body)
    requestHeaders = {"Content-Type": "text/plain; charset=utf-8"}
    if token:
        requestHeaders["Authorization"] = f"Bearer {token}"
    response = await client.post(url, data=serialize(message), headers=requestHeaders)
    content = await response.content()
    try:
        document = json.loads(content)
    except ValueError:
        document = {"reason": "not an lhttp node", "detail": content[:200].decode("utf-8", "replace")}
    if not 200 <= response.code < 300:
        raise PublishRefused(response.code, document.get("reason", ""), document.get("detail", ""))
    return document


class ControlRefused(LHTTPError):
    """
    The node answered C{/api/...} with an error status: 400, 401, 403,
    413, or 503 (the command may not have reached every node: send it
    again, it does no harm twice).

    @ivar status: the HTTP status.
    """

    def __init__(self, status, reason, detail):
        LHTTPError.__init__(self, detail, reason)
        self.status = status


def apiURL(url, command):
    """
    The URL of C{/api/<command>} on the node at C{url}: its HTTP root
    (C{http://127.0.0.1:8081/}, or where its tree is mounted), or the
    command's URL itself.
    """
    parts = urlsplit(url)
    path = parts.path
    if path.rstrip("/").endswith(f"/api/{command}"):
        return url
    if not path.endswith("/"):
        path += "/"
    return urlunsplit(parts._replace(path=f"{path}api/{command}"))


def disconnect(user, reconnect=False, url=DEFAULT_NODE_URL, token=None, treq=None):
    """
    Close every connection of C{user}, on every node of the cluster: close
    code 4403, or 4000 (reconnect welcome) with C{reconnect}.

    @param url: the node's HTTP root (see L{apiURL}).
    @param token: the node's publish token.
    @return: a L{Deferred} firing with the node's JSON answer
        (C{{"user", "closed", "cluster"}}), or failing with
        L{ControlRefused}.
    """
    return ensureDeferred(_control(
        apiURL(url, "disconnect"), {"user": user, "reconnect": bool(reconnect)}, token,
        treq or _treq))


def unsubscribe(user, channel, url=DEFAULT_NODE_URL, token=None, treq=None):
    """
    Make every connection of C{user}, on every node, leave C{channel}.

    @return: a L{Deferred} firing with the node's JSON answer
        (C{{"user", "channel", "unsubscribed", "cluster"}}), or failing
        with L{ControlRefused}.
    """
    return ensureDeferred(_control(
        apiURL(url, "unsubscribe"), {"user": user, "channel": channel}, token, treq or _treq))


async def _control(url, command, token, client):
    requestHeaders = {"Content-Type": "application/json"}
    if token:
        requestHeaders["Authorization"] = f"Bearer {token}"
    response = await client.post(url, data=json.dumps(command).encode("utf-8"),
                                 headers=requestHeaders)
    content = await response.content()
    try:
        document = json.loads(content)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {"reason": "not an lhttp node", "detail": content[:200].decode("utf-8", "replace")}
    if not 200 <= response.code < 300:
        raise ControlRefused(response.code, document.get("reason", ""), document.get("detail", ""))
    return document
