"""
The node's word (SPEC section 8): how anyone can tell, from a message
alone, one the node wrote from one a client published.

The rule, for third-party clients (C{docs/protocol.rst}): a message whose
B{first header} is C{lhttp-node} is the node's. C{lhttp-node:reply}: the
whole message is the node's, an answer to this connection (C{error},
C{recovery}, C{history}, C{presence}, C{presence-stats}, C{ack}).
C{lhttp-node:event}: the whole message is the node's, published on a
channel (C{join}, C{leave}). C{lhttp-node:position}: a client's message
relayed on a history channel; the headers right after this one
(C{channel}, C{offset}, C{epoch}) are the node's, the rest and the body
are the publisher's.

No client can write any of them: the node refuses every message that
carries an C{lhttp-node} header, in any letter case and at any place, over
WebSocket and C{POST /publish} (400 C{reserved header}); and a message
that arrives through NATS with one, without the NATS header that only
this project's nodes set on their own publishes (an original Go node
relaying a client's message verbatim), is not delivered.
"""

from lhttp.codec import NODE_HEADER, Message
from lhttp.errors import ReservedHeader

HEADER = NODE_HEADER
REPLY = "reply"
EVENT = "event"
POSITION = "position"

# The NATS message header this project's nodes put on the messages they
# publish as their own (join, leave); Go nodes never set it.
NATS_HEADER = "Lhttp-Node"

_KINDS = frozenset((REPLY, EVENT, POSITION))
_MARK = (HEADER + ":").encode("ascii")
_MARK_LENGTH = len(_MARK)


def nodeMessage(command, headers=(), body=b"", kind=REPLY):
    """
    A message in the node's own word: C{lhttp-node:<kind>} first, then
    C{headers}.

    @rtype: L{Message}
    """
    return Message(command, [(HEADER, kind), *headers], body)


def kindOf(message):
    """
    @param message: a parsed L{Message}.
    @return: C{"reply"}, C{"event"} or C{"position"} if the node wrote it
        (its first header is C{lhttp-node}), else L{None}.
    """
    headers = message.headers
    if headers and headers[0][0].lower() == HEADER and headers[0][1] in _KINDS:
        return headers[0][1]
    return None


def isNodeWord(message):
    """
    Whether the whole message is the node's (C{reply} or C{event}).
    """
    return kindOf(message) in (REPLY, EVENT)


def refuseForged(message):
    """
    The node's ingress check: no client message may carry the header.

    @raise ReservedHeader: it does, under any spelling.
    """
    for name, _ in message.headers:
        if name.lower() == HEADER:
            raise ReservedHeader(
                f"the {name!r} header is the node's own (it marks what the node wrote); "
                "a client's message may not carry it"
            )


def payloadKind(payload):
    """
    The kind of a serialized message that starts with the node's mark,
    exactly as the node writes it (lowercase), else L{None}. Cheap: it
    looks at the first header line only.
    """
    start = payload.find(b"\r\n")
    if start < 0:
        return None
    start += 2
    if payload[start:start + _MARK_LENGTH] != _MARK:
        return None
    end = payload.find(b"\r\n", start)
    if end < 0:
        return None
    kind = payload[start + _MARK_LENGTH:end].strip().decode("ascii", "replace")
    return kind if kind in _KINDS else None


def forgedPayload(payload):
    """
    Whether a serialized message from outside this node's ingress (NATS,
    without L{NATS_HEADER}) claims to be a node's: its first header is
    C{lhttp-node} in any letter case.
    """
    start = payload.find(b"\r\n")
    if start < 0:
        return False
    start += 2
    return payload[start:start + _MARK_LENGTH].lower() == _MARK
