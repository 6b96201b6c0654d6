"""The access log: one structured event per request or refusal, with what
the client sent made safe to print."""

from __future__ import annotations

import re

from twisted.logger import Logger

# A module-level Logger: as a class attribute it would take the class's name.
access_log = Logger(namespace="pymager_tx.access")

# Control characters would reach a terminal or log viewer raw (ESC starts
# terminal escape sequences), or forge a line break.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
# Nearly every value is printable ASCII already: one scan says so, where
# the escaping below costs three to five times as much on every request.
_NEEDS_ESCAPING = re.compile(rb"[^\x20-\x7e]")


def log_text(value: bytes) -> str:
    """Request bytes as log text: printable ASCII stays, anything else is escaped."""
    if _NEEDS_ESCAPING.search(value) is None:
        return value.decode("ascii")
    return value.decode("ascii", "backslashreplace").translate(_CONTROLS)


def log_refusal(
    client: str,
    method: bytes,
    uri: bytes,
    status: int,
    length: int,
    agent: bytes | None,
    duration_ms: float,
    detail: str,
) -> None:
    """One access-log line for a request refused before any route saw it
    (401, 408, 413, 503 at the door, malformed HTTP): the fields of every
    other request's line, and why."""
    access_log.info(
        '{client} "{method} {uri}" {status} {length} "{agent}" {duration_ms:.1f}ms refused: {detail}',
        client=client,
        method=log_text(method),
        uri=log_text(uri),
        status=status,
        length=length,
        agent=log_text(agent or b"-"),
        duration_ms=duration_ms,
        detail=detail,
        refused=True,
    )
