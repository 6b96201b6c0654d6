"""Start-up refuses the deployments SQLite cannot serve: its file on a
network filesystem, or its data directory shared with another machine."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import LogEvent, formatEvent
from twisted.python.failure import Failure

from pymager_tx.adapters.sql.schema_version import drop_txn
from pymager_tx.config import load_settings
from pymager_tx.core.owner_names import new_owner_name
from pymager_tx.process.deployment import MOUNTINFO, UnsafeDeployment, host_of
from pymager_tx.process.server import PymagerService
from tests.integration.test_schema_at_startup import Store
from tests.integration.test_twistd import spawn

ELSEWHERE = "web-2.example.com-4242-0123456789ab"
HERE = f"{host_of(new_owner_name())}-4242-0123456789ab"


@contextmanager
def running_process(data_directory: Path, owner: str) -> Iterator[Path]:
    """A live process registered as owner: its lock file, flocked as a
    process of owner's would hold it."""
    processes = data_directory / "processes"
    processes.mkdir(parents=True, exist_ok=True)
    path = processes / f"{owner}.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        os.close(descriptor)


async def start(data_directory: Path, database_url: str = "", mountinfo: Path = MOUNTINFO) -> Failure | None:
    """Start the service and stop it; why it failed to start, if it did,
    after checking that twistd's exit hook was told the same."""
    failures: list[Failure] = []
    overrides: dict[str, dict[str, Any]] = {
        "server": {"listen": "tcp:0:interface=127.0.0.1"},
        "storage": {"data_directory": str(data_directory)},
        "database": {"url": database_url},
    }
    service = PymagerService(
        load_settings(None, overrides), reactor, on_start_failure=failures.append, mountinfo=mountinfo
    )
    service.startService()
    try:
        await service.when_listening()
    except Exception:
        assert len(failures) == 1
        return failures[0]
    finally:
        await service.stopService()
    assert failures == []
    return None


def start_failures(events: list[LogEvent]) -> list[str]:
    return [formatEvent(event) for event in events if "could not start" in event.get("log_format", "")]


@pytest_twisted.ensureDeferred
async def test_sqlite_on_a_network_filesystem_is_refused_before_anything_is_written(
    tmp_path: Path, log_events: list[LogEvent]
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"62 27 0:53 / {share.resolve()} rw,relatime shared:31 - nfs4 filer:/export rw,vers=4.2\n"
    )

    failure = await start(share / "pymager-data", mountinfo=mountinfo)

    assert failure is not None and failure.check(UnsafeDeployment)
    assert list(share.iterdir()) == []  # not even the data directory
    [message] = start_failures(log_events)
    assert "\n" not in message
    assert message.startswith("pymager-tx could not start: the SQLite database ")
    assert f"is on a network filesystem (nfs4 at {share.resolve()})" in message
    assert "PostgreSQL" in message


@pytest_twisted.ensureDeferred
async def test_sqlite_on_a_local_filesystem_starts(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n")
    assert await start(tmp_path / "data", mountinfo=mountinfo) is None


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    store = Store(tmp_path / "data", database_url)
    store(drop_txn)
    yield store
    store.close()


@pytest_twisted.ensureDeferred
async def test_a_live_process_of_another_machine_is_refused_with_sqlite_only(
    store: Store, log_events: list[LogEvent]
) -> None:
    with running_process(store.data_directory, ELSEWHERE) as theirs:
        failure = await start(store.data_directory, store.url)
        assert theirs.exists()

    if store.url:  # PostgreSQL serves several machines
        assert failure is None
        return
    assert failure is not None and failure.check(UnsafeDeployment)
    [message] = start_failures(log_events)
    assert "processes of other machines (web-2.example.com) are running on the data directory" in message
    assert "use PostgreSQL ([database] url) when several machines share the data directory" in message
    # Refused before the schema was made, and its own registration is gone.
    assert store.revision() is None
    assert [path.name for path in (store.data_directory / "processes").iterdir()] == [theirs.name]


@pytest_twisted.ensureDeferred
async def test_a_live_process_of_this_machine_is_welcome(tmp_path: Path) -> None:
    with running_process(tmp_path / "data", HERE):
        assert await start(tmp_path / "data") is None


@pytest_twisted.ensureDeferred
async def test_a_dead_process_of_another_machine_is_no_obstacle(tmp_path: Path) -> None:
    with running_process(tmp_path / "data", ELSEWHERE) as theirs:
        pass  # its lock is released: that process is gone
    assert await start(tmp_path / "data") is None
    assert not theirs.exists()  # buried at start-up


@pytest_twisted.ensureDeferred
async def test_twistd_exits_with_1_naming_postgresql(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_process(data, ELSEWHERE):
        protocol, process = spawn(tmp_path, "--data-dir", str(data), "--listen", "tcp:0:interface=127.0.0.1")
        try:
            await protocol.listening
        except RuntimeError:
            pass  # ended before listening, as it must
        else:
            process.signalProcess(signal.SIGTERM)
            await protocol.ended
            pytest.fail(f"twistd started beside another machine's process:\n{protocol.output.decode()}")
        assert await protocol.ended == 1
    output = protocol.output
    assert b"could not start: processes of other machines (web-2.example.com)" in output
    assert b"use PostgreSQL" in output
    assert b"Traceback" not in output
