"""
In-memory test doubles for code built on lhttp, shipped with the library
(as L{treq.testing} ships L{treq.testing.StubTreq}): no sockets, no
reactor running.

L{FakeClient} drives a node through its real path, in memory: the node's
L{twisted.web.server.Site} (the HTTP upgrade, the C{Host} check), its real
WebSocket protocol and Autobahn's framing on both sides, connected by
L{twisted.test.iosim}::

    server = LHTTPServer(reactor=MemoryReactorClock())
    server.addProcessor("echo", EchoProcessor())
    client = FakeClient(server)
    client.receive(b"LHTTP/1.0 echo\\r\\n\\r\\nhi")
    assert client.messages()[0].body == b"hi"

L{RecordingBroker} and L{FakeNATS} stand in for the cluster,
L{FakeUpstream} for the HTTP backends of the C{upstream} header.
L{makeToken} and L{KeyPair} sign JWTs as an application's backend does.
"""

import asyncio
import itertools

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.test import iosim
from zope.interface import implementer

from lhttp.codec import parse
from lhttp.errors import BrokerUnavailable
from lhttp.interfaces import IBroker, IUpstream

_ports = itertools.count(40000)


def memoryServer(broker=None, upstream=None, reactor=None, **options):
    """
    A node for tests: an L{lhttp.server.LHTTPServer} on a
    L{twisted.internet.testing.MemoryReactorClock}.

    @param options: L{lhttp.config.Config} fields.
    """
    from twisted.internet.testing import MemoryReactorClock

    from lhttp.config import Config
    from lhttp.server import LHTTPServer

    return LHTTPServer(
        Config(**options), broker=broker, upstream=upstream,
        reactor=reactor if reactor is not None else MemoryReactorClock(),
    )


class _ReadingTransport(iosim.FakeTransport):
    """
    An in-memory transport that remembers whether its protocol asked it to
    stop reading (what a TCP transport's C{pauseProducing} does).
    """

    reading = True

    def pauseProducing(self):
        self.reading = False

    def resumeProducing(self):
        self.reading = True


