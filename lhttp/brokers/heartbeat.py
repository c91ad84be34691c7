"""
Nodes announcing themselves to each other, for the admin page
(L{lhttp.roster}).

Every node of a cluster publishes L{lhttp.roster.Roster.announcement}, a
JSON object, on C{<prefix>_lhttp.nodes} every heartbeat interval, with
the C{Lhttp-Node: node} NATS header, on the node's one NATS connection. A
node serving the admin page (C{--admin-listen}) subscribes to it; the
others only publish (one small message per interval). A message on the
subject without that header is ignored and counted, as on the control
subject (L{lhttp.brokers.control}), and the broker never delivers a
node's announcement to a channel of that name.
"""

import json

from twisted.logger import Logger

from lhttp.brokers.connection import deferred
from lhttp.word import NATS_HEADER

HEARTBEAT = "node"
SUBJECT = "_lhttp.nodes"


def heartbeatSubject(prefix=""):
    """
    @param prefix: the node's C{--nats-prefix}, or C{""}.
    @return: C{<prefix>_lhttp.nodes}.
    """
    return prefix + SUBJECT


class NATSHeartbeat:
    """
    @ivar subject: the heartbeat subject.
    @ivar sent: announcements published.
    @ivar forged: messages on the subject ignored (no C{Lhttp-Node: node}
        header, or not JSON).
    """

    log = Logger()

    def __init__(self, connection, roster, prefix="", listen=False):
        """
        @param connection: the node's
            L{lhttp.brokers.connection.NATSConnection}.
        @param roster: the node's L{lhttp.roster.Roster}.
        @param listen: hear the other nodes (for the admin page).
        """
        self._connection = connection
        self._roster = roster
        self._listen = listen
        self.subject = heartbeatSubject(prefix)
        self._client = None
        self._failing = False
        self.sent = 0
        self.forged = 0
        connection.watch("heartbeat", onConnected=self._onConnected)

    def _onConnected(self, client):
        if client is self._client:
            return
        self._client = client
        if self._listen:
            deferred(client.subscribe(self.subject, cb=self._received)).addErrback(
                lambda failure: self.log.warn(
                    "Subscribing to the heartbeat subject {subject} failed: {error}",
                    subject=self.subject, error=self._connection.redacted(failure.value)))

    def announce(self):
        """
        Publish this node's announcement, if connected (a heartbeat missed
        while NATS is away is just missed).
        """
        client = self._client
        if client is None or not client.is_connected:
            return
        payload = json.dumps(self._roster.announcement(), separators=(",", ":")).encode("utf-8")
        deferred(client.publish(self.subject, payload, headers={NATS_HEADER: HEARTBEAT})
                 ).addCallbacks(self._sent, self._failed)

    def _sent(self, ignored):
        self.sent += 1
        self._failing = False

    def _failed(self, failure):
        if not self._failing:
            self._failing = True
            self.log.warn("Announcing this node on {subject} failed: {error}",
                          subject=self.subject, error=self._connection.redacted(failure.value))

    async def _received(self, message):
        headers = message.headers
        if not headers or headers.get(NATS_HEADER) != HEARTBEAT:
            self.forged += 1
            return
        try:
            announcement = json.loads(message.data)
        except ValueError:
            self.forged += 1
            return
        if not isinstance(announcement, dict) or not self._roster.heard(announcement):
            self.forged += 1
