"""The Vary header, built up by whatever makes an answer depend on a
request header (negotiated formats: Accept; CORS: Origin)."""

from __future__ import annotations

from twisted.web.iweb import IRequest


def add_vary(request: IRequest, field: str) -> None:
    """Name field in the answer's Vary header, once, beside any named."""
    present = request.responseHeaders.getRawHeaders(b"vary", [])
    names = [name.strip() for value in present for name in value.decode("latin-1").split(",") if name.strip()]
    if field.lower() not in (name.lower() for name in names):
        names.append(field)
    request.setHeader(b"Vary", ", ".join(names).encode("latin-1"))
