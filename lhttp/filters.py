"""
The reserved headers (SPEC section 2), built as header filters the way a
user adds one: C{multipart} before the processor; C{subscribe}, C{publish},
C{unsubscribe} after it, in that order.

Channel names are checked before the processor runs, so a message with a
bad name is refused whole, with a 400 error reply, before anything happens.
"""

from lhttp.codec import parseMultipart
from lhttp.dispatch import HeaderFilter


class MultipartFilter(HeaderFilter):
    """
    C{multipart: o1 o2 ...}: cut the body into parts for the processor
    (L{lhttp.interfaces.IConnection.getParts}).
    """

    def beforeRequest(self, connection, message):
        offsets = message.getHeader("multipart")
        if offsets is not None:
            server = connection.server
            message.parts = parseMultipart(
                message.body, offsets, server.maxHeaders, server.maxHeaderLength
            )


class _ChannelHeaderFilter(HeaderFilter):
    """
    A header whose value is a space-separated list of channels.
    """

    header = None

    def beforeRequest(self, connection, message):
        value = message.getHeader(self.header)
        if value is not None:
            connection.checkedChannels(value)

    def afterRequest(self, connection, message):
        value = message.getHeader(self.header)
        if value is not None:
            return self.act(connection, value)

    def act(self, connection, channels):
        raise NotImplementedError()


class SubscribeFilter(_ChannelHeaderFilter):
    """
    C{subscribe: a b}: the connection receives what is published to each.
    """

    header = "subscribe"

    def act(self, connection, channels):
        # A Deferred here holds this connection's next messages until the
        # subscription reaches the whole cluster.
        return connection.subscribe(channels)


class PublishFilter(_ChannelHeaderFilter):
    """
    C{publish: a b}: the message, as the processor left it, goes to every
    subscriber of each channel.
    """

    header = "publish"

    def beforeRequest(self, connection, message):
        value = message.getHeader("publish")
        if value is not None:
            connection.server.publishChannels(value)

    def act(self, connection, channels):
        command = connection.getCommand()
        connection.server.publish(
            channels,
            connection.publishedBytes(),
            lambda error: connection.sendError(error, command),
        )


class UnsubscribeFilter(_ChannelHeaderFilter):
    """
    C{unsubscribe: a b}: stop receiving from each.
    """

    header = "unsubscribe"

    def act(self, connection, channels):
        connection.unsubscribe(channels)


def standardFilters():
    """
    @return: the built-in filters, in the order SPEC section 2 gives.
    """
    return [MultipartFilter(), SubscribeFilter(), PublishFilter(), UnsubscribeFilter()]
