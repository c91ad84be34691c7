"""
A Twisted LHTTP client.

One connection, as Deferreds::

    client = yield connect(reactor, "ws://127.0.0.1:8081/")
    client.subscribe(["room"])
    yield client.sync()                  # the server has subscribed us
    client.publish(["room"], "chat", [("nick", "ann")], "hello")
    message = yield client.nextMessage(timeout=5)

Or a client that stays connected: L{ReconnectingClient} reconnects with
backoff after the connection drops and subscribes again to every channel it
was subscribed to::

    client = ReconnectingClient(reactor, "ws://127.0.0.1:8081/", onMessage=print)
    client.startService()
    client.subscribe(["room"])

On history channels (a node run with C{--history}) L{ReconnectingClient}
also remembers the last offset and epoch it saw on each channel, subscribes
again with C{since}/C{epoch} so the node sends what was missed, drops
messages it has already seen, and reports each recovery to C{onRecovery};
C{history(channel, limit)} reads a channel's last messages.

On a node that authenticates (C{--auth-*}; C{docs/protocol.rst},
"Authentication") give it a token, or a C{getToken} callable that returns
one (or a L{Deferred} or coroutine of one)::

    client = ReconnectingClient(reactor, url, getToken=fetchToken)

Each connection then starts with C{LHTTP/1.0 connect} and a C{token}
header, and nothing else is sent before the node's reply; the token is
refreshed shortly before it expires and on the node's refresh notice.
"""

import itertools
import math
import os
import uuid
from collections import deque

import attr
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from hyperlink import URL
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
import inspect

from twisted.internet.defer import (
    CancelledError, Deferred, TimeoutError, ensureDeferred, fail, maybeDeferred, succeed,
)
from twisted.internet.task import deferLater
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger

from lhttp.channels import isText
from lhttp.codec import Message, parse, parseMultipart
from lhttp.errors import LHTTPError
from lhttp.word import POSITION, REPLY, isNodeWord, kindOf

SYNC_COMMAND = "lhttp-sync"

# Channels per subscribe message when subscriptions are sent again.
RESUBSCRIBE_BATCH = 100

_syncNames = itertools.count()
_ackIds = itertools.count(1)

# Statuses after which a publish is sent again, with the same key: the node
# does not know whether it was stored (503), or could not take it now (429).
RETRIED_STATUSES = frozenset((503, 429))

# Close codes of a node that authenticates (docs/protocol.rst).
CLOSE_UNAUTHORIZED = 4401    # bad or missing credential: one more try, then stop
CLOSE_DISCONNECTED = 4403    # /api/disconnect: do not reconnect
CLOSE_RECONNECT = 4000       # /api/disconnect reconnect:true: reconnect, fresh token
CLOSE_EXPIRED = 4419         # no refresh within the grace: reconnect, fresh token
CLOSE_UNAVAILABLE = 4503     # keys or connect proxy unavailable: reconnect, backoff

# Seconds before expires at most at which a token is refreshed (a quarter
# of its time left when that is less).
REFRESH_MARGIN = 30.0


class Unauthorized(Exception):
    """
    L{ReconnectingClient} stopped: the node refused its credential (close
    4401, after one more try with a fresh token) or disconnected it for
    good (close 4403).

    @ivar code: the close code.
    @ivar reply: the node's L{ErrorReply} to the C{connect}, or L{None}.
    """

    def __init__(self, code, reason, reply=None):
        self.code = code
        self.reply = reply
        detail = f": {reply}" if reply is not None else ""
        Exception.__init__(self, f"{code} {reason}{detail}")


@attr.s(frozen=True)
class Credential:
    """
    What the node's reply to C{connect} or C{refresh} said.

    @ivar user: the authenticated user.
    @ivar expires: when the credential expires (Unix seconds), or L{None}.
    """

    user = attr.ib()
    expires = attr.ib()

    @classmethod
    def fromMessage(cls, message):
        return cls(message.getHeader("user"), _offset(message.getHeader("expires"), "expires"))


def _call(function, *args):
    """
    @return: a L{Deferred} of what C{function} returns: a value, a
        L{Deferred} or a coroutine.
    """
    d = maybeDeferred(function, *args)

    def awaited(result):
        return ensureDeferred(result) if inspect.isawaitable(result) else result

    return d.addCallback(awaited)


def _tokenHeader(names, token):
    """
    The C{channel-token} header for subscribing to C{names} with
    C{token}: a string for one channel, a list in the channels' order or a
    dict C{{channel: token}}, one token per channel.
    """
    if isinstance(token, str):
        tokens = [token]
    elif isinstance(token, dict):
        tokens = [token.get(name) for name in names]
    else:
        tokens = list(token)
    if len(tokens) != len(names) or not all(
        isinstance(t, str) and t.split() == [t] for t in tokens
    ):
        raise ValueError("a subscription token per channel, without spaces")
    return ("channel-token", " ".join(tokens))


class NotConnected(Exception):
    """
    A L{ReconnectingClient} was asked to send while it has no connection.
    Nothing was sent.
    """


class ErrorReply(Exception):
    """
    The server answered a request with an error reply (C{LHTTP/1.0 error}).

    @ivar status: its C{status} (an L{int}; 0 if missing).
    @ivar reason: its C{reason}.
    @ivar message: the whole reply, a L{Message}.
    """

    def __init__(self, message):
        status = message.getHeader("status") or ""
        self.status = int(status) if len(status) == 3 and _DIGITS.issuperset(status) else 0
        self.reason = message.getHeader("reason") or "error"
        self.message = message
        Exception.__init__(self, f"{self.status} {self.reason}: {message.body.decode(errors='replace')}")


_log = Logger()

# An offset or a count: ASCII digits only (str.isdigit takes '²' and
# Arabic-Indic digits, which int() then refuses or reads), 19 at most.
_DIGITS = frozenset("0123456789")


def _offset(text, name="offset"):
    """
    A non-negative integer header value, or L{None} when missing or
    malformed (said in the log: the node never sends one).
    """
    if text is None:
        return None
    if 0 < len(text) <= 19 and _DIGITS.issuperset(text):
        return int(text)
    _log.warn("Ignored a malformed {name} header from the server: {value!r}",
              name=name, value=text[:40])
    return None


