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
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred, fail
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
    log = Logger()

    def __init__(self):
        WebSocketClientProtocol.__init__(self)
        self._inbox = _Inbox()
        self._syncs = {}
        # [channel, Deferred or None (given up on)] of history requests sent.
        self._histories = []
        # publish-ack id -> Deferred of publishes waiting for their ack.
        self._acks = {}
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

    def subscribe(self, channels, command="subscribe", headers=()):
        self.send(command, [("subscribe", _joined(channels)), *headers])

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


def connect(reactor, url, headers=None, timeout=30):
    """
    Open an LHTTP WebSocket client connection.

    @param url: C{ws://host:port/path} or C{wss://...}.
    @param headers: extra handshake headers (e.g. C{{"Origin": ...}}).
    @return: a L{Deferred} firing with an L{LHTTPClientProtocol} once the
        WebSocket is open.
    """
    factory = clientFactory(reactor, url, headers)
    connecting = clientEndpoint(reactor, url, timeout).connect(factory)
    return connecting.addCallback(lambda protocol: protocol.opened)


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
    """

    protocolClass = LHTTPClientProtocol
    # Messages of a channel kept while its gap is recovered (delivered only
    # if no recovery reply comes).
    maxHeld = 1000

    def __init__(
        self, reactor, url, headers=None, onMessage=None, retryPolicy=None,
        timeout=30, endpoint=None, recoveryTimeout=10.0,
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
        self._reactor = reactor
        self._inbox = _Inbox()
        factory = clientFactory(reactor, url, headers, self.protocolClass)
        self._service = ClientService(
            endpoint if endpoint is not None else clientEndpoint(reactor, url, timeout),
            factory,
            retryPolicy=retryPolicy or backoffPolicy(initialDelay=0.5, maxDelay=30.0),
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
        return self._service.whenConnected(failAfterFailures).addCallback(
            lambda proxy: self.protocol
        )

    def _prepare(self, proxy):
        return proxy.opened.addCallback(self._opened)

    def _opened(self, protocol):
        self.protocol = protocol
        self.connections += 1
        protocol.onLHTTPMessage = self._received
        protocol.closed.addCallback(self._closed, protocol)
        names = list(self._subscriptions)
        for start in range(0, len(names), RESUBSCRIBE_BATCH):
            batch = names[start:start + RESUBSCRIBE_BATCH]
            protocol.subscribe(batch, headers=self._resumeHeaders(batch))
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
        self.protocol.subscribe([channel], headers=self._resumeHeaders([channel]))
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

    def subscribe(self, channels, since=None):
        """
        Subscribe now if connected, and after every reconnect.

        @param since: for history channels, the offset to receive kept
            messages after (C{0}: all it keeps) before live ones. Without
            it a channel with a known L{position} resumes from there.
        """
        names = [n for n in _names(channels) if n not in self._subscriptions]
        for name in names:
            self._subscriptions[name] = None
            if since is not None:
                # Asked for before the first connection too: the
                # subscription made when it opens resumes from there.
                self._positions[name] = (int(since), None)
        if names and self.protocol is not None:
            self.protocol.subscribe(names, headers=self._resumeHeaders(names))

    def unsubscribe(self, channels):
        """
        Unsubscribe, and forget the channels' positions: subscribing again
        later starts afresh.
        """
        names = [n for n in _names(channels) if n in self._subscriptions]
        for name in names:
            del self._subscriptions[name]
            self._positions.pop(name, None)
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
    "ErrorReply",
    "HistoryMessages",
    "PublishAck",
    "LHTTPClientProtocol",
    "NotConnected",
    "ReconnectingClient",
    "RecoveryReport",
    "TimeoutError",
    "connect",
]
