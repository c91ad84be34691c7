"""
Which nodes the cluster has, as this node last heard them: what the admin
page and C{lhttp top} show.

Every node announces itself every heartbeat interval
(L{lhttp.brokers.heartbeat}) with L{Roster.announcement}: who it is and its
figures (L{lhttp.stats.NodeStats.figures}). A node serving the admin page
hears the others' (L{Roster.heard}) and lists those heard within the
timeout (three intervals by default), so a node that dies drops off; it
keeps their rates as they arrive, for the chart. Without NATS the roster
is this node alone.
"""

import math
import os
import socket
import time
import uuid
from collections import deque

from lhttp.stats import RATES, TOP

# An announcement's format; a node ignores those of another.
VERSION = 1


def _finite(value):
    number = float(value)
    if not math.isfinite(number):
        # JSON has no NaN: the page could not read the document.
        raise ValueError("not a finite number")
    return number


def _channels(entries, field, kind):
    return [{"channel": str(entry["channel"]), field: kind(entry[field])}
            for entry in list(entries)[:TOP]]


def _described(value):
    if value is not None and not isinstance(value, dict):
        raise TypeError("not an object")
    return value


def cleaned(announcement):
    """
    Another node's announcement with the types this node's own has, so
    that what the page and C{lhttp top} read is what they expect whoever
    published on the subject.

    @raise ValueError: (or L{KeyError}, L{TypeError}) it is not an
        announcement of this version.
    """
    if announcement["v"] != VERSION:
        raise ValueError("another version")
    node = announcement["node"]
    if not isinstance(node, str) or not node:
        raise ValueError("no node id")
    recent = announcement["recent"]
    return {
        "v": VERSION,
        "node": node[:64],
        "name": str(announcement.get("name") or node)[:200],
        "listen": [str(endpoint)[:200] for endpoint in list(announcement.get("listen") or ())[:10]],
        "started": _finite(announcement.get("started") or 0),
        "interval": _finite(announcement.get("interval") or 0),
        "ready": announcement["ready"] is True,
        "broker": _described(announcement.get("broker")),
        "presence": _described(announcement.get("presence")),
        "connections": int(announcement["connections"]),
        "subscriptions": int(announcement["subscriptions"]),
        "channels": int(announcement["channels"]),
        "rates": {name: _finite(announcement["rates"][name]) for name in RATES},
        "totals": {name: int((announcement.get("totals") or {}).get(name) or 0) for name in RATES},
        "recent": {"seconds": _finite(recent["seconds"]),
                   "slowConsumerCloses": int(recent["slowConsumerCloses"]),
                   "errors": int(recent["errors"])},
        "topBySubscribers": _channels(announcement.get("topBySubscribers") or (), "subscribers", int),
        "topByRate": _channels(announcement.get("topByRate") or (), "rate", _finite),
    }


class Roster:
    """
    @ivar node: this node's id (new at each start).
    @ivar name: this node's name for people, C{host:pid}.
    @ivar interval: seconds between heartbeats.
    @ivar timeout: seconds after which a silent node is dropped.
    @ivar ignored: announcements heard that were not understood.
    """

    def __init__(self, stats, clock, state, interval=2.0, timeout=None, cluster=False,
                 listen=(), name=None, wallClock=time.time):
        """
        @param stats: the node's L{lhttp.stats.NodeStats}.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @param state: a callable returning C{{"ready", "broker",
            "presence"}}: the node's broker and presence C{describe()}s.
        @param cluster: whether other nodes may be heard (NATS).
        @param listen: the endpoints the node serves clients on.
        @param wallClock: the time of day, for C{started}.
        """
        self._stats = stats
        self._clock = clock
        self._state = state
        self.interval = interval
        self.timeout = timeout if timeout is not None else 3 * interval
        self.cluster = cluster
        self.node = uuid.uuid4().hex[:12]
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._listen = list(listen)
        self._started = round(wallClock(), 3)
        self._wallClock = wallClock
        self._keep = stats.series.maxlen
        # node -> (heard at, announcement, series)
        self._peers = {}
        self.ignored = 0

    def announcement(self):
        """
        @return: what this node says of itself, a JSON-able C{dict}.
        """
        return {
            "v": VERSION,
            "node": self.node,
            "name": self.name,
            "listen": self._listen,
            "started": self._started,
            "interval": self.interval,
            **self._state(),
            **self._stats.figures(),
        }

    def heard(self, announcement):
        """
        Take another node's announcement.

        @return: whether it was understood (else it is counted in
            C{ignored}).
        """
        try:
            announcement = cleaned(announcement)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            self.ignored += 1
            return False
        node = announcement["node"]
        point = [announcement["rates"][name] for name in RATES]
        if node == self.node:
            return True
        now = self._clock.seconds()
        entry = self._peers.get(node)
        series = entry[2] if entry is not None else deque(maxlen=self._keep)
        series.append([round(self._wallClock(), 3)] + point)
        self._peers[node] = (now, announcement, series)
        return True

    def _prune(self):
        now = self._clock.seconds()
        for node, (heard, ignored, ignored2) in list(self._peers.items()):
            if now - heard > self.timeout:
                del self._peers[node]

    def nodes(self):
        """
        @return: this node's announcement and those of the nodes heard
            within the timeout, each with C{age} (seconds since heard),
            C{self} and C{series}; this node first, then by name.
        """
        self._prune()
        now = self._clock.seconds()
        here = {**self.announcement(), "age": 0.0, "self": True,
                "series": self._wallSeries(self._stats.series)}
        others = [
            {**announcement, "age": round(now - heard, 2), "self": False, "series": list(series)}
            for heard, announcement, series in self._peers.values()
        ]
        others.sort(key=lambda node: (str(node.get("name")), node["node"]))
        return [here] + others

    def _wallSeries(self, series):
        # The series is on the reactor's clock; the page wants times of day.
        offset = self._wallClock() - self._clock.seconds()
        return [[round(point[0] + offset, 3)] + point[1:] for point in series]

    def document(self):
        """
        @return: the JSON endpoint's document (docs/operations.rst).
        """
        nodes = self.nodes()
        totals = {"nodes": len(nodes)}
        for name in ("connections", "subscriptions", "channels"):
            totals[name] = sum(int(node.get(name) or 0) for node in nodes)
        totals["rates"] = {
            name: round(sum(float(node.get("rates", {}).get(name) or 0) for node in nodes), 2)
            for name in RATES
        }
        for name in ("slowConsumerCloses", "errors"):
            totals[name] = sum(int(node.get("recent", {}).get(name) or 0) for node in nodes)
        return {
            "v": VERSION,
            "node": self.node,
            "cluster": self.cluster,
            "interval": self.interval,
            "timeout": self.timeout,
            "time": round(self._wallClock(), 3),
            "totals": totals,
            "nodes": nodes,
        }
