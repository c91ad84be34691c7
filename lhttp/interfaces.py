"""
Every seam of lhttp, as a zope interface: what a processor, a header filter,
a broker and a connection are.
"""

from zope.interface import Attribute, Interface


class IConnection(Interface):
    """
    One client's WebSocket connection, as processors and filters see it.

    While a message is handled, the connection holds it (L{getCommand},
    L{getHeader}, L{getBody}, L{getParts}) and a reply draft (L{setCommand},
    L{setHeader}, L{setBody}) that L{send} sends. If a processor changes the
    draft without sending it, what the message's C{publish} header publishes
    is the message as the processor left it.
    """

    data = Attribute("A L{dict} for processors and filters to keep per-connection state in.")
    subscriptions = Attribute("A L{frozenset} of the channels this connection receives.")
    handshake = Attribute(
        "The WebSocket opening handshake request "
        "(L{autobahn.websocket.types.ConnectionRequest}: C{path}, C{params}, "
        "C{headers}, C{origin}), or L{None} outside a WebSocket."
    )

    def getMessage():
        """
        @return: the L{lhttp.codec.Message} being handled.
        """

    def getCommand():
        """
        @return: the command of the message being handled.
        """

    def getHeader(name, default=None):
        """
        @return: the value of header C{name} (case-insensitive) of the
            message being handled, or C{default}.
        """

    def getBody():
        """
        @return: the body (L{bytes}) of the message being handled.
        """

    def getParts():
        """
        @return: the multipart parts (L{list} of L{lhttp.codec.Part}); empty
            when the message has no C{multipart} header.
        """

    def setCommand(command):
        """
        Set the reply's command (default: the incoming command).
        """

    def setHeader(name, value):
        """
        Set a header of the reply, replacing one of the same name.
        """

    def addHeader(name, value):
        """
        Add a header to the reply (the original lhttp's name for it).
        """

    def setBody(body):
        """
        Set the reply's body without sending it.
        """

    def send(body=None):
        """
        Send the reply to this connection, with C{body} (L{bytes} or L{str})
        if given, then start a new draft.
        """

    def sendMessage(message):
        """
        Send an L{lhttp.codec.Message} to this connection as it is.
        """

    def sendError(error, command=None, headers=()):
        """
        Send the C{LHTTP/1.0 error} reply for an L{lhttp.errors.LHTTPError}.

        @param command: the command it answers (default: the message being
            handled's).
        @param headers: more C{(name, value)} headers for the reply.
        """

    def getRelayed():
        """
        @return: the message being handled as the processor left it, an
            L{lhttp.codec.Message}: the original (relayed verbatim) unless
            the processor changed the draft without sending it; then its
            command, the original headers with the draft's set and added
            ones, its body. What C{publish} and C{upstream} send on.
        """

    def relay(channels):
        """
        Publish L{getRelayed} to channels (what the C{publish} header does);
        if the cluster cannot confirm it later, this connection gets a 503
        error reply.

        @raise lhttp.errors.LHTTPError: bad channel name, too many
            channels, broker unavailable.
        """

    def publish(channels, command, headers=(), body=b""):
        """
        Publish a new message to channels.

        @raise lhttp.errors.LHTTPError: bad channel name, too many
            channels, broker unavailable.
        """

    def checkChannels(channels):
        """
        @param channels: names, or one space-separated header value.
        @return: the checked, distinct names, in order.
        @raise lhttp.errors.BadChannel: a bad name, or none.
        """

    def checkPublishChannels(channels, message=None):
        """
        L{checkChannels}, and no more than one publish may name; with the
        message, that it carries no header only the node may set.

        @raise lhttp.errors.TooManyChannels: too many.
        @raise lhttp.errors.ReservedHeader: C{offset} or C{epoch} on a
            node that keeps history.
        """

    def subscribe(channels, since=None, epoch=None):
        """
        Receive what is published to each channel (an iterable of names, or
        one space-separated string).

        With C{since} (an offset, or C{{channel: offset}}), a channel that
        keeps history is recovered first: the client gets a C{recovery}
        message, then every retained message after that offset, then live
        ones, none twice (L{lhttp.history}). C{epoch} (a value, or
        C{{channel: epoch}}) is the epoch the offsets belong to.

        @return: L{None}, or a L{Deferred} that fires once the subscriptions
            reach the whole cluster.
        @raise lhttp.errors.BadChannel: before subscribing to any of them.
        """

    def unsubscribe(channels):
        """
        Stop receiving from each channel.
        """

    def isSubscribed(channel):
        """
        @return: whether this connection receives C{channel} (cheaper than
            C{channel in subscriptions}, which copies them).
        """

    def watchSubscriptions(watcher):
        """
        Call C{watcher(connection, channels, subscribed)} whenever this
        connection's subscriptions change: C{channels} the names added
        (C{subscribed} true) or removed, once each; so a filter follows
        them at a cost in what changed, not in how many there are.
        """

    def getPeer():
        """
        @return: the client's address (an L{twisted.internet.interfaces.IAddress}).
        """

    def close(code=1000, reason=None):
        """
        Close the WebSocket.
        """


