"""
The pure LHTTP/1.0 codec (SPEC sections 1 and 4): bytes in, values out;
values in, bytes out. No I/O, no Twisted.

A message is::

    LHTTP/1.0 <command>\\r\\n
    <name>:<value>\\r\\n      (zero or more)
    \\r\\n
    <body>

A parsed L{Message} keeps the exact bytes it came from in C{raw}, so a
message is relayed verbatim; L{serialize} writes the canonical form
(C{name:value}, no spaces around the colon), and C{parse(serialize(m)) == m}
for every valid message.
"""

import re

from lhttp.errors import BadMultipart, MalformedMessage

START = b"LHTTP/1.0 "
CRLF = b"\r\n"
BLANK = b"\r\n\r\n"

# A command: one or more bytes, none of them space or control.
_isCommand = re.compile(rb"[^\x00-\x20\x7f]+").fullmatch
# A header name: printable ASCII except space and ':'.
_isName = re.compile(rb"[\x21-\x39\x3b-\x7e]+").fullmatch
# A header value may hold anything but CR, LF and NUL.
_badValue = re.compile(rb"[\x00\r\n]").search
_isOffset = re.compile(r"[0-9]{1,18}").fullmatch
# Header lists split on ASCII spaces and tabs only, as the original does:
# other Unicode spaces belong to an item.
_splitList = re.compile(r"[ \t]+").split


def splitList(value):
    """
    The items of a space-separated header value (C{subscribe: a b},
    C{multipart: 0 14}): split on ASCII spaces and tabs only.
    """
    return [item for item in _splitList(value) if item]


def _headerIndex(headers):
    """
    Map lower-cased header names to the value of their first occurrence.
    """
    index = {}
    for name, value in headers:
        index.setdefault(name.lower(), value)
    return index


class _HeaderLookup:
    """
    Case-insensitive C{getHeader} over an ordered list of C{(name, value)}.
    """

    __slots__ = ()

    def getHeader(self, name, default=None):
        """
        @return: the value of the first header called C{name} (compared
            case-insensitively), or C{default}.
        """
        index = self._index
        if index is None:
            index = self._index = _headerIndex(self.headers)
        return index.get(name.lower(), default)


