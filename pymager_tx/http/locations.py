"""
Absolute URLs of the service's own resources (Location, links in JSON).
"""

from __future__ import annotations

import re

from twisted.web.iweb import IRequest

from pymager_tx.http.answers import header_text

_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def absolute_url(request: IRequest, public_url: str, path: str) -> str:
    """path under public_url ([server] public_url), or else under the
    request's scheme and Host (the address it came to, if Host is odd)."""
    if public_url:
        return public_url.rstrip("/") + path
    scheme = "https" if request.isSecure() else "http"
    host = header_text(request, b"host")
    if host is None or not _HOST.fullmatch(host):
        address = request.getHost()
        name = getattr(address, "host", "localhost")
        host = f"[{name}]" if ":" in name else name
        host += f":{getattr(address, 'port', 80)}"
    return f"{scheme}://{host}{path}"
