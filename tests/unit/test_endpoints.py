from __future__ import annotations

import pytest

from pymager_tx.process.endpoints import listens_only_locally


@pytest.mark.parametrize(
    ("description", "local"),
    [
        ("tcp:8000:interface=127.0.0.1", True),
        ("tcp:port=8000:interface=127.0.0.2", True),
        ("tcp:8000:127.0.0.1", True),
        ("tcp6:8000:interface=\\:\\:1", True),
        ("tcp:8000:interface=localhost", True),
        ("unix:/run/pymager/http.sock", True),
        ("tcp:8000", False),
        ("tcp:8000:interface=0.0.0.0", False),
        ("tcp6:8000:interface=\\:\\:", False),
        ("tcp:8000:interface=192.168.1.10", False),
        ("tcp:8000:interface=example.com", False),
        ("systemd:domain=INET:index=0", False),
    ],
)
def test_listens_only_locally(description: str, local: bool) -> None:
    assert listens_only_locally(description) is local
