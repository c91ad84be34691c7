"""
Pub/sub as the parts of a node use it: channel names checked against the
node's limits, publishes handed to the broker, subscribers added to and
removed from the local channel table.

Connections, the reserved-header filters and C{POST /publish} are given a
L{PubSub}, not the node: it is all of the node they need for channels.
"""

from zope.interface import implementer

from lhttp.channels import channelList
from lhttp.codec import Message, serialize
from lhttp.errors import BrokerUnavailable, TooManyChannels
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

    def checkChannels(self, channels):
        return channelList(channels, self._maxChannelLength)

    def checkPublishChannels(self, channels):
        names = channelList(channels, self._maxChannelLength)
        if len(names) > self._maxPublishChannels:
            raise TooManyChannels(
                f"a publish names {len(names)} channels; at most {self._maxPublishChannels} are allowed"
            )
        return names

    def publishBytes(self, channels, payload, onFailure=None):
        names = self.checkPublishChannels(channels)
        broker = self.broker
        if not broker.ready:
            raise BrokerUnavailable("the message broker is not connected; publish refused")
        broker.publish(names, payload, onFailure)
        self._metrics.publishes += 1
        return names

    def publish(self, channels, command, headers=(), body=b"", onFailure=None):
        return self.publishBytes(channels, serialize(Message(command, headers, body)), onFailure)

    def subscribe(self, subscriber, names):
        return self.channels.add(subscriber, names)

    def unsubscribe(self, subscriber, names):
        self.channels.remove(subscriber, names)

    def confirm(self):
        return self.broker.confirm()
