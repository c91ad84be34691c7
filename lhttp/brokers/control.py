"""
Server-side control across a cluster: the node that takes a command
(C{POST /api/disconnect}, C{POST /api/unsubscribe}) applies it to its own
connections and publishes it on the control subject; every other node
applies it to its own. Each node applies it once: the NATS connection is
made with C{no_echo}, so the publisher does not get it back (and a node
ignores a command that names it as the sender all the same).

The subject is C{<prefix>_lhttp.control} (C{_lhttp.control} without
C{--nats-prefix}; C{app_lhttp.control} with C{--nats-prefix app}, outside
the C{app.} subjects channels map to). The payload is a JSON object::

    {"op": "disconnect", "user": "alice", "reconnect": false, "from": "<node id>"}
    {"op": "unsubscribe", "user": "alice", "channel": "room.1", "from": "<node id>"}

published with the C{Lhttp-Node: control} NATS header. A message on the
subject without that header (an original Go node relaying a client's
publish to a channel of that name, say) is ignored and counted: NATS
headers are something only this project's nodes set on what they publish.
"""

import json
import uuid

from twisted.internet.defer import fail
from twisted.logger import Logger
from zope.interface import implementer

from lhttp.brokers.connection import deferred
from lhttp.errors import BrokerUnavailable
from lhttp.interfaces import IControl
from lhttp.word import NATS_HEADER

CONTROL = "control"
SUBJECT = "_lhttp.control"


def controlSubject(prefix=""):
    """
    @param prefix: the node's C{--nats-prefix}, or C{""}.
    @return: the cluster's control subject, C{<prefix>_lhttp.control}.
    """
    return prefix + SUBJECT


@implementer(IControl)
class NATSControl:
    """
    @ivar subject: the control subject.
    @ivar node: this node's id in the commands it sends.
    @ivar received: commands applied from other nodes.
    @ivar forged: messages on the subject ignored (no C{Lhttp-Node}
        header, or not a command).
    """

    log = Logger()
    cluster = True

    def __init__(self, local, connection, reactor, prefix="", flushTimeout=3):
        """
        @param local: the node's L{lhttp.auth.control.LocalControl}.
        @param connection: the node's
            L{lhttp.brokers.connection.NATSConnection} (the broker's).
        @param prefix: the node's C{--nats-prefix}.
        @param flushTimeout: seconds NATS has to confirm a command.
        """
        self._local = local
        self._connection = connection
        self._reactor = reactor
        self._flushTimeout = flushTimeout
        self.subject = controlSubject(prefix)
        self.node = uuid.uuid4().hex
        self._client = None
        self._subscribed = False
        self.received = 0
        self.forged = 0
        self._lastForgedNotice = None
        connection.watch("control", ready=lambda: self.ready, onConnected=self._onConnected)

    @property
    def ready(self):
        client = self._client
        return self._subscribed and client is not None and client.is_connected

    def _onConnected(self, client):
        # nats-py restores a client's subscriptions when it reconnects; a
        # new client needs its own.
        if client is self._client:
            return
        self._client = client
        self._subscribed = False

        def subscribed(ignored):
            if client is self._client:
                self._subscribed = True

        def failed(failure):
            self.log.warn("Subscribing to the control subject {subject} failed: {error}",
                          subject=self.subject, error=self._connection.redacted(failure.value))

        deferred(self._subscribe(client)).addCallbacks(subscribed, failed)

    async def _subscribe(self, client):
        await client.subscribe(self.subject, cb=self._received)
        await client.flush(self._flushTimeout)

    # IControl

    def disconnect(self, user, reconnect=False):
        command = {"op": "disconnect", "user": user, "reconnect": bool(reconnect)}
        return self._issue(command, lambda: self._local.disconnectHere(user, reconnect))

    def unsubscribe(self, user, channel):
        command = {"op": "unsubscribe", "user": user, "channel": channel}
        return self._issue(command, lambda: self._local.unsubscribeHere(user, channel))

    def _issue(self, command, applyHere):
        """
        Apply a command here and send it to the other nodes.

        @return: a L{Deferred} firing with what C{applyHere} returned once
            NATS confirmed the command (a PING/PONG after it).
        """
        if not self.ready:
            return fail(BrokerUnavailable(
                "not connected to NATS: nothing was done on any node; send it again"
            ))
        client = self._client
        payload = json.dumps({**command, "from": self.node}).encode("utf-8")
        count = applyHere()

        def unconfirmed(failure):
            raise BrokerUnavailable(
                f"done on this node ({count} connection(s)), but NATS did not confirm it "
                f"reached the other nodes ({self._connection.redacted(failure.value)}); send "
                "it again (a command does no harm twice)"
            )

        return deferred(self._send(client, payload)).addCallbacks(lambda ignored: count,
                                                                  unconfirmed)

    async def _send(self, client, payload):
        await client.publish(self.subject, payload, headers={NATS_HEADER: CONTROL})
        await client.flush(self._flushTimeout)

    # From the other nodes

    async def _received(self, message):
        headers = message.headers
        if not headers or headers.get(NATS_HEADER) != CONTROL:
            self._ignored("no Lhttp-Node: control NATS header")
            return
        try:
            command = json.loads(message.data)
            op = command["op"]
            user = command["user"]
            sender = command.get("from")
            if not isinstance(user, str) or not user:
                raise ValueError("no user")
        except (ValueError, KeyError, TypeError) as e:
            self._ignored(f"not a command ({e})")
            return
        if sender == self.node:
            return
        if op == "disconnect":
            self._local.disconnectHere(user, command.get("reconnect") is True)
        elif op == "unsubscribe" and isinstance(command.get("channel"), str):
            self._local.unsubscribeHere(user, command["channel"])
        else:
            self._ignored(f"unknown command {str(op)[:40]!r}")
            return
        self.received += 1

    def _ignored(self, why):
        """
        Count a message on the control subject that is not a node's
        command, and say so in the log at most once a minute.
        """
        self.forged += 1
        now = self._reactor.seconds()
        if self._lastForgedNotice is None or now - self._lastForgedNotice >= 60:
            self._lastForgedNotice = now
            self.log.warn("Ignored a message on the control subject {subject}: {why}; "
                          "{count} so far", subject=self.subject, why=why, count=self.forged)