class IProcessor(Interface):
    """
    Application code for one command.

    C{onOpen} runs once per connection, before the processor's first
    C{onMessage} there; C{onClose} runs at disconnect if C{onOpen} ran.
    Each may return a L{twisted.internet.defer.Deferred}; messages of one
    connection are still handled one after the other, in order. An
    exception is logged and answered with a 500 error reply.
    """

    def onOpen(connection):
        """
        @type connection: L{IConnection}
        """

    def onMessage(connection, message):
        """
        @type connection: L{IConnection}
        @type message: L{lhttp.codec.Message}
        """

    def onClose(connection):
        """
        @type connection: L{IConnection}
        """


class IHeaderFilter(Interface):
    """
    A hook around every message, the way reserved headers are built:
    C{beforeRequest} runs before the processor (raise an
    L{lhttp.errors.LHTTPError} to refuse the message), C{afterRequest} after
    it. Each hook may return a L{twisted.internet.defer.Deferred}.
    """

    headers = Attribute(
        "The names of the headers it acts on (optional): a message whose "
        "command has no processor gets a 404 unless it carries one of the "
        "headers some filter names."
    )

    def onOpen(connection):
        """
        A connection opened.
        """

    def beforeRequest(connection, message):
        """
        Before the processor.
        """

    def afterRequest(connection, message):
        """
        After the processor.
        """

    def onClose(connection):
        """
        A connection closed.
        """


class ISubscriber(Interface):
    """
    What the channel table delivers to: a WebSocket connection, in practice.
    """

    def sendPreparedMessage(prepared):
        """
        Write a message framed once for every subscriber.
        """

    writable = Attribute(
        "Whether the client takes bytes now (its transport did not ask to pause): "
        "a recovery is written only while it does."
    )

    def whenWritable():
        """
        @return: a L{Deferred} firing with L{True} once the client takes
            bytes again, or with L{False} if the connection is closed first
            (a client that does not read for C{--slow-consumer-grace}
            seconds is closed 1008).
        """

    def hold(size):
        """
        Count bytes kept for the client (live messages held behind its
        recovery; negative once written or dropped).

        @return: L{False} once that is past C{--max-send-buffer} and it is
            closed as a slow consumer, else L{True}.
        """


class IPubSub(Interface):
    """
    Channels as the parts of a node use them (L{lhttp.pubsub.PubSub}):
    names checked with the node's limits, publishes to the broker,
    subscribers in the local channel table.
    """

    def checkChannels(channels):
        """
        @return: the checked, distinct names of C{channels} (names, or one
            space-separated string).
        @raise lhttp.errors.BadChannel: a bad name, or none.
        """

    def checkPublishChannels(channels, message=None):
        """
        L{checkChannels}, and no more than one publish may name; with the
        message, that it carries no header only the node may set.

        @raise lhttp.errors.TooManyChannels: too many.
        @raise lhttp.errors.ReservedHeader: C{offset} or C{epoch} on a
            node that keeps history.
        """

    def publishBytes(channels, payload, onFailure=None, key=None, onConfirmed=None):
        """
        Publish serialized LHTTP bytes, verbatim, on every node.

        @param onFailure: called with an L{lhttp.errors.LHTTPError} if the
            broker took it but could not confirm it later.
        @param key: an idempotency key (L{lhttp.acks}), or L{None}.
        @param onConfirmed: called with an L{lhttp.acks.Receipt} once the
            broker confirmed it, or L{None}.
        @return: the checked channel names.
        @raise lhttp.errors.LHTTPError: bad names, too many, or the broker
            cannot take it.
        """

    def publish(channels, command, headers=(), body=b"", onFailure=None):
        """
        Publish a new message (L{publishBytes} of its serialized form).
        """

    def subscribe(subscriber, names, recover=None, announce=None):
        """
        @param subscriber: an L{ISubscriber}.
        @param names: checked names.
        @param recover: C{{name: (since, epoch)}} for the names to recover
            from history first.
        @param announce: C{announce(channel, recovery, since)}, called
            just before a recovered channel's history is written (the
            connection sends its C{recovery} message).
        @return: L{None}, or a L{Deferred} that fires once the subscriptions
            reach the whole cluster.
        """

    def unsubscribe(subscriber, names):
        """
        Remove C{subscriber} from the channels it is on of C{names}.
        """

    def confirm():
        """
        @return: a L{Deferred} that fires once every publish taken so far
            is confirmed (see L{IBroker.confirm}).
        """


