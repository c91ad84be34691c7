"""
Publishing from a backend: C{POST /publish} with treq::

    from lhttp.publisher import publish

    await publish(["room"], "notice", [("from", "billing")], "paid",
                  url="http://127.0.0.1:8081/publish")
"""

import json

import treq as _treq
from twisted.internet.defer import ensureDeferred

from lhttp.channels import channelList
from lhttp.codec import Message, serialize
from lhttp.errors import LHTTPError

DEFAULT_URL = "http://127.0.0.1:8081/publish"


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
