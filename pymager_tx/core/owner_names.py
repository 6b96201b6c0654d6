"""Names of the processes sharing one store, as rows and lock files carry them."""

from __future__ import annotations

import os
import re
import socket
from uuid import uuid4

# What may not appear in a name: it becomes a file name.
UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9.-]+")


def new_owner_name() -> str:
    """host-pid-random: readable in logs and rows, unique across restarts."""
    host = UNSAFE_IN_NAMES.sub("-", socket.gethostname())[:24] or "host"
    return f"{host}-{os.getpid()}-{uuid4().hex[:12]}"
