"""multipart/form-data bodies built by hand: StubTreq cannot send files=."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from uuid import uuid4


def form(
    parts: Mapping[str, bytes] | Iterable[tuple[str, bytes]], filenames: bool = True
) -> tuple[str, bytes]:
    """(Content-Type, body) of a form whose parts are file uploads."""
    boundary = uuid4().hex
    items = parts.items() if isinstance(parts, Mapping) else parts
    body = b""
    for name, data in items:
        disposition = f'form-data; name="{name}"'
        if filenames:
            disposition += f'; filename="{name}.bin"'
        body += (
            (
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body