class IBroker(Interface):
    """
    Carries publishes between nodes. The node's L{lhttp.channels.Channels}
    tells it which channels have local subscribers; it calls the C{deliver}
    function given to L{attach} for every message that must reach them,
    exactly once per publish on every node.
    """

    ready = Attribute("L{True} while the broker can take publishes.")
    history = Attribute(
        "The L{IHistory} of the channels that keep history, or L{None} (no "
        "C{--history}). Always there: a broker that keeps no history sets it "
        "to L{None}."
    )

    def describe():
        """
        @return: a JSON-able L{dict} of the broker's state for C{/health}
            (its kind, whether it is connected, and what else helps an
            operator).
        """

    def attach(deliver):
        """
        @param deliver: C{deliver(channels, payload, position=None)} fans a
            payload out to the local subscribers of each channel; a message
            of a history channel is delivered for that one channel with its
            C{(epoch, offset, prev)}, C{prev} the offset of the channel's
            previous message (0: none or unknown), each message after the
            one before it.
        """

    def subscribe(channel):
        """
        The node has its first local subscriber to C{channel}.

        @return: L{None}, or a L{Deferred} that fires once the subscription
            reaches the whole cluster (the subscriber's later messages wait
            for it, so "subscribed, then published elsewhere" works).
        """

    def unsubscribe(channel):
        """
        The node has no local subscriber to C{channel} any more.
        """

    def publish(channels, payload, onFailure=None, key=None, onConfirmed=None):
        """
        Publish C{payload} (L{bytes}) to C{channels} (a sequence of
        validated names) on every node, this one included.

        @param onFailure: called with an L{lhttp.errors.LHTTPError} if the
            publish was taken but could not be confirmed afterwards.
        @param key: an idempotency key: a publish repeating one within the
            window (L{lhttp.acks}) is stored and delivered at most once per
            channel. Callers that pass neither C{key} nor C{onConfirmed}
            call C{publish(channels, payload, onFailure)}.
        @param onConfirmed: called with an L{lhttp.acks.Receipt} (the
            offsets given on history channels; whether it was a repeat)
            once the publish is confirmed.
        @raise lhttp.errors.BrokerUnavailable: when it cannot be taken; a
            publish is refused, never silently dropped.
        """

    def confirm():
        """
        @return: a L{Deferred} that fires once every publish taken so far
            is confirmed, or fails with L{lhttp.errors.BrokerUnavailable}.
        """


class IHistory(Interface):
    """
    A history engine: keeps recent messages of history channels.
    """

    policy = Attribute("The L{lhttp.history.HistoryPolicy}: which channels keep history.")

    def read(channel, since, epoch):
        """
        @param since: an offset (0: from the start of what is retained).
        @param epoch: the epoch C{since} belongs to, or L{None}.
        @return: a L{Deferred} firing with a L{lhttp.history.Recovery}
            (one larger than a read holds its first messages, its
            C{count}, and a C{rest} that reads the others as they are
            written).
        """

    def last(channel, count, before=None, maxBytes=None):
        """
        @param before: only messages with an offset below it (L{None}: up
            to the newest).
        @param maxBytes: stop reading once the payloads read pass this
            many bytes (the message that passes it is among those given,
            so a caller knows it did not fit).
        @return: a L{Deferred} firing with a L{lhttp.history.Recovery} of the last
            C{count} messages (C{complete} says whether they are all
            there were, C{more} whether older ones are retained).
        """


class IPresence(Interface):
    """
    A presence engine: who is subscribed to the channels that track it.
    """

    beforeStop = Attribute(
        "A list of callables the engine runs first when it stops (the node's "
        "clients leave before it does); an engine that never stops never runs it."
    )

    def join(channel, member):
        """
        Record that C{member} (a L{lhttp.presence.Member}) is subscribed to C{channel}.

        @return: L{None}, or a L{Deferred} that fires once the record is
            visible to every node (it never fails: a record that could not
            be written is retried or expires).
        """

    def leave(channel, client):
        """
        Forget client id C{client} on C{channel}.

        @return: like L{join}.
        """

    def members(channel):
        """
        @return: a L{Deferred} firing with the L{lhttp.presence.Member}s of C{channel},
            sorted by client id, or failing with an
            L{lhttp.errors.LHTTPError} (503 while the store is out of
            reach).
        """

    def describe():
        """
        @return: a JSON-able L{dict} of the engine's state for C{/health}
            (its kind, and whether it is ready).
        """


class IProcessorPlugin(Interface):
    """
    A Twisted plugin (a module in a C{twisted/plugins/} folder on the
    Python path) that adds a processor to C{twistd lhttp}.
    """

    command = Attribute("The command the processor handles.")

    def load():
        """
        @return: an L{IProcessor} provider.
        """


