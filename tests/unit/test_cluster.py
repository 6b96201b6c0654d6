"""[cluster]: how liveness is chosen, what each choice builds, the lease's
rule, and lease liveness beside the flock locks of a shared data directory."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymager_tx.adapters.cluster.owners import Owners
from pymager_tx.adapters.sql.processes_txn import join_txn
from pymager_tx.adapters.sql.removal_feed import RemovalListener
from pymager_tx.adapters.storage.disk_cache import DiskCachedBlobStore
from pymager_tx.adapters.storage.disk_cache_index import CacheBounds
from pymager_tx.adapters.storage.s3 import S3BlobStore
from pymager_tx.config import load_settings
from pymager_tx.core.errors import ConfigError
from pymager_tx.ports import NoRemovalFeed
from pymager_tx.process.wiring import Offloads, build_store, liveness_of
from tests.results import result_of

POSTGRES = "postgresql+psycopg://pymager@127.0.0.1:1/pymager"


class ReactorClock(Clock):
    def callFromThread(self, f: object, *args: object) -> None:
        raise AssertionError("nothing listens in these tests")


@pytest.mark.parametrize(
    ("liveness", "dialect", "chosen"),
    [
        ("auto", "sqlite", "flock"),
        ("auto", "postgresql", "database"),
        ("flock", "postgresql", "flock"),
        ("database", "sqlite", "database"),
    ],
)
def test_liveness_auto_is_flock_on_sqlite_and_database_elsewhere(
    liveness: str, dialect: str, chosen: str
) -> None:
    settings = load_settings(None, {"cluster": {"liveness": liveness}})
    assert liveness_of(settings, dialect) == chosen


def test_database_liveness_builds_a_heartbeat_and_a_fenced_database(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {
            "storage": {"data_directory": str(tmp_path)},
            "cluster": {"liveness": "database", "heartbeat_seconds": 2.0, "lease_seconds": 5.0},
        },
    )
    store = build_store(settings, Offloads.at_once(), timer=ReactorClock())
    assert store.liveness == "database"
    assert store.heartbeat is not None and store.database.lease is store.heartbeat.lease
    assert store.heartbeat.lease.owner == store.peers.me == store.owners.me
    assert store.heartbeat.lease.seconds == 5.0
    assert isinstance(store.removal_feed, NoRemovalFeed)  # SQLite: the counter alone


def test_the_command_line_asks_leases_but_holds_none(tmp_path: Path) -> None:
    settings = load_settings(
        None, {"storage": {"data_directory": str(tmp_path)}, "database": {"url": POSTGRES}}
    )
    store = build_store(settings, Offloads.at_once())
    assert store.liveness == "database"
    assert store.heartbeat is None and store.database.lease is None
    assert isinstance(store.removal_feed, NoRemovalFeed)


def test_a_server_on_postgresql_listens_for_deletions(tmp_path: Path) -> None:
    settings = load_settings(
        None, {"storage": {"data_directory": str(tmp_path)}, "database": {"url": POSTGRES}}
    )
    store = build_store(settings, Offloads.at_once(), timer=ReactorClock())
    assert isinstance(store.removal_feed, RemovalListener)
    assert store.heartbeat is not None


def test_flock_liveness_holds_no_lease(tmp_path: Path) -> None:
    settings = load_settings(None, {"storage": {"data_directory": str(tmp_path)}})
    store = build_store(settings, Offloads.at_once(), timer=ReactorClock())
    assert (store.liveness, store.heartbeat, store.database.lease) == ("flock", None, None)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[cluster]\nlease_seconds = 6.0\n", r"cluster: .*lease_seconds \(6\) must be more than twice"),
        ("[cluster]\nheartbeat_seconds = 10.0\n", r"cluster: .*twice heartbeat_seconds \(10\)"),
        ("[cluster]\nliveness = 'etcd'\n", r"cluster\.liveness"),
        ("[cluster]\nheartbeat_seconds = 0\n", r"cluster\.heartbeat_seconds"),
        ("[cluster]\nlease_seconds = '12'\n", r"cluster\.lease_seconds"),
    ],
)
def test_bad_cluster_settings_are_refused(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "pymager.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named):
        load_settings(path)


def test_a_process_dead_in_this_data_directory_is_dead_before_its_lease_lapses(tmp_path: Path) -> None:
    # A process restarted after kill -9 finishes what its predecessor left at
    # start-up, as with flock, instead of waiting a lease for it.
    settings = load_settings(
        None, {"storage": {"data_directory": str(tmp_path)}, "cluster": {"liveness": "database"}}
    )
    store = build_store(settings, Offloads.at_once())
    database = store.database
    result_of(database.create_schema())
    lease = timedelta(seconds=60)
    live_here = Owners(tmp_path / "processes", "live-here")
    live_here.register()
    (tmp_path / "processes" / "killed-here.lock").touch()  # its lock died with it
    try:
        for name in ("elsewhere", "live-here", "killed-here"):
            result_of(database.transact(join_txn, name, "a-host", lease))
        assert result_of(store.peers.alive("elsewhere")) is True  # no file here: its lease tells
        assert result_of(store.peers.alive("live-here")) is True
        assert result_of(store.peers.alive("killed-here")) is False
        assert result_of(store.peers.alive("never-joined")) is False
        assert result_of(store.peers.alive(None)) is False
        assert result_of(store.peers.alive(store.peers.me)) is True
    finally:
        live_here.release()
        database.engine.dispose()


def test_owners_prove_death_only_for_names_registered_here(tmp_path: Path) -> None:
    owners = Owners(tmp_path, "me")
    owners.register()
    other = Owners(tmp_path, "other")
    other.register()
    (tmp_path / "killed.lock").touch()
    try:
        assert [owners.proven_dead(name) for name in ("me", "other", "killed", "unknown", None)] == [
            False,
            False,
            True,
            False,
            False,
        ]
        assert [owners.is_alive(name) for name in ("me", "other", "killed", "unknown", None)] == [
            True,
            True,
            False,
            False,
            False,
        ]
    finally:
        other.release()
        owners.release()


def test_with_flock_the_sweep_is_the_first_live_process_s_turn(tmp_path: Path) -> None:
    (tmp_path / "a-killed.lock").touch()  # its lock died with it
    b, c = Owners(tmp_path, "b-live"), Owners(tmp_path, "c-live")
    assert b.first_alive() is False  # not registered: never its turn
    b.register()
    c.register()
    try:
        assert (b.first_alive(), c.first_alive()) == (True, False)
        b.release()
        assert c.first_alive() is True
    finally:
        c.release()


def test_the_sweep_turn_is_wired_by_liveness(tmp_path: Path) -> None:
    settings = load_settings(None, {"storage": {"data_directory": str(tmp_path)}})
    serving = build_store(settings, Offloads.at_once(), timer=ReactorClock())
    serving.owners.register()
    try:
        assert result_of(serving.sweep_turn()) is True
    finally:
        serving.owners.release()
    # The command line never sweeps.
    assert result_of(build_store(settings, Offloads.at_once()).sweep_turn()) is False
    leases = load_settings(
        None, {"storage": {"data_directory": str(tmp_path)}, "cluster": {"liveness": "database"}}
    )
    store = build_store(leases, Offloads.at_once(), timer=ReactorClock())
    assert store.heartbeat is not None and store.sweep_turn == store.heartbeat.my_turn
    store.database.engine.dispose()


@pytest.mark.parametrize(
    ("serving", "max_bytes", "cached"),
    [(True, 1024 * 1024, True), (True, 0, False), (False, 1024 * 1024, False)],
)
def test_a_server_on_a_bucket_keeps_copies_on_local_disk(
    tmp_path: Path, serving: bool, max_bytes: int, cached: bool
) -> None:
    settings = load_settings(
        None,
        {
            "storage": {
                "data_directory": str(tmp_path),
                "backend": "s3",
                "s3": {"bucket": "images", "endpoint_url": "http://127.0.0.1:1"},
                "cache": {"max_bytes": max_bytes, "max_files": 7, "max_item_bytes": 5},
            },
        },
    )
    store = build_store(settings, Offloads.at_once(), timer=ReactorClock() if serving else None)
    if not cached:
        assert isinstance(store.blobs, S3BlobStore)
        return
    assert isinstance(store.blobs, DiskCachedBlobStore)
    assert isinstance(store.blobs.bucket, S3BlobStore)
    assert store.blobs.bounds == CacheBounds(max_bytes, 7, 5)
    bucket = "<S3BlobStore bucket='images' prefix='' endpoint='http://127.0.0.1:1'>"
    assert repr(store.blobs) == f"<DiskCachedBlobStore in {tmp_path / 'cache'} in front of {bucket}>"
