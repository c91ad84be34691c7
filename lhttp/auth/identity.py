"""
Who a connection is: its L{Identity}, set once it authenticated, and the
node's L{Users} registry (a user's open connections on this node, for
C{/api/disconnect} and C{/api/unsubscribe}).
"""

import attr


@attr.s(frozen=True, slots=True)
class Identity:
    """
    What a connection proved.

    @ivar user: the user id (the JWT's C{sub}, the connect proxy's
        C{user}), or L{None} for an anonymous connection.
    @ivar expires: when the credential expires, in Unix seconds, or
        L{None} if it does not.
    @ivar caps: the connection's capabilities (L{tuple} of
        C{(patterns, actions)}) from its credential; L{None} when it has
        none (the namespace rules decide).
    @ivar method: how it authenticated: C{"jwt"}, C{"proxy"}, or L{None}.
    """

    user = attr.ib(default=None)
    expires = attr.ib(default=None)
    caps = attr.ib(default=None)
    method = attr.ib(default=None)

    @property
    def authenticated(self):
        return self.user is not None


ANONYMOUS = Identity()


class Users:
    """
    The open connections of each authenticated user on this node.
    """

    def __init__(self):
        self._byUser = {}

    def add(self, user, connection):
        self._byUser.setdefault(user, set()).add(connection)

    def remove(self, user, connection):
        connections = self._byUser.get(user)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self._byUser[user]

    def connectionsOf(self, user):
        """
        @return: a new L{list} of C{user}'s open connections here.
        """
        return list(self._byUser.get(user, ()))

    def __len__(self):
        return len(self._byUser)
