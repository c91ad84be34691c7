"""
Publish acknowledgements and idempotent retries (C{docs/protocol.rst},
"Acknowledgements").

A publish that carries C{publish-ack:<id>} is answered, once the broker
has confirmed it, in the node's word::

    LHTTP/1.0 ack
    lhttp-node:reply
    publish-ack:<id>
    status:200
    duplicate:true                   (only for a repeat of a known key)
    channel:<name>                   (one channel/offset/epoch triple
    offset:<n>                        per history channel published to)
    epoch:<epoch>

and a publish that fails gets the usual error reply with the same
C{publish-ack:<id>} header. A publish that carries
C{idempotency-key:<key>} is stored and delivered at most once per channel
however often it is sent again within the window: on JetStream the key
becomes the C{Nats-Msg-Id} (the stream's duplicate window), elsewhere a
bounded window of recent keys (L{RecentKeys}) drops the repeat. Both
headers are the publisher's business with the node: they are taken off
the message subscribers get.
"""

import hashlib
import time
from collections import OrderedDict

from lhttp.errors import BadHeader
from lhttp.word import nodeMessage

ACK_HEADER = "publish-ack"
KEY_HEADER = "idempotency-key"
PRIVATE_HEADERS = frozenset((ACK_HEADER, KEY_HEADER))

# The NATS header carrying a keyed publish's id on plain channels, so every
# node drops a repeat it has delivered already.
NATS_ID_HEADER = "Lhttp-Msg-Id"

MAX_TOKEN_LENGTH = 64

# How long, and for how many keyed publishes, a node remembers a key; the
# JetStream stream's duplicate window is the same.
WINDOW_SECONDS = 120
WINDOW_KEYS = 20000


def checkToken(name, value):
    """
    A C{publish-ack} id or an C{idempotency-key}: 1 to 64 printable ASCII
    characters, no space.

    @raise BadHeader: it is not (the reason names the header).
    """
    if not 0 < len(value) <= MAX_TOKEN_LENGTH or not all("!" <= c <= "~" for c in value):
        raise BadHeader(
            f"'{name}' must be 1 to {MAX_TOKEN_LENGTH} printable ASCII characters "
            f"without spaces"
        )
    return value


def publishOptions(message):
    """
    The acknowledgement id and idempotency key of a publish, checked.

    @return: C{(ackId, key)}, each L{None} when absent.
    @raise BadHeader: a bad value.
    """
    ackId = message.getHeader(ACK_HEADER)
    key = message.getHeader(KEY_HEADER)
    if ackId is not None:
        checkToken(ACK_HEADER, ackId)
    if key is not None:
        checkToken(KEY_HEADER, key)
    return ackId, key


def withoutPrivateHeaders(message):
    """
    C{message} as subscribers get it: without C{publish-ack} and
    C{idempotency-key}.
    """
    from lhttp.codec import Message

    headers = [h for h in message.headers if h[0].lower() not in PRIVATE_HEADERS]
    if len(headers) == len(message.headers):
        return message
    return Message(message.command, headers, message.body)


def messageId(channel, key):
    """
    The id of a keyed publish on one channel: the same on every node (it is
    JetStream's C{Nats-Msg-Id}), and two channels never share one.
    """
    digest = hashlib.sha256(f"{channel}\n{key}".encode("ascii", "replace")).hexdigest()
    return "k-" + digest[:40]


class Receipt:
    """
    What the broker confirmed of one publish.

    @ivar positions: C{(channel, epoch, offset)} of each history channel.
    @ivar duplicate: whether it repeated a key already published (nothing
        new was stored or delivered).
    """

    __slots__ = ("positions", "duplicate")

    def __init__(self, positions=(), duplicate=False):
        self.positions = tuple(positions)
        self.duplicate = duplicate

    def __repr__(self):
        return f"Receipt({self.positions!r}, duplicate={self.duplicate!r})"


def ackReply(ackId, receipt):
    """
    The C{LHTTP/1.0 ack} a publisher gets once its publish is confirmed.

    @rtype: L{lhttp.codec.Message}
    """
    headers = [(ACK_HEADER, ackId), ("status", "200")]
    if receipt.duplicate:
        headers.append(("duplicate", "true"))
    for channel, epoch, offset in receipt.positions:
        headers.append(("channel", channel))
        headers.append(("offset", str(offset)))
        if epoch is not None:
            headers.append(("epoch", str(epoch)))
    return nodeMessage("ack", headers)


class RecentKeys:
    """
    A bounded window of recent publish ids: at most C{size} of them, each
    for at most C{seconds}. Memory is bounded by C{size}.
    """

    def __init__(self, now=time.monotonic, seconds=WINDOW_SECONDS, size=WINDOW_KEYS):
        """
        @param now: the clock: a callable giving seconds (a test passes
            L{twisted.internet.task.Clock.seconds}).
        """
        self._now = now
        self._seconds = seconds
        self._size = size
        self._entries = OrderedDict()

    def __len__(self):
        return len(self._entries)

    def _expire(self, now):
        entries = self._entries
        limit = now - self._seconds
        while entries:
            first = next(iter(entries))
            if entries[first][0] > limit and len(entries) <= self._size:
                return
            del entries[first]

    def get(self, identifier):
        """
        @return: what was remembered with C{identifier} if it is in the
            window (L{None} is remembered as C{True}), else L{None}.
        """
        now = self._now()
        self._expire(now)
        entry = self._entries.get(identifier)
        if entry is None:
            return None
        return True if entry[1] is None else entry[1]

    def remember(self, identifier, value=None):
        now = self._now()
        self._entries.pop(identifier, None)
        self._entries[identifier] = (now, value)
        self._expire(now)

    def seen(self, identifier):
        """
        Remember C{identifier}; whether it was in the window already.
        """
        if self.get(identifier) is not None:
            return True
        self.remember(identifier)
        return False