class _Client(WebSocketClientProtocol):
    """
    The client side of a L{FakeClient}: keeps what arrives.
    """

    def __init__(self):
        WebSocketClientProtocol.__init__(self)
        self.received = []
        self.opened = False
        self.closedWith = None

    def onOpen(self):
        self.opened = True

    def onMessage(self, payload, isBinary):
        self.received.append((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self.closedWith = (code, reason)


class FakeClient:
    """
    A WebSocket client connected to an L{lhttp.server.LHTTPServer} in
    memory, through the node's real Site and protocol.

    @ivar connection: the server-side L{lhttp.connection.Connection}.
    @ivar protocol: the server-side
        L{lhttp.web.websocket.LHTTPServerProtocol}.
    """

    def __init__(self, server, peer=None, headers=None, path="/", host="localhost", site=None):
        """
        @param site: the Site the client connects to (default: the node's
            own, L{lhttp.server.LHTTPServer.site}); give yours to test
            the node mounted in your tree.
        @param peer: the client's address (default: a loopback address).
        @param headers: more handshake headers (C{{"Origin": ...}}).
        @param host: the C{Host} the client calls the node by.
        @raise AssertionError: if the node refused the handshake.
        """
        peer = peer or IPv4Address("TCP", "127.0.0.1", next(_ports))
        local = IPv4Address("TCP", "127.0.0.1", 8081)
        clock = server.factory.reactor
        site = site if site is not None else server.site()
        channel = site.buildProtocol(peer)
        factory = WebSocketClientFactory(f"ws://{host}{path}", headers=headers or {}, reactor=clock)
        factory.protocol = _Client
        self._client = factory.buildProtocol(local)
        self._serverTransport = _ReadingTransport(channel, True, local, peer)
        clientTransport = iosim.FakeTransport(self._client, False, peer, local)
        self._pump = iosim.connect(channel, self._serverTransport, self._client, clientTransport,
                                   clock=iosim.MemoryReactorClock())
        if not self._client.opened:
            raise AssertionError(f"the node refused the WebSocket handshake: {self._client.closedWith}")
        self.protocol = self._serverTransport.protocol
        self.connection = self.protocol.pipeline.connection

    def receive(self, data, isBinary=False):
        """
        The client sends one WebSocket message, and the node handles it.
        """
        self._client.sendMessage(data, isBinary)
        self.flush()

    def flush(self):
        """
        Move what is in flight both ways (after a Deferred the test fired).
        """
        self._pump.flush()

    def disconnect(self):
        """
        The TCP connection drops.
        """
        self._client.transport.loseConnection()
        self.flush()

    @property
    def reading(self):
        """
        L{False} while the node has stopped reading from this client.
        """
        return self._serverTransport.reading

    @property
    def closedWith(self):
        """
        C{(code, reason)} once the node closed the WebSocket, else L{None}.
        """
        return self._client.closedWith

    def sent(self):
        """
        @return: C{(payload, isBinary)} for everything the node sent.
        """
        self.flush()
        return list(self._client.received)

    def payloads(self):
        return [payload for payload, isBinary in self.sent()]

    def messages(self):
        """
        @return: everything written to this client so far, parsed.
        """
        return [parse(payload) for payload in self.payloads()]

    def clear(self):
        del self._client.received[:]


@implementer(IBroker)
class RecordingBroker:
    """
    A broker that records what it is asked and delivers publishes locally,
    like the embedded one. Set C{ready} to L{False} to see publishes
    refused.

    @ivar subscribed: the channels it holds a subscription for now.
    @ivar events: C{("subscribe" | "unsubscribe", channel)} in order.
    @ivar published: C{(channels, payload)} in order.
    """

    # It keeps no history.
    history = None

    def __init__(self, ready=True):
        self.ready = ready
        self.subscribed = set()
        self.events = []
        self.published = []
        self.failureCallbacks = []
        self._deliver = None

    def describe(self):
        return {"kind": "recording", "ready": self.ready, "subscriptions": len(self.subscribed)}

    def attach(self, deliver):
        self._deliver = deliver

    def subscribe(self, channel):
        self.subscribed.add(channel)
        self.events.append(("subscribe", channel))

    def unsubscribe(self, channel):
        self.subscribed.discard(channel)
        self.events.append(("unsubscribe", channel))

    def publish(self, channels, payload, onFailure=None, key=None, onConfirmed=None):
        if not self.ready:
            raise BrokerUnavailable("the recording broker is set not ready")
        self.published.append((list(channels), payload))
        self.failureCallbacks.append(onFailure)
        self._deliver(channels, payload)
        if onConfirmed is not None:
            # Confirmed when confirm() says so (a subclass may hold it).
            from lhttp.acks import Receipt

            self.confirm().addCallbacks(
                lambda ignored: onConfirmed(Receipt()),
                lambda failure: onFailure(failure.value) if onFailure is not None else None,
            )

    def confirm(self):
        return succeed(None)

    def failPublishes(self, error):
        """
        Play a cluster that lost what was published so far: tell each
        publisher, as a real broker would.
        """
        callbacks, self.failureCallbacks = self.failureCallbacks, []
        for onFailure in callbacks:
            if onFailure is not None:
                onFailure(error)

    def deliverFromRemote(self, channels, payload):
        """
        Play another node: deliver a payload as if it came from the broker.
        """
        return self._deliver(channels, payload)


def _headerBlock(headers):
    """
    NATS headers as nats-server writes them (C{b""}: none).
    """
    if not headers:
        return b""
    return b"NATS/1.0\r\n" + b"".join(
        b"%s: %s\r\n" % (name.encode(), str(value).encode()) for name, value in headers.items()
    ) + b"\r\n"


class FakeNATSSubscription:
    """
    What L{FakeNATS.subscribe} returns.
    """

    def __init__(self, client, subject, cb, sid):
        self._client = client
        self.subject = subject
        self.cb = cb
        self._id = sid

    async def unsubscribe(self):
        await self._client._step("unsubscribe", self.subject)
        self._client.subscriptions.remove(self)


class FakeNATS:
    """
    Stands where a nats-py client stands, for L{lhttp.brokers.nats.NATSBroker}
    tests: connected at once, it records what it is asked, and every call
    can be held at a gate to play nats-py pausing on a full buffer.

    It needs a running asyncio event loop (Twisted's asyncio reactor).

    @ivar log: C{(operation, subject)} in the order the calls were made:
        C{"subscribe"}, C{"unsubscribe"}, C{"publish"}, C{"flush"}.
    @ivar subscriptions: the L{FakeNATSSubscription}s held now.
    @ivar gate: L{None}, or an C{asyncio.Event} that calls wait for.
    @ivar pauseWhen: which calls wait at the gate: a predicate given
        C{(operation, subject)}; default: every call.
    @ivar flushError: L{None}, or the exception C{flush} raises (a
        PING/PONG that never comes back).
    @ivar js: its L{FakeJetStream} (what C{jetstream()} and C{jsm()}
        return), whose streams and key-value buckets outlive reconnects
        (C{connects} counts the C{connect} calls).
    @ivar inline: subscription id -> C{handler(subject, data, headers)},
        as L{lhttp.brokers.connection.NATS.inline}: a message of that
        subscription is given to it first, raw (C{bytes} subject, the
        header block as nats-server writes it).
    """

    max_payload = 1024 * 1024

    def __init__(self):
        self.log = []
        self.subscriptions = []
        self.published = []
        # (subject, headers) of the publishes that had NATS headers.
        self.headers = []
        self.gate = None
        self.pauseWhen = lambda operation, subject: True
        self.is_connected = False
        self.is_closed = False
        self.connected_url = None
        self.stats = {"reconnects": 0}
        self.options = {}
        self.connects = 0
        self.flushError = None
        self.js = FakeJetStream(self)
        self.inline = {}
        self._sids = itertools.count(1)

    async def _step(self, operation, subject):
        self.log.append((operation, subject))
        if self.gate is not None and self.pauseWhen(operation, subject):
            await self.gate.wait()

    async def connect(self, servers, **options):
        from urllib.parse import urlsplit

        self.options = options
        self.connected_url = urlsplit(servers[0])
        self.is_connected = True
        self.is_closed = False
        self.connects += 1

    def jetstream(self, **options):
        return self.js

    def jsm(self, **options):
        return self.js

    async def subscribe(self, subject, cb):
        await self._step("subscribe", subject)
        subscription = FakeNATSSubscription(self, subject, cb, next(self._sids))
        self.subscriptions.append(subscription)
        return subscription

    async def publish(self, subject, payload, headers=None):
        await self._step("publish", subject)
        self.published.append((subject, payload))
        if headers is not None:
            self.headers.append((subject, headers))

    async def flush(self, timeout=None):
        await self._step("flush", None)
        if self.flushError is not None:
            raise self.flushError

    async def deliver(self, subject, data, headers=None):
        """
        Play NATS delivering a message to every subscription on C{subject}.
        """
        from types import SimpleNamespace

        for subscription in list(self.subscriptions):
            if subscription.subject == subject:
                handler = self.inline.get(subscription._id)
                if handler is not None and handler(
                        subject.encode(), data, _headerBlock(headers)):
                    continue
                await subscription.cb(SimpleNamespace(subject=subject, data=data, headers=headers))

    async def drain(self):
        self.is_connected = False
        self.is_closed = True

    close = drain

    def subjects(self):
        """
        @return: the subjects subscribed now, sorted, one entry per
            subscription (so a subject held twice shows twice).
        """
        return sorted(s.subject for s in self.subscriptions)


def subjectMatches(pattern, subject):
    """
    Whether a NATS subject matches a subscription's subject, with its
    C{*} (one token) and C{>} (the rest) wildcards.
    """
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


class FakeStream:
    """
    A JetStream stream of a L{FakeJetStream}.

    @ivar config: its C{nats.js.api.StreamConfig}.
    @ivar messages: C{(sequence, subject, payload, headers)}, oldest first
        (trimmed to C{max_msgs_per_subject}).
    """

    def __init__(self, config, created):
        self.config = config
        self.created = created
        self.messages = []
        self.last = 0
        self.ids = {}

    def info(self):
        from nats.js.api import StreamInfo, StreamState

        first = self.messages[0][0] if self.messages else self.last + 1
        state = StreamState(messages=len(self.messages), bytes=0, first_seq=first,
                            last_seq=self.last, consumer_count=0)
        return StreamInfo(config=self.config, state=state, created=self.created)

    def store(self, subject, payload, headers):
        """
        @return: C{(sequence, duplicate)}.
        """
        identifier = (headers or {}).get("Nats-Msg-Id")
        if identifier is not None and identifier in self.ids:
            return self.ids[identifier], True
        self.last += 1
        if identifier is not None:
            self.ids[identifier] = self.last
        self.messages.append((self.last, subject, payload, dict(headers or {})))
        limit = self.config.max_msgs_per_subject
        if limit and limit > 0:
            same = [m for m in self.messages if m[1] == subject]
            for old in same[:-limit]:
                self.messages.remove(old)
        return self.last, False


class FakeConsumer:
    """
    An ordered push consumer of a L{FakeJetStream}: what its C{subscribe}
    returns.
    """

    def __init__(self, js, stream, subject, cb):
        self._js = js
        self.stream = stream
        self.subject = subject
        self.cb = cb
        self.delivered = 0
        self.pending = 0

    def send(self, entry, pending=0):
        from types import SimpleNamespace

        sequence, subject, payload, headers = entry
        self.delivered += 1
        metadata = SimpleNamespace(
            sequence=SimpleNamespace(stream=sequence, consumer=self.delivered),
            num_pending=pending, stream=self.stream.config.name,
        )
        message = SimpleNamespace(subject=subject, data=payload, headers=headers or None,
                                  metadata=metadata)
        return asyncio.ensure_future(self.cb(message))

    async def consumer_info(self):
        from types import SimpleNamespace

        return SimpleNamespace(num_pending=self.pending,
                               delivered=SimpleNamespace(consumer_seq=self.delivered))

    async def unsubscribe(self):
        if self in self._js.consumers:
            self._js.consumers.remove(self)


class FakeKeyValue:
    """
    A key-value bucket of a L{FakeJetStream}: a stream C{KV_<bucket>} on
    subjects C{$KV.<bucket>.<key>}, as nats-server keeps one.
    """

    def __init__(self, js, bucket):
        self._js = js
        self.bucket = bucket

    async def put(self, key, value):
        return (await self._js.publish(f"$KV.{self.bucket}.{key}", value)).seq

    async def delete(self, key):
        await self._js.publish(f"$KV.{self.bucket}.{key}", b"", headers={"KV-Operation": "DEL"})
        return True


class FakeJetStream:
    """
    Enough of nats-py's JetStream (its context and its manager) for unit
    tests of the history and presence engines against L{FakeNATS}:
    streams that store what is published on their subjects once per
    C{Nats-Msg-Id}, acknowledgements, ordered consumers, key-value buckets.

    @ivar streams: name -> L{FakeStream}.
    @ivar consumers: the L{FakeConsumer}s subscribed now.
    @ivar loseAcks: while true, C{publishStored} stores the messages but
        their acknowledgements never come back (lost on the way).
    @ivar lostAcks: the L{lhttp.brokers.connection.StoredAcks} of the
        acknowledgements lost.
    @ivar forgotten: the L{lhttp.brokers.connection.StoredAcks} given up
        on (C{forget}).
    @ivar available: while false, every call fails as against a
        nats-server without JetStream.
    """

    def __init__(self, client):
        self._client = client
        self.streams = {}
        self.consumers = []
        self.loseAcks = False
        self.lostAcks = []
        self.forgotten = []
        self.available = True

    def _check(self):
        from nats.errors import NoRespondersError

        if not self.available or not self._client.is_connected:
            raise NoRespondersError()

    # The manager

    async def add_stream(self, config=None, **params):
        import datetime

        from nats.js.api import StreamConfig
        from nats.js.errors import BadRequestError

        self._check()
        config = config if config is not None else StreamConfig(**params)
        existing = self.streams.get(config.name)
        if existing is not None:
            if existing.config != config:
                raise BadRequestError(description="stream name already in use")
            return existing.info()
        stream = FakeStream(config, datetime.datetime.now(datetime.timezone.utc))
        self.streams[config.name] = stream
        return stream.info()

    async def update_stream(self, config=None, **params):
        from nats.js.api import StreamConfig

        self._check()
        config = config if config is not None else StreamConfig(**params)
        stream = self._stream(config.name)
        stream.config = config
        return stream.info()

    async def stream_info(self, name, **options):
        self._check()
        return self._stream(name).info()

    async def delete_stream(self, name):
        self._check()
        self._stream(name)
        del self.streams[name]
        return True

    def _stream(self, name):
        from nats.js.errors import NotFoundError

        if name not in self.streams:
            raise NotFoundError(description="stream not found")
        return self.streams[name]

    def _streamFor(self, subject):
        for stream in self.streams.values():
            if any(subjectMatches(pattern, subject) for pattern in stream.config.subjects or ()):
                return stream
        return None

    # Publishing

    def _store(self, subject, payload, headers):
        from nats.js.api import PubAck
        from nats.js.errors import NoStreamResponseError

        self._check()
        stream = self._streamFor(subject)
        if stream is None:
            raise NoStreamResponseError()
        sequence, duplicate = stream.store(subject, payload, headers)
        if not duplicate:
            entry = stream.messages[-1]
            for consumer in list(self.consumers):
                if consumer.stream is stream and subjectMatches(consumer.subject, subject):
                    consumer.send(entry)
        return PubAck(stream=stream.config.name, seq=sequence, duplicate=duplicate or None)

    async def publish(self, subject, payload=b"", timeout=None, stream=None, headers=None):
        await self._client._step("js.publish", subject)
        return self._store(subject, payload, headers)

    async def publishStored(self, entries):
        """
        As L{lhttp.brokers.connection.FastJetStream.publishStored}: each
        entry C{(index, subject, payload, msgId)} stored (once per
        C{msgId}), the acknowledgements in a
        L{lhttp.brokers.connection.StoredAcks}; while C{loseAcks}, they
        never come (it is kept in C{lostAcks}).
        """
        from lhttp.brokers.connection import StoredAcks

        acks = StoredAcks(entries, asyncio.get_running_loop())
        for index, subject, payload, msgId in entries:
            await self._client._step("js.publishStored", subject)
            try:
                ack = self._store(subject, payload, {"Nats-Msg-Id": msgId})
            except Exception as e:
                acks.settle(index, error=e)
                continue
            if not self.loseAcks:
                acks.settle(index, ack)
        if self.loseAcks:
            self.lostAcks.append(acks)
        return acks

    def forget(self, acks):
        """
        As L{lhttp.brokers.connection.FastJetStream.forget}: kept in
        C{forgotten}.
        """
        self.forgotten.append(acks)

    # Consumers

    async def subscribe(self, subject, cb=None, stream=None, deliver_policy=None, config=None,
                        **options):
        from nats.js.api import DeliverPolicy

        self._check()
        found = self._stream(stream) if stream is not None else self._streamFor(subject)
        consumer = FakeConsumer(self, found, subject, cb)
        matching = [m for m in found.messages if subjectMatches(subject, m[1])]
        start = getattr(config, "opt_start_seq", None) if config is not None else None
        if deliver_policy == DeliverPolicy.LAST_PER_SUBJECT:
            last = {}
            for entry in matching:
                last[entry[1]] = entry
            backlog = sorted(last.values())
        elif deliver_policy == DeliverPolicy.BY_START_SEQUENCE or start:
            backlog = [m for m in matching if m[0] >= (start or 0)]
        elif deliver_policy in (None, DeliverPolicy.ALL):
            backlog = matching
        else:
            backlog = []
        consumer.pending = 0
        for index, entry in enumerate(backlog):
            consumer.send(entry, pending=len(backlog) - index - 1)
        self.consumers.append(consumer)
        return consumer

    # Key-value

    async def create_key_value(self, bucket, ttl=None, history=1, **options):
        from nats.js.api import StreamConfig

        await self.add_stream(StreamConfig(
            name=f"KV_{bucket}", subjects=[f"$KV.{bucket}.>"], max_age=ttl,
            max_msgs_per_subject=history,
        ))
        return FakeKeyValue(self, bucket)

    async def key_value(self, bucket):
        self._stream(f"KV_{bucket}")
        return FakeKeyValue(self, bucket)


@implementer(IUpstream)
class FakeUpstream:
    """
    An upstream whose requests the test answers: the allow-list is real,
    and each call waits in C{calls} as C{(request, peer, message,
    deferred)} for the test to fire C{deferred} (with L{None}, an
    L{lhttp.upstream.agent.UpstreamResponse}, or a failure).
    """

    def __init__(self, allow=("http://127.0.0.1:8080/",), targets=(), maxPending=2):
        from lhttp.upstream.urls import AllowList

        self.maxPending = maxPending
        self.allowList = AllowList(allow, targets)
        self.calls = []

    def check(self, value):
        return self.allowList.check(value)

    def call(self, request, peer, message):
        d = Deferred()
        self.calls.append((request, peer, message, d))
        return d


# Tokens for tests of authentication (docs/authentication.rst).

def makeToken(key, sub, algorithm="HS256", headers=None, expiresIn=None, **claims):
    """
    A signed JWT, as an application's backend issues one::

        token = makeToken("s3cret", "alice", expiresIn=60, caps=[...])
        token = makeToken(pair.privatePEM, "alice", "RS256", headers={"kid": "k1"})

    @param key: the HMAC secret (L{str} or L{bytes}) or a PEM private key.
    @param sub: the user (left out when L{None}).
    @param algorithm: a PyJWT algorithm name.
    @param headers: extra JOSE header fields (C{kid}).
    @param expiresIn: seconds from now for C{exp} (none when L{None}).
    @param claims: more claims (C{exp}, C{nbf}, C{aud}, C{caps}...).
    @rtype: L{str}
    """
    import time

    import jwt

    payload = dict(claims)
    if sub is not None:
        payload["sub"] = sub
    if expiresIn is not None:
        payload["exp"] = int(time.time() + expiresIn)
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


class KeyPair:
    """
    An asymmetric key pair for signing test tokens: C{privatePEM} signs
    (L{makeToken}), C{publicPEM} is what C{--auth-jwt-public-key} reads,
    L{jwk} is its entry in a JWKS document.
    """

    def __init__(self, kind="RSA"):
        """
        @param kind: C{"RSA"} (2048 bits), C{"EC"} (P-256) or C{"Ed25519"}.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        if kind == "RSA":
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "EC":
            self.key = ec.generate_private_key(ec.SECP256R1())
        elif kind == "Ed25519":
            self.key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"no {kind!r} keys here")
        self.kind = kind
        self.privatePEM = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.publicPEM = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
        )

    def jwk(self, kid):
        """
        @return: the public key as a JWK (a L{dict}) with key id C{kid}.
        """
        import json

        from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

        algorithm = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "Ed25519": OKPAlgorithm}[self.kind]
        document = json.loads(algorithm.to_jwk(self.key.public_key()))
        document["kid"] = kid
        return document