class PublishAck:
    """
    The node's acknowledgement of a publish (C{LHTTP/1.0 ack}): it was
    stored and delivered (once, whatever the retries).

    @ivar positions: C{{channel: (offset, epoch)}} of the history channels.
    @ivar duplicate: whether the node had it already (a retry).
    @ivar attempts: how many times it was sent.
    """

    def __init__(self, message, attempts=1):
        self.positions = {}
        self.duplicate = message.getHeader("duplicate") == "true"
        self.attempts = attempts
        channel = offset = None
        for name, value in message.headers:
            if name == "channel":
                channel, offset = value, None
            elif name == "offset" and channel is not None:
                offset = _offset(value)
                if offset is not None:
                    self.positions[channel] = (offset, None)
            elif name == "epoch" and channel is not None and offset is not None:
                self.positions[channel] = (offset, value)

    def __repr__(self):
        return f"<PublishAck {self.positions!r} duplicate={self.duplicate}>"



@attr.s(frozen=True)
class RecoveryReport:
    """
    What a C{recovery} reply said about one channel a subscribe asked to
    recover.

    @ivar channel: the channel.
    @ivar recovered: whether every message after C{since} follows (false:
        some are no longer kept, or the epoch changed).
    @ivar history: whether the channel keeps history at all.
    @ivar epoch: the channel's epoch now (L{None} without history).
    @ivar since: the offset asked from.
    @ivar count: how many kept messages follow.
    @ivar offset: the channel's newest offset.
    @ivar gap: whether it recovers a live gap (L{ReconnectingClient}
        subscribed again without reconnecting), not a reconnect.
    @ivar timedOut: whether no C{recovery} reply came for that gap in
        time: then C{recovered} is false and C{count}/C{offset} are L{None}.
    """

    channel = attr.ib()
    recovered = attr.ib()
    history = attr.ib()
    epoch = attr.ib()
    since = attr.ib()
    count = attr.ib()
    offset = attr.ib()
    gap = attr.ib(default=False)
    timedOut = attr.ib(default=False)

    @classmethod
    def fromMessage(cls, message):
        return cls(
            channel=message.getHeader("channel"),
            recovered=message.getHeader("recovered") == "true",
            history=message.getHeader("history") != "none",
            epoch=message.getHeader("epoch"),
            since=_offset(message.getHeader("since"), "since"),
            count=_offset(message.getHeader("count"), "count"),
            offset=_offset(message.getHeader("offset")),
        )


