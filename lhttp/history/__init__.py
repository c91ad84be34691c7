"""
Message history per channel, and recovery after a reconnect.

A channel matching a C{--history} pattern keeps its recent messages. Each
message published on it gets a per-channel, increasing I{offset} within a
stream I{epoch}; subscribers receive it with C{channel}, C{offset} and
C{epoch} headers added after the start line (L{stamp}), so a client always
knows its position::

    LHTTP/1.0 chat
    channel:room.42
    offset:17
    epoch:m3x9a1
    publish:room.42
    ...

A client that comes back subscribes with C{since} (and C{epoch}): it gets
a C{recovery} reply saying whether nothing was lost
(C{recovered:true|false}), then every retained message after that offset,
in order, then live messages, with no gap and no duplicate at the seam.

Engines (L{IHistory}): L{MemoryHistory} on the embedded broker (bounded,
in memory; a restart is a new epoch), L{lhttp.history.jetstream} on NATS.

The parts, one module each:

  - L{lhttp.history.policy}: the C{--history} grammar and L{HistoryPolicy};
  - L{lhttp.history.recovery}: what an engine answers (L{Recovery}), and
    the seam between a recovery and the live messages (L{LiveHold});
  - L{lhttp.history.memory}: L{MemoryHistory};
  - L{lhttp.history.jetstream}: history in a JetStream stream;
  - L{lhttp.history.wire}: positions, C{since}/C{epoch}, the replies;
  - L{lhttp.history.processor}: the C{history} request.
"""

from lhttp.history.memory import MemoryHistory
from lhttp.history.policy import HistoryPolicy, Retention, parseDuration, parseRetention
from lhttp.history.processor import HistoryProcessor
from lhttp.history.recovery import LiveHold, Recovery, newEpoch
from lhttp.history.wire import (
    MAX_OFFSET,
    POSITION_HEADERS,
    epochOf,
    historyReply,
    offsetOf,
    parseSince,
    recoveryPlan,
    recoveryReply,
    stamp,
)
from lhttp.interfaces import IHistory
from lhttp.patterns import checkPattern, matches

__all__ = [
    "HistoryPolicy", "HistoryProcessor", "IHistory", "LiveHold", "MAX_OFFSET", "MemoryHistory",
    "POSITION_HEADERS", "Recovery", "Retention", "checkPattern", "epochOf",
    "historyReply", "matches", "newEpoch", "offsetOf", "parseDuration",
    "parseRetention", "parseSince", "recoveryPlan", "recoveryReply", "stamp",
]
