"""
Pub/sub as the parts of a node use it: channel names checked against the
node's limits, publishes handed to the broker, subscribers added to and
removed from the local channel table.

Connections, the reserved-header filters and C{POST /publish} are given a
L{PubSub}, not the node: it is all of the node they need for channels.
"""

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.channels import channelList
from lhttp.codec import Message, serialize
from lhttp.errors import BrokerUnavailable, ReservedHeader, TooManyChannels
from lhttp.history.recovery import Recovery
from lhttp.history.wire import POSITION_HEADERS
from lhttp.interfaces import IPubSub


@implementer(IPubSub)
class PubSub:
    """
    @ivar broker: the L{lhttp.interfaces.IBroker}.
    @ivar channels: the local L{lhttp.channels.Channels} table.
    """

    def __init__(self, broker, channels, metrics, maxChannelLength, maxPublishChannels):
        """
        @param metrics: the L{lhttp.metrics.Metrics} that counts publishes.
        @param maxChannelLength: characters in a channel name.
        @param maxPublishChannels: channels one publish may name.
        """
        self.broker = broker
        self.channels = channels
        self._metrics = metrics
        self._maxChannelLength = maxChannelLength
        self._maxPublishChannels = maxPublishChannels
        # With history, clients may not forge positions: a subscriber's SDK
        # trusts them.
        self._positions = broker.history is not None

    def checkChannels(self, channels):
        return channelList(channels, self._maxChannelLength)

    def checkPublishChannels(self, channels, message=None):
        names = channelList(channels, self._maxChannelLength)
        if len(names) > self._maxPublishChannels:
            raise TooManyChannels(
                f"a publish names {len(names)} channels; at most {self._maxPublishChannels} are allowed"
            )
        if message is not None and self._positions:
            # Only on history channels: elsewhere they are the
            # application's headers, as without --history.
            retentionFor = self.broker.history.policy.retentionFor
            for name in POSITION_HEADERS:
                if message.getHeader(name) is not None:
                    kept = next((c for c in names if retentionFor(c) is not None), None)
                    if kept is not None:
                        raise ReservedHeader(
                            f"'{name}' is set by the node on history channels ({kept!r}); "
                            "a publish to one may not carry it"
                        )
        return names

    def publishBytes(self, channels, payload, onFailure=None, key=None, onConfirmed=None):
        names = self.checkPublishChannels(channels)
        broker = self.broker
        if not broker.ready:
            raise BrokerUnavailable(
                "not known to be stored: the message broker is not connected (nothing was "
                "sent); publish it again with the same idempotency-key"
            )
        if key is None and onConfirmed is None:
            broker.publish(names, payload, onFailure)
        else:
            broker.publish(names, payload, onFailure, key, onConfirmed)
        self._metrics.publishes += 1
        return names

    def publish(self, channels, command, headers=(), body=b"", onFailure=None):
        return self.publishBytes(channels, serialize(Message(command, headers, body)), onFailure)

    log = Logger()

    def subscribe(self, subscriber, names, recover=None, announce=None):
        if not recover:
            return self.channels.add(subscriber, names)
        history = self.broker.history
        channels = self.channels
        recovering = []
        for name in names:
            if name not in recover:
                continue
            if history is not None and history.policy.retentionFor(name) is not None:
                channels.holdLive(subscriber, name)
                recovering.append(name)
            else:
                # Nothing kept: said so, and the subscription goes live.
                announce(name, Recovery(None, False, (), 0), recover[name][0])
        added = channels.add(subscriber, names)
        if not recovering:
            return added

        def recoverOne(name):
            since, epoch = recover[name]

            def write(recovery):
                if channels.isRecovering(subscriber, name):
                    announce(name, recovery, since)
                    # Paced by the client's reading: may take a while.
                    return channels.recovered(subscriber, name, recovery)

            def failed(failure):
                self.log.warn("Reading the history of {channel} failed: {error}",
                              channel=name, error=failure.getErrorMessage())
                write(Recovery(None, False, (), 0, unavailable=True))

            return maybeDeferred(history.read, name, since, epoch).addCallbacks(write, failed)

        def readHistory(ignored):
            return gatherResults([recoverOne(name) for name in recovering], consumeErrors=True)

        if isinstance(added, Deferred):
            return added.addCallback(readHistory)
        return readHistory(None)

    def unsubscribe(self, subscriber, names):
        self.channels.remove(subscriber, names)

    def confirm(self):
        return self.broker.confirm()
