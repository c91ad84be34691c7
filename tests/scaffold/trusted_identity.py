"""
TEST SCAFFOLDING, never shipped (it is under tests/, not lhttp/): a
header filter that believes whoever it is told a connection is.

Until the node's own authentication (lhttp.auth.jwt, lhttp.auth.filter)
sets C{connection.identity} from a verified credential, the real-node
permission tests (tests/test_permissions_node.py) start nodes with
C{--filter trusted_identity.TrustedIdentity} and say who each client is:

    LHTTP/1.0 connect
    test-user:alice
    test-caps:[{"channels": ["room.*"], "allow": ["sub"]}]

and get C{LHTTP/1.0 connect} with C{status:200} and C{user:alice} back,
like the design's connect reply. Anything it is told is trusted: it exists
to attack the permissions, not authentication.
"""

import json

from lhttp import HeaderFilter
from lhttp.auth.identity import Identity
from lhttp.word import nodeMessage


class TrustedIdentity(HeaderFilter):
    headers = ("test-user",)

    def beforeRequest(self, connection, message):
        if message.command != "connect":
            return
        user = message.getHeader("test-user")
        caps = message.getHeader("test-caps")
        if caps is not None:
            caps = tuple(
                (tuple(cap["channels"]), frozenset(cap["allow"])) for cap in json.loads(caps)
            )
        connection.identity = Identity(user, None, caps, "test")
        connection.data["user"] = user
        connection.sendMessage(nodeMessage("connect", [("status", "200"), ("user", user)]))
