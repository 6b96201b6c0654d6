"""The access log: one structured event per request or refusal, with what
the client sent made safe to print."""

from __future__ import annotations

from twisted.logger import Logger

# A module-level Logger: as a class attribute it would take the class's name.
access_log = Logger(namespace="pymager_tx.access")

# Control characters would reach a terminal or log viewer raw (ESC starts
# terminal escape sequences), or forge a line break.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def log_text(value: bytes) -> str:
    """Request bytes as log text: printable ASCII stays, anything else is escaped."""
    return value.decode("ascii", "backslashreplace").translate(_CONTROLS)