class Message(_HeaderLookup):
    """
    One LHTTP message.

    @ivar command: the command token, a L{str}.
    @ivar headers: a L{list} of C{(name, value)} L{str} pairs, in order, with
        their original spelling.
    @ivar body: L{bytes}.
    @ivar raw: the exact bytes this message was parsed from, or L{None} for a
        message built in code.
    @ivar parts: the multipart parts (a L{list} of L{Part}) once split, else
        L{None}.
    """

    __slots__ = ("command", "headers", "body", "raw", "parts", "_index")

    def __init__(self, command, headers=(), body=b"", raw=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.command = command
        self.headers = list(headers)
        self.body = body
        self.raw = raw
        self.parts = None
        self._index = None

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return (self.command, self.headers, self.body) == (
            other.command,
            other.headers,
            other.body,
        )

    def __repr__(self):
        return (
            f"Message(command={self.command!r}, headers={self.headers!r}, "
            f"body={self.body[:64]!r}{'...' if len(self.body) > 64 else ''})"
        )

    def toBytes(self):
        """
        @return: the bytes to send: C{raw} when parsed, else L{serialize}.
        """
        if self.raw is not None:
            return self.raw
        return serialize(self)


class Part(_HeaderLookup):
    """
    One part of a multipart body: headers and a body, like a message without
    a start line.
    """

    __slots__ = ("headers", "body", "_index")

    def __init__(self, headers=(), body=b""):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.headers = list(headers)
        self.body = body
        self._index = None

    def __eq__(self, other):
        if not isinstance(other, Part):
            return NotImplemented
        return (self.headers, self.body) == (other.headers, other.body)

    def __repr__(self):
        return f"Part(headers={self.headers!r}, body={self.body[:64]!r})"


def _parseHeaderLines(lines, error, where):
    """
    Parse C{name:value} lines (without their CRLF).

    @param error: the L{lhttp.errors.LHTTPError} subclass to raise.
    @param where: words for the error message, e.g. C{"header"}.
    """
    headers = []
    for number, line in enumerate(lines, 1):
        name, colon, value = line.partition(b":")
        if not colon:
            raise error(f"{where} line {number} has no ':' ({line[:40]!r})")
        if not _isName(name):
            raise error(f"{where} line {number} has a bad name ({name[:40]!r})")
        if _badValue(value):
            raise error(f"{where} line {number} holds a bare CR, LF or NUL")
        try:
            headers.append((name.decode("ascii"), value.strip(b" \t").decode("utf-8")))
        except UnicodeDecodeError:
            raise error(f"{where} line {number} is not valid UTF-8") from None
    return headers


def parse(data, maxHeaders=None, maxLineLength=None):
    """
    Parse one LHTTP/1.0 message.

    @param data: L{bytes} (a L{str} is encoded as UTF-8).
    @param maxHeaders: refuse a message with more header lines than this.
    @param maxLineLength: refuse a start or header line longer than this,
        in bytes.
    @rtype: L{Message}
    @raise MalformedMessage: with a human-readable reason, and the
        message's C{command} when its start line could be read.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data.startswith(START):
        raise MalformedMessage("the start line must be 'LHTTP/1.0 <command>'")
    end = data.find(BLANK)
    if end < 0:
        raise MalformedMessage(
            "the headers never end: no blank line (CRLF CRLF)",
            command=_readableCommand(data, maxLineLength),
        )
    lines = data[len(START):end].split(CRLF)
    command = lines[0]
    if not _isCommand(command):
        raise MalformedMessage(
            "the command must be one token with no spaces or control characters"
        )
    try:
        commandText = command.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("the command is not valid UTF-8") from None
    try:
        _checkLimits(lines, maxHeaders, maxLineLength, MalformedMessage)
        headers = _parseHeaderLines(lines[1:], MalformedMessage, "header")
    except MalformedMessage as error:
        if maxLineLength is None or len(command) <= maxLineLength:
            error.command = commandText
        raise
    return Message(commandText, headers, data[end + 4:], raw=data)


def _readableCommand(data, maxLineLength):
    """
    The command of a message that is malformed after its start line, if
    the start line is whole, valid and within C{maxLineLength} (L{None}
    otherwise).
    """
    lineEnd = data.find(CRLF, len(START))
    command = data[len(START):lineEnd] if lineEnd >= 0 else b""
    if maxLineLength is not None and len(command) > maxLineLength:
        return None
    if not _isCommand(command):
        return None
    try:
        return command.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _checkLimits(lines, maxHeaders, maxLineLength, error):
    """
    @param lines: a start line (or nothing, for a part) and header lines.
    @raise error: more than C{maxHeaders} header lines, or a line longer
        than C{maxLineLength} bytes.
    """
    if maxHeaders is not None and len(lines) - 1 > maxHeaders:
        raise error(f"more than {maxHeaders} header lines", reason="too many headers")
    if maxLineLength is not None and max(map(len, lines)) > maxLineLength:
        raise error(
            f"a start or header line is longer than {maxLineLength} bytes", reason="header too long"
        )


def _checkHeaders(headers):
    for name, value in headers:
        if not _isName(name.encode("utf-8")):
            raise ValueError(f"bad header name {name!r}")
        if _badValue(value.encode("utf-8")):
            raise ValueError(f"header {name!r} has a CR, LF or NUL in its value")


def _headerBytes(headers):
    return b"".join(
        f"{name}:{value}\r\n".encode("utf-8") for name, value in headers
    )


def serialize(message):
    """
    Write a message in canonical form.

    @type message: L{Message}
    @rtype: L{bytes}
    @raise ValueError: if the command or a header could not be parsed back
        (so code can never inject a header line).
    """
    command = message.command.encode("utf-8")
    if not _isCommand(command):
        raise ValueError(f"bad command {message.command!r}")
    _checkHeaders(message.headers)
    return b"".join(
        (START, command, CRLF, _headerBytes(message.headers), CRLF, message.body)
    )


def _parseOffsets(value, size):
    items = splitList(value)
    if not items:
        raise BadMultipart("the multipart header lists no offsets")
    offsets = []
    for item in items:
        if not _isOffset(item):
            raise BadMultipart(f"multipart offset {item[:20]!r} is not a non-negative integer")
        offset = int(item)
        if offsets and offset <= offsets[-1]:
            raise BadMultipart("multipart offsets must be strictly ascending")
        if offset >= size:
            raise BadMultipart(
                f"multipart offset {offset} is outside the {size}-byte body"
            )
        offsets.append(offset)
    return offsets


def parseMultipart(body, offsets, maxHeaders=None, maxLineLength=None):
    """
    Cut a body into parts at the offsets of a C{multipart} header (SPEC 4).

    @param body: the message body, L{bytes}.
    @param offsets: the header's value, e.g. C{"0 14"}.
    @param maxHeaders: refuse a part with more header lines than this.
    @param maxLineLength: refuse a part header line longer than this.
    @rtype: L{list} of L{Part}
    @raise BadMultipart: offsets not integers, not ascending, outside the
        body, a part without its blank line, or over the limits.
    """
    starts = _parseOffsets(offsets, len(body))
    ends = starts[1:] + [len(body)]
    parts = []
    for number, (start, end) in enumerate(zip(starts, ends), 1):
        chunk = body[start:end]
        if chunk.startswith(CRLF):
            parts.append(Part((), chunk[2:]))
            continue
        blank = chunk.find(BLANK)
        if blank < 0:
            raise BadMultipart(
                f"multipart part {number} has no blank line after its headers"
            )
        lines = chunk[:blank].split(CRLF)
        # _checkLimits counts a start line; a part has none.
        _checkLimits([b"", *lines], maxHeaders, maxLineLength, BadMultipart)
        headers = _parseHeaderLines(lines, BadMultipart, f"part {number} header")
        parts.append(Part(headers, chunk[blank + 4:]))
    return parts


# The first header of every message the node writes itself (lhttp.word).
NODE_HEADER = "lhttp-node"


def isText(payload):
    """
    Whether a payload goes out in a text frame: valid UTF-8 does, anything
    else goes as binary.
    """
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def errorReply(error, command=None, headers=()):
    """
    The C{LHTTP/1.0 error} reply of SPEC section 7 for an
    L{lhttp.errors.LHTTPError}: C{status}, C{reason}, the C{command} of the
    message it answers when known (clients match errors by it), then the
    error's own C{headers} (a refused channel's C{channel}), then
    C{headers}; the body is the human-readable detail.

    @rtype: L{Message}
    """
    replyHeaders = [
        (NODE_HEADER, "reply"), ("status", str(error.status)), ("reason", error.reason)
    ]
    if command is None:
        command = error.command
    if command is not None:
        replyHeaders.append(("command", command))
    replyHeaders.extend(error.headers)
    replyHeaders.extend(headers)
    return Message("error", replyHeaders, str(error.detail))


_MISSED = (
    "This server lost its connection to the cluster for a while, or could not keep up; "
    "messages published on other servers to this channel meanwhile may not have been "
    "delivered."
)


def missedNotice(channel, detail=_MISSED):
    """
    What a subscriber gets when its node may have lost messages published
    to C{channel} (the cluster link was down, or could not keep up; or a
    recovery's messages were removed from the history before they were
    read): an error reply with status 503 and a C{channel} header.

    @param detail: its body, saying why.
    @rtype: L{bytes}
    """
    from lhttp.errors import MessagesMissed

    return serialize(errorReply(MessagesMissed(detail), headers=[("channel", channel)]))


def serializeMultipart(parts):
    """
    Write parts as a multipart body.

    @type parts: iterable of L{Part}
    @return: C{(offsets, body)}: the C{multipart} header value and the body.
    """
    chunks = []
    offsets = []
    position = 0
    for part in parts:
        _checkHeaders(part.headers)
        chunk = _headerBytes(part.headers) + CRLF + part.body
        offsets.append(str(position))
        position += len(chunk)
        chunks.append(chunk)
    return " ".join(offsets), b"".join(chunks)
