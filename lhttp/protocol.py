"""
The WebSocket glue: an Autobahn server protocol that only adapts. Bytes in
go to the dispatcher; the dispatcher writes back through the connection.
"""

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from lhttp.connection import Connection


class LHTTPServerProtocol(WebSocketServerProtocol):
    """
    One client's WebSocket. It is also the subscriber the channel table
    writes prepared frames to.
    """

    connection = None
    _request = None

    def onConnect(self, request):
        self._request = request
        return None

    def onOpen(self):
        server = self.factory.server
        self.connection = Connection(
            server, self, self.transport.getPeer(), self._request
        )
        server.dispatcher.connectionOpened(self.connection)

    def onMessage(self, payload, isBinary):
        self.factory.server.dispatcher.messageReceived(self.connection, payload, isBinary)

    def onClose(self, wasClean, code, reason):
        connection, self.connection = self.connection, None
        if connection is not None:
            self.factory.server.dispatcher.connectionClosed(connection)


class LHTTPServerFactory(WebSocketServerFactory):
    """
    Builds L{LHTTPServerProtocol}s for an L{lhttp.server.LHTTPServer}.
    """

    protocol = LHTTPServerProtocol

    def __init__(self, server, reactor=None):
        WebSocketServerFactory.__init__(self, reactor=reactor)
        self.server = server
        self.setProtocolOptions(
            maxMessagePayloadSize=server.maxMessageSize,
            maxFramePayloadSize=server.maxMessageSize,
            # Protocol errors close with their RFC 6455 code (1009, 1007)
            # rather than a bare TCP drop the client cannot explain.
            failByDrop=False,
        )
