"""
Server-side control (C{/api}, docs/operations.rst): what the node does to
one user's connections here, when a trusted backend asks.

L{LocalControl} acts on this node's connections, found in its
L{lhttp.auth.identity.Users} registry; on a node of its own it is the
node's L{lhttp.interfaces.IControl}. In a cluster,
L{lhttp.brokers.control.NATSControl} tells the other nodes and has each
apply the command with its own L{LocalControl}.
"""

from twisted.internet.defer import succeed
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.interfaces import IControl
from lhttp.word import nodeMessage

# WebSocket close codes (docs/protocol.rst): do not reconnect; reconnect.
DISCONNECTED = 4403
RECONNECT = 4000
DISCONNECTED_REASON = "disconnected by the server"
RECONNECT_REASON = "reconnect"
UNSUBSCRIBED_REASON = "unsubscribed by the server"


def unsubscribedMessage(channel):
    """
    What a connection is told when the server took a channel from it::

        LHTTP/1.0 unsubscribed
        lhttp-node:reply
        channel:room.1
        reason:unsubscribed by the server

    @rtype: L{lhttp.codec.Message}
    """
    return nodeMessage("unsubscribed", [("channel", channel), ("reason", UNSUBSCRIBED_REASON)])


@implementer(IControl)
class LocalControl:
    """
    Commands on this node's connections only.
    """

    log = Logger()
    cluster = False

    def __init__(self, users):
        """
        @param users: the node's L{lhttp.auth.identity.Users}.
        """
        self._users = users

    def disconnectHere(self, user, reconnect=False):
        """
        Close C{user}'s connections on this node.

        @return: how many were closed.
        """
        if reconnect:
            code, reason = RECONNECT, RECONNECT_REASON
        else:
            code, reason = DISCONNECTED, DISCONNECTED_REASON
        closed = 0
        for connection in self._users.connectionsOf(user):
            if connection.connected:
                connection.close(code, reason)
                closed += 1
        if closed:
            self.log.info("Closed {count} connection(s) of {user!r} with {code} (server-side "
                          "control)", count=closed, user=user, code=code)
        return closed

    def unsubscribeHere(self, user, channel):
        """
        Have C{user}'s connections on this node leave C{channel}, as if
        each had sent C{unsubscribe}, and tell each that did.

        @return: how many left it.
        """
        left = 0
        for connection in self._users.connectionsOf(user):
            if connection.connected and connection.isSubscribed(channel):
                connection.unsubscribe([channel])
                connection.sendMessage(unsubscribedMessage(channel))
                left += 1
        if left:
            self.log.info("Unsubscribed {count} connection(s) of {user!r} from {channel!r} "
                          "(server-side control)", count=left, user=user, channel=channel)
        return left

    def disconnect(self, user, reconnect=False):
        return succeed(self.disconnectHere(user, reconnect))

    def unsubscribe(self, user, channel):
        return succeed(self.unsubscribeHere(user, channel))
