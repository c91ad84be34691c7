"""
History on the wire: the position a relayed message carries (L{stamp},
L{POSITION_HEADERS}), the C{since}/C{epoch} headers of a subscribe
(L{recoveryPlan}), and the C{recovery} and C{history} replies.
"""

import re

from lhttp.codec import Part, serializeMultipart
from lhttp.errors import BadHeaderValue
from lhttp.word import nodeMessage

# What stamp adds, and only the node may set on a published message.
POSITION_HEADERS = ("offset", "epoch", "prev")


def stamp(payload, channel, offset, epoch, prev=0):
    """
    A published message as a history channel's subscribers get it: the
    node's mark C{lhttp-node:position} first (L{lhttp.word}), then the
    C{channel}, C{offset}, C{epoch} and C{prev} headers, before the
    message's own (which a client cannot use to fake a position: a header
    is looked up by its first occurrence, and only the mark says the
    position is the node's).

    @param prev: the offset of the channel's previous message in the same
        epoch (0: none, or not known): a receiver that last saw an offset
        below it missed something.
    """
    end = payload.find(b"\r\n")
    if end < 0:
        return payload
    head = b"lhttp-node:position\r\nchannel:%s\r\noffset:%d\r\nepoch:%s\r\nprev:%d\r\n" % (
        channel.encode(), offset, epoch.encode(), prev)
    return payload[: end + 2] + head + payload[end + 2 :]


# An offset, a count, a limit: ASCII digits only (str.isdigit takes '²' and
# Arabic-Indic digits), at most 19 of them.
_isNumber = re.compile(r"[0-9]{1,19}").fullmatch
# An epoch as the node gives it (hex), with room for what other engines use.
_isEpoch = re.compile(r"[0-9A-Za-z_-]{1,64}").fullmatch
MAX_OFFSET = 2 ** 63 - 1


def parseSince(value, names, header="since"):
    """
    Read a C{since} or C{epoch} header for the channels of a C{subscribe}
    header: a bare value applies to every channel; C{name=value} pairs,
    space-separated, to one each.

    @return: C{{channel: value}}.
    @raise BadHeaderValue: a pair for a channel not subscribed to, or a
        malformed value.
    """
    if value is None:
        return {}
    items = value.split()
    if len(items) > len(names):
        raise BadHeaderValue(header, "at most one value per channel of the subscribe header")
    if len(items) == 1 and "=" not in items[0]:
        return {name: items[0] for name in names}
    found = {}
    for item in items:
        name, sep, rest = item.rpartition("=")
        if not sep or name not in names or not rest:
            raise BadHeaderValue(
                header, f"{item[:80]!r}: want CHANNEL=VALUE for a channel of the subscribe header")
        found[name] = rest
    return found


def offsetOf(text, header="since"):
    """
    @param header: the header it came in, named by the error.
    @raise BadHeaderValue: not a non-negative integer of ASCII digits
        below 2**63.
    """
    if not isinstance(text, str) or not _isNumber(text) or int(text) > MAX_OFFSET:
        raise BadHeaderValue(
            header,
            f"an offset is a non-negative integer (ASCII digits, below 2**63), not {str(text)[:40]!r}")
    return int(text)


def epochOf(text):
    """
    @raise BadHeaderValue: not an epoch (1 to 64 ASCII letters, digits,
        C{-} or C{_}).
    """
    if text is None:
        return None
    if not isinstance(text, str) or not _isEpoch(text):
        raise BadHeaderValue(
            "epoch", f"an epoch is 1 to 64 ASCII letters, digits, '-' or '_', not {str(text)[:40]!r}")
    return text


def recoveryPlan(names, since, epoch):
    """
    What a subscribe asks to recover: C{since} and C{epoch} as header
    values (see L{parseSince}) or already C{{channel: value}} / a single
    value.

    @return: C{{channel: (since, epoch)}}, empty without C{since}.
    @raise BadHeaderValue: a malformed value (the reason names the header).
    """
    if since is None:
        return {}
    offsets = _perChannel(since, names, "since")
    epochs = _perChannel(epoch, names, "epoch")
    return {name: (offsetOf(str(value)), epochOf(epochs.get(name)))
            for name, value in offsets.items()}


def _perChannel(value, names, header):
    if value is None:
        return {}
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise BadHeaderValue(
                header, f"{sorted(unknown)[0]!r} is not among the channels subscribed to")
        return dict(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return {name: str(value) for name in names}
    if not isinstance(value, str):
        raise BadHeaderValue(header, f"not a header value: {value!r}"[:80])
    return parseSince(value, names, header)


def historyReply(channel, recovery, command="history", maxSize=None):
    """
    The reply to a C{history} request: the messages as the parts of a
    multipart body, each part's headers giving its offset.

    With C{maxSize}, the reply holds the newest of C{recovery.messages}
    that fit in that many bytes; when older retained messages are left
    out (C{recovery.more}, or cut here) it says C{more:true} and
    C{before:<offset>}, the offset to ask the page before with. A message
    too large to fit a reply alone is left out and named by
    C{skipped:<offset>}.

    @rtype: L{Message}
    """
    epoch = recovery.epoch
    headers = [
        ("channel", channel),
        ("epoch", epoch),
        ("offset", str(recovery.top)),
    ]
    # The headers' own size, with room for count, complete, more, before,
    # skipped and multipart (one offset of at most 20 characters a part).
    budget = None
    if maxSize is not None:
        budget = maxSize - 256 - sum(len(n) + len(v) + 3 for n, v in headers) - len(command)
    parts = []
    used = 0
    cut = recovery.more
    skipped = None
    oldest = None
    messages = recovery.messages
    for index in range(len(messages) - 1, -1, -1):
        offset, payload = messages[index]
        prev = messages[index - 1][0] if index else recovery.prev
        part = Part([("offset", str(offset))], stamp(payload, channel, offset, epoch, prev))
        if budget is not None:
            size = len(part.body) + 2 * len(str(offset)) + 32
            if used + size > budget:
                if not parts:
                    skipped = offset
                    oldest = offset
                    cut = cut or len(recovery.messages) > 1
                else:
                    cut = True
                break
            used += size
        parts.append(part)
        oldest = offset
    parts.reverse()
    headers += [
        ("count", str(len(parts))),
        ("complete", "true" if recovery.complete and not cut else "false"),
    ]
    if cut and oldest is not None:
        headers += [("more", "true"), ("before", str(oldest))]
    if skipped is not None:
        headers.append(("skipped", str(skipped)))
    body = b""
    if parts:
        offsets, body = serializeMultipart(parts)
        headers.append(("multipart", offsets))
    return nodeMessage(command, headers, body)


def recoveryReply(channel, recovery, since, command):
    """
    What a subscriber that asked to recover gets first: whether nothing
    was lost, and what follows.
    """
    headers = [
        ("channel", channel),
        ("recovered", "true" if recovery.complete else "false"),
    ]
    if recovery.epoch is not None:
        headers.append(("epoch", recovery.epoch))
    else:
        # No history kept for it, or it could not be read: a client keeps
        # its position only in the second case.
        headers.append(("history", "unavailable" if recovery.unavailable else "none"))
    headers += [
        ("since", str(since)),
        ("count", str(recovery.total)),
        ("offset", str(recovery.top)),
        ("command", command),
    ]
    return nodeMessage("recovery", headers, b"")
