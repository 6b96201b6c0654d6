"""
The log as JSON lines ([server] log_format = "json"), for journald and log
pipelines: every event with its structured fields (those the access log and
the service give it, Twisted's log_* among them), plus log_text (the
rendered message, with the traceback of a failure), log_level_name ("info") and log_timestamp (ISO 8601,
UTC), named in Twisted's own log_ namespace so that they never hide a field
of the event.  One event a line, nothing between them.

twistd starts logging before any service runs; it takes an observer
factory (its --logger option), which the plugin's options name when the
settings ask for JSON, after saying where the log goes (destination).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, eventAsJSON, formatEvent
from twisted.python.logfile import LogFile

# Where the JSON lines go: set by the plugin's options, read by json_observer().
_destination: list[str | None] = [None]
FACTORY = "pymager_tx.process.logs.json_observer"


def destination(log_file: str | None) -> str:
    """Send the JSON lines to log_file (None or "-": standard output); the
    qualified name of the factory that twistd is to call."""
    _destination[0] = log_file
    return FACTORY


def json_observer() -> ILogObserver:
    """An observer writing JSON lines where destination() said."""
    log_file = _destination[0]
    out: IO[Any] = sys.stdout if log_file in (None, "-") else LogFile.fromFullPath(log_file)
    return json_lines(out)


def json_lines(out: IO[Any]) -> ILogObserver:
    return FileLogObserver(out, _line)


def _line(event: LogEvent) -> str:
    level = event.get("log_level")
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}"
    when = event.get("log_time")
    extra = {
        "log_text": text,
        "log_level_name": getattr(level, "name", None),
        "log_timestamp": None if when is None else datetime.fromtimestamp(when, UTC).isoformat(),
    }
    return eventAsJSON({**event, **extra}) + "\n"
