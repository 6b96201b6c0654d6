"""
Whether a Twisted endpoint description listens only where the network cannot
reach: a loopback address or a UNIX socket.
"""

from __future__ import annotations

import ipaddress
import re

# Positional arguments after the port, per endpoint type (Twisted's order).
_TCP_LIKE = {"tcp": 1, "tcp6": 1, "ssl": 1}
_LOCAL_NAMES = {"localhost", "ip6-localhost"}


def _split(description: str) -> list[str]:
    """Split on colons not escaped by a backslash, and unescape."""
    parts = re.split(r"(?<!\\):", description)
    return [re.sub(r"\\(.)", r"\1", part) for part in parts]


def listens_only_locally(description: str) -> bool:
    parts = _split(description.strip())
    kind = parts[0].lower()
    if kind in ("unix",):
        return True
    if kind not in _TCP_LIKE:
        # systemd sockets and other endpoints: assume the network reaches them.
        return False
    positional = [part for part in parts[1:] if "=" not in part]
    keywords = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
    interface = keywords.get("interface")
    if interface is None and len(positional) > _TCP_LIKE[kind]:
        interface = positional[_TCP_LIKE[kind]]
    if not interface:
        return False  # every interface
    if interface.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False
