"""
Structured logs as JSON lines, for log collectors: give twistd this module's
observer factory::

    twistd --logger lhttp.logs.jsonObserver -n lhttp --port 8081

Each event becomes one line on standard output::

    {"time": "2025-01-01T12:00:00.000000+00:00", "level": "info",
     "namespace": "lhttp.service", "text": "lhttp node listening on ...",
     "listen": ["tcp:8081"], "broker": {"kind": "embedded", "ready": true}}

C{time} (UTC, ISO 8601), C{level}, C{namespace} and C{text} (the formatted
message) are always there; the event's own fields follow (values that are
not JSON become their C{repr}); C{traceback} when a failure was logged.
"""

import json
import sys
from datetime import datetime, timezone

from twisted.logger import FileLogObserver, formatEvent

# Keys of legacy (twisted.python.log) events that the fixed keys cover.
_LEGACY = frozenset({"message", "isError", "time", "format", "why", "failure", "log_legacy"})


def _jsonable(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def eventAsJSONLine(event):
    """
    @param event: a L{twisted.logger} event.
    @return: one JSON object and a newline (L{str}).
    """
    level = event.get("log_level")
    record = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(),
        "level": level.name if level is not None else "info",
        "namespace": event.get("log_namespace", ""),
        "text": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY or key in record:
            continue
        record[key] = _jsonable(value)
    return json.dumps(record, ensure_ascii=False) + "\n"


def jsonObserver(outFile=None):
    """
    The observer factory for C{twistd --logger}.

    @param outFile: where to write (default: standard output, so run
        twistd with C{-n}, as under systemd or in a container).
    """
    return FileLogObserver(outFile if outFile is not None else sys.stdout, eventAsJSONLine)