class _Gap:
    """
    A live gap being recovered: the position it is recovered from, the
    messages held meanwhile, the timeout's call.
    """

    def __init__(self, since, epoch, held):
        self.since = since
        self.epoch = epoch
        self.held = held
        self.timer = None

    def cancel(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class HistoryMessages(list):
    """
    The reply to a C{history} request: its messages (L{Message}s, oldest
    first, each with its C{channel}, C{offset} and C{epoch} headers), and
    about the channel: C{channel}, C{epoch}, C{offset} (the newest) and
    C{complete} (false: older messages are gone).
    """

    @classmethod
    def fromReply(cls, reply):
        offsets = reply.getHeader("multipart")
        parts = parseMultipart(reply.body, offsets) if offsets else ()
        messages = cls(parse(part.body) for part in parts)
        messages.channel = reply.getHeader("channel")
        messages.epoch = reply.getHeader("epoch")
        messages.offset = _offset(reply.getHeader("offset"))
        messages.complete = reply.getHeader("complete") == "true"
        return messages


class _Inbox:
    """
    Received messages waiting to be taken, and takers waiting for one.
    """

    def __init__(self):
        self._received = deque()
        self._waiting = deque()

    def put(self, message):
        if self._waiting:
            self._waiting.popleft().callback(message)
        else:
            self._received.append(message)

    def get(self, timeout, clock):
        if self._received:
            d = Deferred()
            d.callback(self._received.popleft())
            return d
        d = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(d)
        if timeout is not None:
            d.addTimeout(timeout, clock)
        return d

    def fail(self, exception):
        while self._waiting:
            self._waiting.popleft().errback(exception)

    def __len__(self):
        return len(self._received)


class LHTTPClientProtocol(WebSocketClientProtocol):
    """
    One client connection. Incoming messages are parsed and queued until
    L{nextMessage} takes them, or given to C{onLHTTPMessage} if it is set.

    @ivar opened: a L{Deferred} that fires with this protocol when the
        WebSocket opens, or fails if it closes first.
    @ivar closed: a L{Deferred} that fires with C{(wasClean, code, reason)}
        when the WebSocket closes.
    @ivar closeCode: the close code, once closed.
    @ivar onLHTTPMessage: L{None}, or a callable given each received
        L{Message} instead of queueing it.
    """

    onLHTTPMessage = None
    onRefreshNotice = None
    log = Logger()
    user = None
    expires = None

    def __init__(self):
        WebSocketClientProtocol.__init__(self)
        self._inbox = _Inbox()
        self._syncs = {}
        # [channel, Deferred or None (given up on)] of history requests sent.
        self._histories = []
        # publish-ack id -> Deferred of publishes waiting for their ack.
        self._acks = {}
        # [command, Deferred] of connect and refresh messages sent.
        self._credentials = []
        self.opened = Deferred()
        self.closed = Deferred()
        self.closeCode = None

    def onOpen(self):
        self.opened.callback(self)

    def onMessage(self, payload, isBinary):
        try:
            message = parse(payload)
        except LHTTPError:
            self.log.failure("The server sent a message that does not parse")
            return
        try:
            if self._isCredentialReply(message):
                return
            if self._syncs and self._isSyncReply(message):
                return
            if self._histories and self._isHistoryReply(message):
                return
            if self._acks and self._isAck(message):
                return
            if self.onLHTTPMessage is not None:
                self.onLHTTPMessage(message)
            else:
                self._inbox.put(message)
        except Exception:
            # Nothing a message holds may break the connection: a message
            # that trips a bug here is logged and skipped.
            self.log.failure("Handling a message from the server failed: {message!r}",
                             message=message)

    def _isCredentialReply(self, message):
        """
        Take the node's word about this connection's credential: its reply
        to C{connect} or C{refresh} (C{user}, C{expires}), an error reply
        to either, or the node's refresh notice (to C{onRefreshNotice} when
        set). A reply to C{connect} that was not asked for through
        L{authenticate} (sent by hand, or the connect proxy's) sets C{user}
        and C{expires} too, and is delivered like any other message.

        @return: whether C{message} was one taken here (not delivered).
        """
        command = message.command
        if command not in ("connect", "refresh", "error") or kindOf(message) != REPLY:
            return False
        if command == "error":
            command = message.getHeader("command")
            if command not in ("connect", "refresh"):
                return False
            waiting = self._takeCredential(command)
            if waiting is None:
                return False
            waiting.errback(ErrorReply(message))
            return True
        if message.getHeader("status") != "200":
            # The refresh notice: the token expired, a grace follows.
            if self.onRefreshNotice is None:
                return False
            self.onRefreshNotice(message)
            return True
        credential = Credential.fromMessage(message)
        self.user, self.expires = credential.user, credential.expires
        waiting = self._takeCredential(command)
        if waiting is None:
            # Not asked for through authenticate(): a connect sent by hand
            # (docs/authentication.rst's example waits for its reply) or
            # the connect proxy's. Its sender reads it like any message.
            return False
        waiting.callback(credential)
        return True

    def _takeCredential(self, command):
        for index, (sent, waiting) in enumerate(self._credentials):
            if sent == command:
                del self._credentials[index]
                return waiting
        return None

    def authenticate(self, token, command="connect"):
        """
        Send C{LHTTP/1.0 connect} with C{token} (the first message on a
        node that authenticates; nothing should be sent before its reply).

        @return: a L{Deferred} firing with a L{Credential}, failing with
            L{ErrorReply} (401: refused; 503: the node cannot check
            credentials now; the node closes the connection next) or
            L{ConnectionDone}.
        """
        d = Deferred()
        self._credentials.append([command, d])
        self.send(command, [("token", token)])
        return d

    def refresh(self, token):
        """
        Send C{LHTTP/1.0 refresh} with a fresh C{token}.

        @return: L{authenticate}'s L{Deferred}: a refused one (401, or 403
            for another user's token) leaves the connection as it was.
        """
        return self.authenticate(token, "refresh")

    def _isSyncReply(self, message):
        """
        Take the answer to one of this connection's syncs: its echo, or an
        error reply to it (a 429 when the connection is at its subscription
        limit, a 503 when the broker is down). Either shows the server
        handled everything sent before, as it handles a connection's
        messages in order; an error reply answers the oldest sync not yet
        answered. Syncs given up on keep their place until answered, so a
        late answer is taken too, never shown as a received message.

        @return: whether C{message} was such an answer.
        """
        if message.command == SYNC_COMMAND:
            channel = message.getHeader("publish")
            if channel not in self._syncs:
                return False
        elif (message.command == "error" and message.getHeader("command") == SYNC_COMMAND
              and isNodeWord(message)):
            channel = next(iter(self._syncs))
        else:
            return False
        waiting = self._syncs.pop(channel)
        if waiting is not None:
            waiting.callback(None)
        return True

    def _isHistoryReply(self, message):
        """
        Take the answer to one of this connection's history requests: a
        C{history} reply for its channel, or an error reply to it. The
        server answers a connection's requests in order, so it answers
        the oldest not yet answered (for that channel). Only the node's
        word (L{lhttp.word}) answers: a C{history} message a client
        published is an ordinary message.

        @return: whether C{message} was such an answer.
        """
        if not isNodeWord(message):
            return False
        if message.command == "error":
            if message.getHeader("command") != "history":
                return False
            index = 0
        elif message.command == "history":
            channel = message.getHeader("channel")
            index = next((i for i, (c, _) in enumerate(self._histories) if c == channel), None)
            if index is None:
                return False
        else:
            return False
        _, waiting = self._histories.pop(index)
        if waiting is not None:
            if message.command == "error":
                waiting.errback(ErrorReply(message))
            else:
                try:
                    waiting.callback(HistoryMessages.fromReply(message))
                except LHTTPError as e:
                    waiting.errback(e)
        return True

    def _isAck(self, message):
        """
        Take the node's answer to a publish that asked for one: an C{ack}
        or an C{error} in the node's word (never a client's look-alike)
        with its C{publish-ack} id.
        """
        if message.command not in ("ack", "error") or kindOf(message) != REPLY:
            return False
        waiting = self._acks.pop(message.getHeader("publish-ack"), None)
        if waiting is None:
            return False
        if message.command == "ack":
            waiting.callback(PublishAck(message))
        else:
            waiting.errback(ErrorReply(message))
        return True

    def onClose(self, wasClean, code, reason):
        self.closeCode = code
        if not self.opened.called:
            self.opened.errback(ConnectionDone(f"WebSocket closed before opening: {code} {reason}"))
        self._inbox.fail(ConnectionDone(f"closed: {code} {reason}"))
        syncs, self._syncs = self._syncs, {}
        for waiting in syncs.values():
            if waiting is not None:
                waiting.errback(ConnectionDone(f"closed: {code} {reason}"))
        histories, self._histories = self._histories, []
        for _, waiting in histories:
            if waiting is not None:
                waiting.errback(ConnectionDone(f"closed: {code} {reason}"))
        acks, self._acks = self._acks, {}
        for waiting in acks.values():
            waiting.errback(ConnectionDone(f"closed: {code} {reason}"))
        credentials, self._credentials = self._credentials, []
        for _, waiting in credentials:
            waiting.errback(ConnectionDone(f"closed: {code} {reason}"))
        self.closed.callback((wasClean, code, reason))

    def nextMessage(self, timeout=None):
        """
        @param timeout: seconds to wait, or L{None} to wait forever.
        @return: a L{Deferred} firing with the next L{Message}, failing with
            L{TimeoutError} after C{timeout}.
        """
        return self._inbox.get(timeout, self.factory.reactor)

    def pending(self):
        """
        @return: how many received messages wait to be taken.
        """
        return len(self._inbox)

    def sync(self, timeout=None):
        """
        Wait until the server has handled everything sent before: a message
        published to a private channel comes back once every earlier
        message of this connection was handled (subscriptions included).
        Neither that message nor an error reply to it is shown as received.

        @return: a L{Deferred} firing with L{None}, failing with
            L{TimeoutError} after C{timeout} or L{ConnectionDone}.
        """
        channel = f"lhttp-sync.{os.getpid()}.{id(self):x}.{next(_syncNames)}"
        d = Deferred(lambda d: self._forget(channel))
        self._syncs[channel] = d
        self.send(
            SYNC_COMMAND,
            [("subscribe", channel), ("publish", channel), ("unsubscribe", channel)],
        )
        if timeout is not None:
            d.addTimeout(timeout, self.factory.reactor)
        return d

    def _forget(self, channel):
        if channel in self._syncs:
            self._syncs[channel] = None

    def history(self, channel, limit=None, timeout=None):
        """
        Read the last messages of a history channel.

        @param limit: how many (default: the server's default and cap).
        @return: a L{Deferred} firing with L{HistoryMessages}, failing with
            L{ErrorReply} (404: the channel keeps no history),
            L{TimeoutError} after C{timeout} or L{ConnectionDone}.
        """
        entry = [channel, None]
        d = Deferred(lambda d: entry.__setitem__(1, None))
        entry[1] = d
        self._histories.append(entry)
        headers = [("channel", channel)]
        if limit is not None:
            headers.append(("limit", str(limit)))
        self.send("history", headers)
        if timeout is not None:
            d.addTimeout(timeout, self.factory.reactor)
        return d

    def sendLHTTP(self, message, isBinary=None):
        """
        Send a L{Message}, or raw bytes (sent as they are, valid or not).

        @param isBinary: the frame type; default: text if the bytes are
            UTF-8, binary otherwise (as the server does).
        """
        if isinstance(message, Message):
            message = message.toBytes()
        if isBinary is None:
            isBinary = not isText(message)
        self.sendMessage(message, isBinary)

    def send(self, command, headers=(), body=b""):
        self.sendLHTTP(Message(command, headers, body))

    def subscribe(self, channels, command="subscribe", headers=(), token=None):
        """
        @param token: subscription tokens (C{channel-token}): a string for
            one channel, a list in the channels' order or a dict
            C{{channel: token}}.
        """
        extra = [] if token is None else [_tokenHeader(_names(channels), token)]
        self.send(command, [("subscribe", _joined(channels)), *extra, *headers])

    def unsubscribe(self, channels, command="unsubscribe"):
        self.send(command, [("unsubscribe", _joined(channels))])

    def publish(self, channels, command, headers=(), body=b"", ack=False, key=None, timeout=None):
        """
        Publish a message.

        @param ack: ask the node to acknowledge it (C{publish-ack}).
        @param key: an idempotency key (C{idempotency-key}): the node
            stores and delivers a repeat of it once, within its window.
        @return: L{None} without C{ack}; with it, a L{Deferred} firing with
            a L{PublishAck}, or failing with L{ErrorReply} (503: not known
            to be stored; send it again with the same key),
            L{TimeoutError} after C{timeout} or L{ConnectionDone}.
        """
        extra = []
        d = None
        if ack:
            ackId = str(next(_ackIds))
            d = Deferred(lambda d: self._acks.pop(ackId, None))
            self._acks[ackId] = d
            extra.append(("publish-ack", ackId))
        if key is not None:
            extra.append(("idempotency-key", key))
        self.send(command, [("publish", _joined(channels)), *extra, *headers], body)
        if d is not None and timeout is not None:
            d.addTimeout(timeout, self.factory.reactor)
        return d


def _dropIfOpen(protocol):
    if protocol.closeCode is None:
        protocol.dropConnection(abort=True)


def _joined(channels):
    return channels if isinstance(channels, str) else " ".join(channels)


def _names(channels):
    return channels.split() if isinstance(channels, str) else list(channels)


def clientFactory(reactor, url, headers=None, protocol=LHTTPClientProtocol):
    """
    @return: an Autobahn client factory for C{url} that builds C{protocol}.
    """
    factory = WebSocketClientFactory(url, headers=headers, reactor=reactor)
    factory.protocol = protocol
    return factory


def clientEndpoint(reactor, url, timeout=30):
    """
    @return: the TCP or TLS client endpoint for a C{ws://} or C{wss://} URL.
    """
    parsed = URL.from_text(url)
    secure = parsed.scheme == "wss"
    port = parsed.port or (443 if secure else 80)
    kind = "tls" if secure else "tcp"
    host = parsed.host.replace(":", r"\:")
    seconds = max(1, math.ceil(timeout))
    return clientFromString(reactor, f"{kind}:{host}:{port}:timeout={seconds}")


def connect(reactor, url, headers=None, timeout=30, token=None):
    """
    Open an LHTTP WebSocket client connection.

    @param url: C{ws://host:port/path} or C{wss://...}.
    @param headers: extra handshake headers (e.g. C{{"Origin": ...}}).
    @param token: a connection token: sent first (C{LHTTP/1.0 connect}),
        and the connection is given once the node accepted it.
    @return: a L{Deferred} firing with an L{LHTTPClientProtocol} once the
        WebSocket is open (and, with C{token}, authenticated: its C{user}
        and C{expires} are set); failing with L{ErrorReply} when the node
        refused the token.
    """
    factory = clientFactory(reactor, url, headers)
    connecting = clientEndpoint(reactor, url, timeout).connect(factory)
    connecting.addCallback(lambda protocol: protocol.opened)
    if token is not None:
        connecting.addCallback(
            lambda protocol: protocol.authenticate(token).addCallback(lambda ignored: protocol)
        )
    return connecting


class ReconnectingClient(Service):
    """
    A client that stays connected: after the connection drops (or cannot
    be made) it tries again with exponential backoff, and once connected it
    subscribes again to every channel it is subscribed to.

    Received messages go to C{onMessage}, or wait for L{nextMessage}.
    Sending (L{send}, L{publish}, L{sync}) needs a connection: without one
    it raises L{NotConnected} rather than queueing, so nothing is lost
    silently; L{subscribe} and L{unsubscribe} are remembered either way.

    On history channels it remembers the last offset and epoch received
    (L{position}) and subscribes again from there, so the node first sends
    what was published while it was away; a message whose offset is not
    newer than the last one seen (same epoch) is dropped, not delivered
    (counted in C{duplicates}). C{recovery} replies are not delivered as
    messages: each goes to C{onRecovery} as a L{RecoveryReport}, and the
    latest per channel is kept in C{recoveries}.

    A live gap is recovered without reconnecting: a history message whose
    C{prev} (the offset of the message before it on the channel, stamped
    by the node) is past the last offset seen in the same epoch means some
    were lost on the way. The client subscribes to that channel again from
    the last offset; the channel's messages are not delivered until the
    node's C{recovery} reply, after which the node sends them again, in
    order. The report has C{gap} set; C{gaps} and C{gapsRecovered} count
    them. Without a reply within C{recoveryTimeout} seconds the report says
    C{timedOut} (not recovered) and the messages held meanwhile are
    delivered. A gap at a given offset is recovered once at most.

    @ivar protocol: the open L{LHTTPClientProtocol}, or L{None}.
    @ivar connections: how many times it has connected.
    @ivar onMessage: L{None}, or a callable given each received L{Message}.
    @ivar onConnect: L{None}, or a callable given the protocol each time it
        connects, after the subscriptions were sent again.
    @ivar onDisconnect: L{None}, or a callable given C{(wasClean, code,
        reason)} each time an open connection closes.
    @ivar onRecovery: L{None}, or a callable given a L{RecoveryReport}.
    @ivar recoveries: C{{channel: RecoveryReport}}, the latest of each.
    @ivar duplicates: how many messages were dropped as already seen.
    @ivar gaps: how many live gaps were seen.
    @ivar gapsRecovered: how many of them the node's recovery filled.

    On a node that authenticates, with C{token} or C{getToken} every
    connection starts with C{LHTTP/1.0 connect} and its token, and the
    connection counts as made (L{whenConnected}, C{onConnect}, the
    subscriptions sent again) once the node accepted it. A fresh token
    comes from C{getToken} for the first connection without C{token},
    after a close with code 4401 (once: a second 4401 stops the client),
    4000 or 4419, and when the last one expires within 30 s; it is
    refreshed (C{LHTTP/1.0 refresh}) shortly before C{expires} (30 s, or a
    quarter of its time when less) and on the node's refresh notice. A
    close with 4403 stops it; 4503 and other refusals before the node's
    reply count as failed attempts for the backoff.

    @ivar user: the user the node authenticated, or L{None}.
    @ivar expires: when its credential expires (Unix seconds), or L{None}.
    @ivar authError: the node's last L{ErrorReply} to a C{connect}, or L{None}.
    @ivar stopped: L{None}, or the L{Unauthorized} it stopped with.
    @ivar onAuthError: L{None}, or a callable given an L{Unauthorized} when
        the client stops for it, or an L{ErrorReply} (a refused refresh,
        the node's refresh notice without C{getToken}) or the failure of
        C{getToken} when the connection goes on.
    @ivar onUnsubscribed: L{None}, or a callable given C{(channel,
        reason)} when the node unsubscribed it (C{LHTTP/1.0
        unsubscribed}) or C{getSubscriptionToken} gave no token for it.
    """

    protocolClass = LHTTPClientProtocol
    # Seconds to wait for the node's close after it refused a connect.
    closeWait = 5.0
    # Messages of a channel kept while its gap is recovered (delivered only
    # if no recovery reply comes).
    maxHeld = 1000

    def __init__(
        self, reactor, url, headers=None, onMessage=None, retryPolicy=None,
        timeout=30, endpoint=None, recoveryTimeout=10.0, token=None, getToken=None,
        getSubscriptionToken=None,
    ):
        """
        @param url: C{ws://host:port/path} or C{wss://...}.
        @param headers: extra handshake headers.
        @param retryPolicy: C{retryPolicy(failedAttempts)} -> seconds to
            wait; default: L{backoffPolicy} from 0.5 s up to 30 s, with
            jitter.
        @param timeout: seconds for a TCP connection attempt.
        @param endpoint: the client endpoint to use instead of one made from
            C{url} (tests pass an in-memory one).
        @param recoveryTimeout: seconds a live gap's re-subscribe waits for
            the node's C{recovery} reply.
        @param token: a connection token (a JWT), sent first on every
            connection.
        @param getToken: a callable returning a fresh connection token (or
            a L{Deferred} or coroutine of one).
        @param getSubscriptionToken: a callable given a channel, returning
            a fresh subscription token for it (or a L{Deferred} or
            coroutine of one; L{None}: no longer allowed, the channel is
            dropped), asked after a reconnect for the channels subscribed
            with a token.
        """
        self.url = url
        self.protocol = None
        self.connections = 0
        self.onMessage = onMessage
        self.onConnect = None
        self.onDisconnect = None
        self.onRecovery = None
        self.recoveries = {}
        self.duplicates = 0
        self.gaps = 0
        self.gapsRecovered = 0
        self.recoveryTimeout = recoveryTimeout
        # channel -> _Gap: a live gap being recovered.
        self._recovering = {}
        # channel -> the offset a gap was last recovered from.
        self._gapAt = {}
        # Channels whose next message is not gap-checked (a loss reported).
        self._unchecked = set()
        self._subscriptions = {}
        # channel -> (offset, epoch): the last message seen on a history channel.
        self._positions = {}
        # channel -> the subscription token it was subscribed with.
        self._channelTokens = {}
        self._token = token
        self._getToken = getToken
        self._getSubscriptionToken = getSubscriptionToken
        self._authenticates = token is not None or getToken is not None
        self._freshToken = token is None
        self._authRetried = False
        # Connections refused or closed before the node's reply, in a row:
        # they add to the backoff (a ClientService counts such a
        # connection as made).
        self._authFailures = 0
        self._refreshCall = None
        self._refreshing = False
        self.user = None
        self.expires = None
        self.authError = None
        self.stopped = None
        self.onAuthError = None
        self.onUnsubscribed = None
        self._reactor = reactor
        self._inbox = _Inbox()
        factory = clientFactory(reactor, url, headers, self.protocolClass)
        policy = retryPolicy or backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self._service = ClientService(
            endpoint if endpoint is not None else clientEndpoint(reactor, url, timeout),
            factory,
            retryPolicy=lambda failed: policy(failed + max(0, self._authFailures - 1)),
            clock=reactor,
            prepareConnection=self._prepare,
        )

    @property
    def subscriptions(self):
        """
        The channels it is subscribed to (and subscribes to again after a
        reconnect), in the order they were added.
        """
        return list(self._subscriptions)

    # The service.

    def startService(self):
        Service.startService(self)
        self._service.startService()

    def stopService(self):
        """
        Close the connection (WebSocket close 1000) and stop reconnecting.

        @return: a L{Deferred} that fires once it is closed.
        """
        Service.stopService(self)
        protocol = self.protocol
        if protocol is None:
            return self._service.stopService()
        # Close the WebSocket properly first (Autobahn drops the TCP
        # connection if the close handshake takes too long).
        protocol.sendClose(1000)
        return protocol.closed.addBoth(lambda ignored: self._service.stopService())

    def whenConnected(self, failAfterFailures=None):
        """
        @return: a L{Deferred} firing with the open L{LHTTPClientProtocol}
            (subscriptions sent) now or at the next connection; see
            L{ClientService.whenConnected}.
        """
        def connected(proxy):
            if self.protocol is not None:
                return self.protocol
            if self.stopped is not None:
                raise self.stopped
            if failAfterFailures is not None and self.authError is not None:
                raise self.authError
            # Refused by the node: the next connection, then (asked once
            # the ClientService is out of its own callback).
            return deferLater(self._reactor, 0, self.whenConnected, failAfterFailures)

        def failed(failure):
            if self.stopped is not None and failure.check(CancelledError):
                raise self.stopped
            return failure

        return self._service.whenConnected(failAfterFailures).addCallbacks(connected, failed)

    def _prepare(self, proxy):
        opened = proxy.opened.addCallback(self._watch)
        if not self._authenticates:
            return opened.addCallback(self._opened)
        return opened.addCallback(self._authenticated)

    def _watch(self, protocol):
        protocol.closed.addCallback(self._closedWith, protocol)
        return protocol

    def _authenticated(self, protocol):
        """
        Authenticate a new connection before it counts as made.

        @return: a L{Deferred} that fires once the node accepted it (the
            subscriptions sent again), refused it or it closed: never
            later than its close (a L{ClientService} cannot take a close
            while it prepares a connection).
        """
        done = Deferred()

        def finish(ignored):
            if not done.called:
                done.callback(protocol)

        def accepted(protocol):
            if protocol.closeCode is None:
                self._opened(protocol)

        def refused(failure):
            if failure.check(ErrorReply):
                self.authError = failure.value
                if protocol.closeCode is None:
                    # The node closes it next; one that does not is dropped.
                    self._reactor.callLater(self.closeWait, _dropIfOpen, protocol)
            elif protocol.closeCode is None:
                # getToken failed: told, and tried again later (its close
                # counts for the backoff).
                self._tellAuthError(failure.value)
                protocol.sendClose(1000)

        protocol.closed.addBoth(finish)
        attempt = ensureDeferred(self._authenticate(protocol))
        attempt.addCallbacks(accepted, refused).addBoth(finish)
        return done

    async def _authenticate(self, protocol):
        if self._getToken is not None and (self._freshToken or self._tokenStale()):
            token = await _call(self._getToken)
            self._token, self._freshToken = token, False
        protocol.onRefreshNotice = self._refreshNotice
        credential = await protocol.authenticate(self._token)
        self._authRetried = False
        self._authFailures = 0
        self.authError = None
        if self._getSubscriptionToken is not None and self.connections:
            await self._freshSubscriptionTokens()
        self._noteCredential(credential)
        return protocol

    async def _freshSubscriptionTokens(self):
        """
        Ask C{getSubscriptionToken} for the channels subscribed with a
        token: a failure keeps the last token (said to C{onAuthError}); no
        token drops the channel.
        """
        for channel in [c for c in self._subscriptions if c in self._channelTokens]:
            try:
                token = await _call(self._getSubscriptionToken, channel)
            except Exception as error:
                self._tellAuthError(error)
                continue
            if channel not in self._subscriptions:
                continue
            if isinstance(token, str) and token:
                self._channelTokens[channel] = token
            else:
                self._dropChannel(channel, "no subscription token")

    def _tokenStale(self):
        return self.expires is not None and self._reactor.seconds() >= self.expires - REFRESH_MARGIN

    def _noteCredential(self, credential):
        """
        The node's reply to C{connect} or C{refresh}: the next refresh is
        due shortly before C{expires}.
        """
        self.user, self.expires = credential.user, credential.expires
        self._cancelRefresh()
        if self.expires is None or self._getToken is None:
            return
        left = self.expires - self._reactor.seconds()
        if left > 0:
            # Already past by this clock: the node's notice says when.
            self._refreshCall = self._reactor.callLater(
                left - min(REFRESH_MARGIN, left / 4), self.refresh
            )

    def _cancelRefresh(self):
        if self._refreshCall is not None and self._refreshCall.active():
            self._refreshCall.cancel()
        self._refreshCall = None

    def refresh(self, token=None):
        """
        Send C{LHTTP/1.0 refresh} with C{token}, or one from C{getToken}
        (the client does so by itself before C{expires}).

        @return: a L{Deferred} firing with the node's L{Credential}, or
            with L{None} when it was not sent (no connection, a refresh
            already on its way, or refused: said to C{onAuthError}).
        """
        protocol = self.protocol
        if protocol is None or self._refreshing or (token is None and self._getToken is None):
            return succeed(None)
        self._refreshing = True
        return ensureDeferred(self._refresh(protocol, token))

    async def _refresh(self, protocol, token):
        try:
            if token is None:
                token = await _call(self._getToken)
            if protocol is not self.protocol:
                return None
            credential = await protocol.refresh(token)
        except ConnectionDone:
            return None
        except Exception as error:
            self._tellAuthError(error)
            return None
        finally:
            self._refreshing = False
        self._token = token
        self._noteCredential(credential)
        return credential

    def _refreshNotice(self, message):
        if self._getToken is not None:
            self.refresh()
        else:
            self._tellAuthError(ErrorReply(message))

    def _tellAuthError(self, error):
        if self.onAuthError is not None:
            self.onAuthError(error)
        else:
            _log.warn("Authentication: {error}", error=str(error))

    def _closedWith(self, how, protocol):
        """
        The close codes of a node that authenticates: stop (4403; 4401
        after one more try), or a fresh token for the next connection.
        """
        wasClean, code, reason = how
        self._cancelRefresh()
        if self._authenticates and self.protocol is not protocol:
            self._authFailures += 1
        if code == CLOSE_DISCONNECTED:
            self._stop(Unauthorized(code, reason or "disconnected by the server"))
        elif code == CLOSE_UNAUTHORIZED:
            if self._getToken is not None and not self._authRetried:
                self._authRetried = True
                self._freshToken = True
            else:
                self._stop(Unauthorized(code, reason or "unauthorized", self.authError))
        elif code in (CLOSE_EXPIRED, CLOSE_RECONNECT):
            self._freshToken = True
        return how

    def _stop(self, error):
        if self.stopped is not None:
            return
        self.stopped = error
        self._tellAuthError(error)
        # Not from inside the ClientService's own callbacks.
        self._reactor.callLater(0, self.stopService)

    def _opened(self, protocol):
        self.protocol = protocol
        self.connections += 1
        protocol.onLHTTPMessage = self._received
        protocol.closed.addCallback(self._closed, protocol)
        names = list(self._subscriptions)
        for withToken in (False, True):
            group = [n for n in names if (n in self._channelTokens) == withToken]
            for start in range(0, len(group), RESUBSCRIBE_BATCH):
                batch = group[start:start + RESUBSCRIBE_BATCH]
                protocol.subscribe(batch, headers=self._resumeHeaders(batch),
                                   token=self._tokensOf(batch))
        if self.onConnect is not None:
            self.onConnect(protocol)
        return protocol

    def _closed(self, how, protocol):
        # A gap being recovered: the reconnect's subscribe resumes from the
        # same offset, and its recovery reply ends it.
        for gap in self._recovering.values():
            gap.held.clear()
            gap.cancel()
        if self.protocol is protocol:
            self.protocol = None
            if self.onDisconnect is not None:
                self.onDisconnect(how)

    def _tokensOf(self, names):
        """
        The subscription tokens of C{names} (all subscribed with one), or
        L{None}.
        """
        if not names or names[0] not in self._channelTokens:
            return None
        return [self._channelTokens[name] for name in names]

    def _dropChannel(self, channel, reason):
        """
        Forget C{channel} (the node unsubscribed it, or there is no token
        for it any more) and tell C{onUnsubscribed}.
        """
        self._subscriptions.pop(channel, None)
        self._positions.pop(channel, None)
        self._channelTokens.pop(channel, None)
        self._forgetGap(channel)
        if self.onUnsubscribed is not None:
            self.onUnsubscribed(channel, reason)

    def _resumeHeaders(self, names):
        """
        The C{since} and C{epoch} headers that resume those of C{names}
        with a known position.
        """
        since, epochs = [], []
        for name in names:
            if name in self._positions:
                offset, epoch = self._positions[name]
                since.append(f"{name}={offset}")
                if epoch:
                    epochs.append(f"{name}={epoch}")
        headers = []
        if since:
            headers.append(("since", " ".join(since)))
        if epochs:
            headers.append(("epoch", " ".join(epochs)))
        return headers

    def _recovery(self, message):
        report = RecoveryReport.fromMessage(message)
        channel = report.channel
        gap = self._recovering.pop(channel, None)
        if gap is not None:
            # What was held comes again after this reply.
            gap.cancel()
            report = attr.evolve(report, gap=True)
            if report.recovered:
                self.gapsRecovered += 1
        if channel in self._subscriptions:
            if not report.recovered:
                # Lost for good: the next message is taken whatever its prev.
                self._unchecked.add(channel)
            if not report.history:
                self._positions.pop(channel, None)
            elif self._positions.get(channel, (0, None))[1] != report.epoch:
                # A new epoch: offsets start again; all it kept follows.
                self._positions[channel] = (0, report.epoch)
        self.recoveries[channel] = report
        if self.onRecovery is not None:
            self.onRecovery(report)

    def _isWithheld(self, message):
        """
        Whether a history channel's message is not delivered now: seen
        already (a duplicate), or behind a live gap being recovered. If it
        is delivered, note its position. Only a position the node stamped
        (C{lhttp-node:position}) counts, and only the node's C{prev} (its
        headers come first).
        """
        if kindOf(message) != POSITION:
            return False
        offset = _offset(message.getHeader("offset"))
        channel = message.getHeader("channel")
        if offset is None or channel not in self._subscriptions:
            return False
        gap = self._recovering.get(channel)
        if gap is not None:
            if len(gap.held) < self.maxHeld:
                gap.held.append(message)
            return True
        epoch = message.getHeader("epoch")
        seen = self._positions.get(channel)
        if seen is not None and seen[1] == epoch:
            if offset <= seen[0]:
                self.duplicates += 1
                return True
            prev = _offset(message.getHeader("prev"), "prev")
            # A gap is recovered once per position: a node that keeps
            # saying so (or a forged prev relayed by a node older than
            # prev) cannot make it loop.
            if (prev is not None and prev > seen[0] and channel not in self._unchecked
                    and self._gapAt.get(channel) != seen[0]):
                self._recoverGap(channel, seen, message)
                return True
        self._unchecked.discard(channel)
        self._positions[channel] = (offset, epoch)
        return False

    def _recoverGap(self, channel, seen, message):
        """
        Subscribe to C{channel} again from the last offset seen: the node
        answers with a C{recovery} reply, then the messages after it.
        """
        self.gaps += 1
        self._gapAt[channel] = seen[0]
        gap = self._recovering[channel] = _Gap(seen[0], seen[1], [message])
        self.protocol.subscribe([channel], headers=self._resumeHeaders([channel]),
                                token=self._tokensOf([channel]))
        gap.timer = self._reactor.callLater(self.recoveryTimeout, self._giveUpGap, channel, gap)

    def _giveUpGap(self, channel, gap):
        """
        No C{recovery} reply in time (a node that does not recover a
        channel already subscribed to): reported as not recovered, and what
        was held is delivered, in order.
        """
        gap.timer = None
        if self._recovering.get(channel) is not gap:
            return
        del self._recovering[channel]
        report = RecoveryReport(channel, False, True, gap.epoch, gap.since, None, None,
                                gap=True, timedOut=True)
        self.recoveries[channel] = report
        if self.onRecovery is not None:
            self.onRecovery(report)
        for message in gap.held:
            if channel in self._subscriptions and not self._isWithheld(message):
                self._deliver(message)

    def _forgetGap(self, channel):
        gap = self._recovering.pop(channel, None)
        if gap is not None:
            gap.cancel()
        self._gapAt.pop(channel, None)
        self._unchecked.discard(channel)

    def _received(self, message):
        if message.command == "recovery" and isNodeWord(message):
            self._recovery(message)
            return
        if message.command == "unsubscribed" and kindOf(message) == REPLY:
            channel = message.getHeader("channel")
            if channel is not None:
                self._dropChannel(channel, message.getHeader("reason") or "")
            return
        if self._isWithheld(message):
            return
        self._deliver(message)

    def _deliver(self, message):
        if self.onMessage is not None:
            self.onMessage(message)
        else:
            self._inbox.put(message)

    def _connected(self):
        if self.protocol is None:
            raise NotConnected(f"not connected to {self.url}")
        return self.protocol

    # What users call.

    def nextMessage(self, timeout=None):
        """
        @return: a L{Deferred} firing with the next received L{Message}
            (when C{onMessage} is not set), across reconnects.
        """
        return self._inbox.get(timeout, self._reactor)

    def subscribe(self, channels, since=None, token=None):
        """
        Subscribe now if connected, and after every reconnect.

        @param since: for history channels, the offset to receive kept
            messages after (C{0}: all it keeps) before live ones. Without
            it a channel with a known L{position} resumes from there.
        @param token: subscription tokens (C{channel-token}): a string for
            one channel, a list in the channels' order or a dict
            C{{channel: token}}; sent again after a reconnect (or fresh
            ones from C{getSubscriptionToken}).
        """
        every = _names(channels)
        tokens = {}
        if token is not None:
            _tokenHeader(every, token)
            tokens = dict(zip(every, [token] if isinstance(token, str) else
                              [token[n] for n in every] if isinstance(token, dict) else token))
        names = [n for n in every if n not in self._subscriptions]
        for name in names:
            self._subscriptions[name] = None
            if name in tokens:
                self._channelTokens[name] = tokens[name]
            if since is not None:
                # Asked for before the first connection too: the
                # subscription made when it opens resumes from there.
                self._positions[name] = (int(since), None)
        if names and self.protocol is not None:
            self.protocol.subscribe(names, headers=self._resumeHeaders(names),
                                    token=[tokens[n] for n in names] if tokens else None)

    def unsubscribe(self, channels):
        """
        Unsubscribe, and forget the channels' positions: subscribing again
        later starts afresh.
        """
        names = [n for n in _names(channels) if n in self._subscriptions]
        for name in names:
            del self._subscriptions[name]
            self._positions.pop(name, None)
            self._channelTokens.pop(name, None)
            self._forgetGap(name)
        if names and self.protocol is not None:
            self.protocol.unsubscribe(names)

    def position(self, channel):
        """
        @return: C{(offset, epoch)} of the last message seen on a history
            channel, or L{None}.
        """
        return self._positions.get(channel)

    def setPosition(self, channel, offset, epoch=None):
        """
        Resume C{channel} from a position saved earlier: the next
        subscribe to it (or reconnect) asks for what came after.
        """
        if not isinstance(offset, int) or offset < 0:
            raise ValueError("an offset is a non-negative integer")
        self._positions[channel] = (offset, epoch)

    def history(self, channel, limit=None, timeout=None):
        """
        @return: L{LHTTPClientProtocol.history} on the current connection,
            or a failed L{Deferred} (L{NotConnected}).
        """
        try:
            return self._connected().history(channel, limit, timeout)
        except NotConnected:
            return fail()

    def send(self, command, headers=(), body=b""):
        """
        @raise NotConnected: when there is no connection.
        """
        self._connected().send(command, headers, body)

    def sendLHTTP(self, message, isBinary=None):
        self._connected().sendLHTTP(message, isBinary)

    def publish(self, channels, command, headers=(), body=b"", ack=False, key=None,
                retries=5, timeout=10.0):
        """
        Publish a message now (L{NotConnected} without a connection), or,
        with C{ack}, until the node acknowledges it.

        With C{ack} it carries an idempotency key (C{key}, or a new random
        one), and it is sent again with the same key, after a reconnect if
        need be, when the node answers 503 or 429, the connection drops or
        no answer comes in C{timeout} seconds, up to C{retries} more times:
        the node stores and delivers it once however many times it is sent.

        @return: L{None} without C{ack}; with it, a L{Deferred} firing with
            a L{PublishAck} or failing with the last L{ErrorReply} (any
            status but 503 and 429 at once), L{TimeoutError} or
            L{ConnectionDone}.
        """
        if not ack:
            self._connected().publish(channels, command, headers, body, key=key)
            return None
        if key is None:
            key = uuid.uuid4().hex
        return ensureDeferred(
            self._publishAcked(channels, command, headers, body, key, retries, timeout)
        )

    async def _publishAcked(self, channels, command, headers, body, key, retries, timeout):
        attempt = 0
        while True:
            attempt += 1
            try:
                protocol = self.protocol
                if protocol is None:
                    protocol = await self.whenConnected().addTimeout(timeout, self._reactor)
                answer = await protocol.publish(
                    channels, command, headers, body, ack=True, key=key, timeout=timeout
                )
                answer.attempts = attempt
                return answer
            except ErrorReply as error:
                if error.status not in RETRIED_STATUSES or attempt > retries:
                    raise
            except (ConnectionDone, TimeoutError, NotConnected, CancelledError):
                if attempt > retries:
                    raise
            # A little later: the cluster link comes back in seconds.
            await deferLater(self._reactor, min(0.25 * 2 ** (attempt - 1), 4.0))

    def sync(self, timeout=None):
        """
        @return: L{LHTTPClientProtocol.sync} on the current connection, or a
            failed L{Deferred} (L{NotConnected}).
        """
        try:
            return self._connected().sync(timeout)
        except NotConnected:
            return fail()


__all__ = [
    "Credential",
    "ErrorReply",
    "HistoryMessages",
    "PublishAck",
    "LHTTPClientProtocol",
    "NotConnected",
    "ReconnectingClient",
    "RecoveryReport",
    "TimeoutError",
    "Unauthorized",
    "connect",
]
