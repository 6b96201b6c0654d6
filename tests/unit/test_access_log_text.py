"""What a client sent, as the access log prints it."""

from __future__ import annotations

import pytest

from pymager_tx.http.access_log import log_text


@pytest.mark.parametrize(
    ("sent", "logged"),
    [
        (b"/derived/a-100x100.jpg?x=1", "/derived/a-100x100.jpg?x=1"),
        (b"", ""),
        (b" ~", " ~"),  # the ends of printable ASCII stay
        (b"a\x1b[2Jb", "a\\x1b[2Jb"),
        (b"line\r\nforged", "line\\x0d\\x0aforged"),
        (b"\x7f\x00", "\\x7f\\x00"),
        (b"caf\xc3\xa9", "caf\\xc3\\xa9"),  # not ASCII: escaped, never decoded as UTF-8
        (b"\xff", "\\xff"),
    ],
)
def test_printable_ascii_stays_and_everything_else_is_escaped(sent: bytes, logged: str) -> None:
    assert log_text(sent) == logged
