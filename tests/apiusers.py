"""
TEST SCAFFOLDING ONLY, for the /api tests (test_api_cluster.py): a header
filter that takes the user from the handshake's query string
(C{ws://node/?user=alice}), with no proof at all, and does what real
authentication (lhttp.auth) does with a user: sets C{connection.identity}
and C{data["user"]} and registers the connection in the node's C{Users}.

Never use this outside tests: anyone could claim to be anyone. Given to
real nodes with C{--filter apiusers.QueryUserFilter} and the tests folder
on the Python path.
"""

from lhttp.auth.identity import Identity
from lhttp.processor import HeaderFilter


def _serverOf(connection):
    # The node is not handed to --filter filters; its WebSocket factory's
    # open is the node's own bound method. Test-only reach-through.
    return connection._writer.factory.open.__self__


class QueryUserFilter(HeaderFilter):
    def onOpen(self, connection):
        users = connection.handshake.params.get("user") if connection.handshake else None
        if not users:
            return
        user = users[0]
        connection.identity = Identity(user, method="test")
        connection.data["user"] = user
        _serverOf(connection).users.add(user, connection)

    def onClose(self, connection):
        user = connection.identity.user
        if user is not None:
            _serverOf(connection).users.remove(user, connection)
