"""
The reserved headers C{subscribe}, C{publish} and C{unsubscribe} (SPEC
section 2), built as header filters the way a user builds one, on the
public connection API only: they act after the processor, in that order.

Channel names are checked before the processor runs, so a message with a
bad name is refused whole, with a 400 error reply, before anything
happens. (C{multipart} is split when the message is parsed, and
C{upstream} is L{lhttp.upstream.filter.UpstreamFilter}.)
"""

from lhttp.acks import ACK_HEADER, KEY_HEADER, publishOptions
from lhttp.errors import BadHeader
from lhttp.history.wire import recoveryPlan
from lhttp.processor import HeaderFilter


class SubscribeFilter(HeaderFilter):
    """
    C{subscribe: a b}: the connection receives what is published to each;
    with C{since} (and C{epoch}), a history channel is recovered first
    (L{lhttp.history}).
    """

    headers = ("subscribe",)

    def beforeRequest(self, connection, message):
        value = message.getHeader("subscribe")
        if value is not None:
            names = connection.checkChannels(value)
            recoveryPlan(names, message.getHeader("since"), message.getHeader("epoch"))

    def afterRequest(self, connection, message):
        value = message.getHeader("subscribe")
        if value is not None:
            # A Deferred here holds this connection's next messages until
            # the subscription reaches the whole cluster (and, with since,
            # until the history is written).
            return connection.subscribe(
                value, message.getHeader("since"), message.getHeader("epoch")
            )


class PublishFilter(HeaderFilter):
    """
    C{publish: a b}: the message, as the processor left it, goes to every
    subscriber of each channel. With C{publish-ack: <id>} the publisher is
    answered C{LHTTP/1.0 ack} once it is confirmed; with
    C{idempotency-key: <key>} a repeat is stored and delivered once
    (L{lhttp.acks}).
    """

    headers = ("publish",)

    def beforeRequest(self, connection, message):
        value = message.getHeader("publish")
        getHeader = message.getHeader
        if getHeader(ACK_HEADER) is not None or getHeader(KEY_HEADER) is not None:
            # Rare: checked only when asked for.
            publishOptions(message)
            if value is None:
                name = ACK_HEADER if getHeader(ACK_HEADER) is not None else KEY_HEADER
                raise BadHeader(f"'{name}' is for a publish; this message has no 'publish' header")
        if value is not None:
            connection.checkPublishChannels(value, message)

    def afterRequest(self, connection, message):
        value = message.getHeader("publish")
        if value is not None:
            connection.relay(value)


class UnsubscribeFilter(HeaderFilter):
    """
    C{unsubscribe: a b}: stop receiving from each.
    """

    headers = ("unsubscribe",)

    def beforeRequest(self, connection, message):
        value = message.getHeader("unsubscribe")
        if value is not None:
            connection.checkChannels(value)

    def afterRequest(self, connection, message):
        value = message.getHeader("unsubscribe")
        if value is not None:
            connection.unsubscribe(value)


def standardFilters():
    """
    @return: the built-in pub/sub filters, in the order SPEC section 2
        gives.
    """
    return [SubscribeFilter(), PublishFilter(), UnsubscribeFilter()]