class IUpstream(Interface):
    """
    Where the C{upstream} header's HTTP requests go (SPEC section 5): the
    operator's allow-list and an HTTP client. L{lhttp.upstream.UpstreamFilter}
    runs it: L{check} before the processor (so a refused target stops the
    message before anything happens), L{call} after unsubscribe.
    """

    maxPending = Attribute(
        "How many upstream requests one connection may have in flight; "
        "its further messages wait (back-pressure on that connection only)."
    )

    def check(value):
        """
        Check an C{upstream} header against the allow-list; no I/O.

        @param value: the header's value, C{"METHOD TARGET"}.
        @return: the L{lhttp.upstream.UpstreamRequest} to make.
        @raise lhttp.errors.Forbidden: the target is not allowed, or
            upstream is off.
        @raise lhttp.errors.BadUpstream: the value is not C{METHOD TARGET}.
        """

    def call(request, peer, message):
        """
        Make the HTTP request for C{message} (L{lhttp.codec.Message}, as
        the processor left it) sent by C{peer} (an
        L{twisted.internet.interfaces.IAddress} or L{None}).

        @type request: L{lhttp.upstream.UpstreamRequest}, from L{check}.
        @return: a L{Deferred} firing with the
            L{lhttp.upstream.UpstreamResponse} to relay to the sender, or
            L{None} when responses are not relayed; failing with an
            L{lhttp.errors.LHTTPError} (502, 504) for the sender.
        """


class IAuthenticator(Interface):
    """
    How a node authenticates connections (docs/authentication.rst): from
    a token a client sends (L{lhttp.auth.jwt.JWTVerifier}) or from its
    WebSocket handshake (L{lhttp.auth.proxy.ConnectProxy}).
    """

    method = Attribute("Its name: C{\"jwt\"} or C{\"proxy\"} (L{lhttp.auth.Identity.method}).")
    fromHandshake = Attribute(
        "L{True} if it authenticates a connection as soon as it opens, from "
        "its handshake; L{False} if it waits for a C{connect} message's token."
    )

    def authenticate(connection, token, refresh=False):
        """
        @param connection: the L{IConnection}.
        @param token: the C{token} header of a C{connect} or C{refresh}
            message, or L{None} (from the handshake).
        @param refresh: the connection is authenticated already and its
            credential is being renewed.
        @return: a L{twisted.internet.defer.Deferred} firing with an
            L{lhttp.auth.Identity}, or failing with
            L{lhttp.errors.Unauthorized} (refused; the detail says why in
            one line, never repeating the credential) or
            L{lhttp.errors.AuthenticationUnavailable}.
        """


class IBodyLimit(Interface):
    """
    A resource that judges a request by its head (method, path, headers)
    before any of its body is read, so that L{lhttp.web.site.LHTTPSite} neither
    stores nor waits for a body it would refuse.

    The site finds the resource a request goes to as soon as its headers
    are in (the traversal it would do anyway, done early) and asks it.
    """

    def bodyLimit(request, length):
        """
        @param request: the L{twisted.web.iweb.IRequest}; its method, path
            and headers are set, its body is not read yet.
        @param length: the announced C{Content-Length}, or L{None} for a
            chunked body.
        @return: the largest body, in bytes, this resource takes; a larger
            one is refused with 413 (at once when announced, else when the
            body grows past it).
        @raise lhttp.errors.LHTTPError: refuse the request now, with its
            status (a missing or wrong credential, say).
        """

    def renderRefusal(request, error):
        """
        Answer a request refused before its body was read.

        @param error: the L{lhttp.errors.LHTTPError}, from L{bodyLimit} or
            a 413 for a body that grew past the limit.
        @return: the response body (L{bytes}), having set the status and
            headers on C{request}.
        """


class IControl(Interface):
    """
    Server-side control of a user's connections (C{POST /api/disconnect},
    C{POST /api/unsubscribe}): what a trusted backend does to every
    connection of one user, on this node and, in a cluster, on every node.

    Each node applies a command to its own connections once, the node that
    took it included.
    """

    cluster = Attribute("L{True} when commands reach every node of a cluster.")

    def disconnect(user, reconnect=False):
        """
        Close every connection of C{user}: WebSocket close code 4403
        (C{"disconnected by the server"}), or 4000 (C{"reconnect"}) when
        C{reconnect} is true.

        @return: a L{Deferred} firing with the number of connections
            closed on this node, or failing with an
            L{lhttp.errors.LHTTPError} (503: the other nodes may not have
            been told).
        """

    def unsubscribe(user, channel):
        """
        Make every connection of C{user} leave C{channel} (presence
        leave included) and tell it so with an C{unsubscribed} message.

        @return: a L{Deferred} firing with the number of connections on
            this node that left it, or failing as L{disconnect}.
        """
