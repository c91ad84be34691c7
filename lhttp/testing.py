"""
In-memory test doubles for code built on lhttp, shipped with the library
(like L{treq.testing}): no sockets, no reactor running.

    server = LHTTPServer(reactor=MemoryReactorClock())
    server.addProcessor("echo", EchoProcessor())
    client = FakeClient(server)
    client.receive(b"LHTTP/1.0 echo\\r\\n\\r\\nhi")
    assert client.messages()[0].body == b"hi"
"""

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from zope.interface import implementer

from lhttp.codec import parse
from lhttp.connection import Connection
from lhttp.errors import BrokerUnavailable
from lhttp.interfaces import IBroker, ISubscriber


@implementer(ISubscriber)
class FakeWebSocket:
    """
    Stands where an Autobahn protocol stands: records what is written.

    @ivar sent: C{(payload, isBinary)} pairs, in order, replies and
        deliveries alike.
    @ivar closedWith: C{(code, reason)} once L{sendClose} was called.
    @ivar reading: L{False} while the server has stopped reading from it.
    """

    def __init__(self):
        self.sent = []
        self.closedWith = None
        self.reading = True

    def pauseReading(self):
        self.reading = False

    def resumeReading(self):
        self.reading = True

    def sendMessage(self, payload, isBinary=False):
        self.sent.append((payload, isBinary))

    def sendPreparedMessage(self, prepared):
        self.sent.append((prepared.payload, prepared.binary))

    def sendClose(self, code=None, reason=None):
        self.closedWith = (code, reason)


class FakeClient:
    """
    A client connected to an L{lhttp.server.LHTTPServer} in memory: what it
    L{receive}s goes through the server's real dispatcher.

    @ivar connection: the server-side L{lhttp.connection.Connection}.
    @ivar socket: the L{FakeWebSocket} it writes to.
    """

    def __init__(self, server, peer=None, handshake=None):
        self.server = server
        self.socket = FakeWebSocket()
        self.connection = Connection(
            server,
            self.socket,
            peer or IPv4Address("TCP", "127.0.0.1", 40000 + id(self) % 20000),
            handshake,
        )
        server.connectionOpened(self.connection)

    def receive(self, data, isBinary=False):
        """
        The server receives one WebSocket message from this client.
        """
        self.server.dispatcher.messageReceived(self.connection, data, isBinary)

    def disconnect(self):
        self.server.connectionClosed(self.connection)

    def payloads(self):
        return [payload for payload, isBinary in self.socket.sent]

    def messages(self):
        """
        @return: everything written to this client so far, parsed.
        """
        return [parse(payload) for payload in self.payloads()]

    def clear(self):
        del self.socket.sent[:]


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

    def publish(self, channels, payload, onFailure=None):
        if not self.ready:
            raise BrokerUnavailable("the recording broker is set not ready")
        self.published.append((list(channels), payload))
        self.failureCallbacks.append(onFailure)
        self._deliver(channels, payload)

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


class FakeNATSSubscription:
    """
    What L{FakeNATS.subscribe} returns.
    """

    def __init__(self, client, subject, cb):
        self._client = client
        self.subject = subject
        self.cb = cb

    async def unsubscribe(self):
        await self._client._step("unsubscribe", self.subject)
        self._client.subscriptions.remove(self)


class FakeNATS:
    """
    Stands where a nats-py client stands, for L{lhttp.natsbroker.NATSBroker}
    tests: connected at once, it records what it is asked, and every call
    can be held at a gate to play nats-py pausing on a full buffer.

    It needs a running asyncio event loop (Twisted's asyncio reactor).

    @ivar log: C{(operation, subject)} in the order the calls were made:
        C{"subscribe"}, C{"unsubscribe"}, C{"publish"}, C{"flush"}.
    @ivar subscriptions: the L{FakeNATSSubscription}s held now.
    @ivar gate: L{None}, or an C{asyncio.Event} that calls wait for.
    @ivar pauseWhen: which calls wait at the gate: a predicate given
        C{(operation, subject)}; default: every call.
    """

    max_payload = 1024 * 1024

    def __init__(self):
        self.log = []
        self.subscriptions = []
        self.published = []
        self.gate = None
        self.pauseWhen = lambda operation, subject: True
        self.is_connected = False
        self.is_closed = False
        self.connected_url = None
        self.stats = {"reconnects": 0}
        self.options = {}

    async def _step(self, operation, subject):
        self.log.append((operation, subject))
        if self.gate is not None and self.pauseWhen(operation, subject):
            await self.gate.wait()

    async def connect(self, servers, **options):
        from urllib.parse import urlsplit

        self.options = options
        self.connected_url = urlsplit(servers[0])
        self.is_connected = True

    async def subscribe(self, subject, cb):
        await self._step("subscribe", subject)
        subscription = FakeNATSSubscription(self, subject, cb)
        self.subscriptions.append(subscription)
        return subscription

    async def publish(self, subject, payload):
        await self._step("publish", subject)
        self.published.append((subject, payload))

    async def flush(self, timeout=None):
        await self._step("flush", None)

    async def deliver(self, subject, data):
        """
        Play NATS delivering a message to every subscription on C{subject}.
        """
        from types import SimpleNamespace

        for subscription in list(self.subscriptions):
            if subscription.subject == subject:
                await subscription.cb(SimpleNamespace(subject=subject, data=data))

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
