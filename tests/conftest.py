from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import create_engine, make_url
from twisted.logger import LogEvent, globalLogPublisher

from pymager_tx.adapters.sql.database import Database, make_engine, sqlite_url
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.adapters.storage.s3_client import make_client
from pymager_tx.config import S3Settings
from pymager_tx.ports import immediate
from tests.results import result_of

POSTGRES_HOWTO = (
    "PostgreSQL tests need PYMAGER_TEST_DATABASE_URL, for example "
    "PYMAGER_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


S3_HOWTO = (
    "S3 tests need PYMAGER_TEST_S3_URL, the endpoint of an S3-compatible server that checks "
    "signatures (.ci/run starts SeaweedFS's `weed mini`), with PYMAGER_TEST_S3_ACCESS_KEY_ID and "
    "PYMAGER_TEST_S3_SECRET_ACCESS_KEY, for example PYMAGER_TEST_S3_URL=http://127.0.0.1:8333"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "s3: needs the S3 server named by PYMAGER_TEST_S3_URL")


def pytest_report_header() -> list[str]:
    if os.environ.get("PYMAGER_TEST_DATABASE_URL"):
        postgres = "postgres: tests run against PYMAGER_TEST_DATABASE_URL too"
    else:
        postgres = f"postgres: not configured, PostgreSQL tests skip. {POSTGRES_HOWTO}"
    if os.environ.get("PYMAGER_TEST_S3_URL"):
        s3 = "s3: tests run against PYMAGER_TEST_S3_URL too"
    else:
        s3 = f"s3: not configured, S3 tests skip. {S3_HOWTO}"
    return [postgres, s3]


@dataclass(frozen=True)
class S3Server:
    """The S3 server of the environment, and a bucket of this session's on it."""

    url: str
    access_key_id: str | None
    secret_access_key: str | None
    bucket: str

    def settings(self, **changes: Any) -> S3Settings:
        """[storage.s3] settings for this server and bucket."""
        values: dict[str, Any] = {
            "bucket": self.bucket,
            "endpoint_url": self.url,
            "max_attempts": 2,
            "connect_timeout": 5.0,
            "read_timeout": 20.0,
        }
        if self.access_key_id is not None and self.secret_access_key is not None:
            values |= {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}
        return S3Settings.model_validate(values | changes)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A bucket of its own on the S3 server the environment names, created
    for this test session and emptied and removed after it.

    Without the variable these tests skip, saying how to enable them; with
    it, an unreachable server fails them.
    """
    url = os.environ.get("PYMAGER_TEST_S3_URL")
    if not url:
        pytest.skip(S3_HOWTO)
    server = S3Server(
        url,
        os.environ.get("PYMAGER_TEST_S3_ACCESS_KEY_ID"),
        os.environ.get("PYMAGER_TEST_S3_SECRET_ACCESS_KEY"),
        f"pymager-test-{uuid4().hex[:12]}",
    )
    client = make_client(server.settings(bucket="placeholder"))
    client.create_bucket(Bucket=server.bucket)
    try:
        yield server
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket):
            names = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
            if names:
                client.delete_objects(Bucket=server.bucket, Delete={"Objects": names, "Quiet": True})
        uploads = client.list_multipart_uploads(Bucket=server.bucket).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(
                Bucket=server.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        client.delete_bucket(Bucket=server.bucket)
        client.close()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A database of its own on the PostgreSQL server the environment names,
    created for this test session and dropped after it.

    Without the variable these tests skip, saying how to enable them; with
    it, an unreachable server fails them.
    """
    base = os.environ.get("PYMAGER_TEST_DATABASE_URL")
    if not base:
        pytest.skip(POSTGRES_HOWTO)
    admin = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    name = f"pymager_test_{uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "pymager.sqlite3")
    url: str = request.getfixturevalue("postgres_server_url")
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A fresh schema, with transactions run at once in the test's thread."""
    db = Database(make_engine(database_url, pool_size=2), immediate)
    result_of(db.drop_schema())
    result_of(db.create_schema())
    yield db
    result_of(db.drop_schema())
    db.engine.dispose()


@pytest.fixture
def blobs(tmp_path: Path) -> FilesystemBlobStore:
    """A blob store in files, without threads."""
    store = FilesystemBlobStore(tmp_path / "files", immediate)
    result_of(store.recover())
    return store


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    """Every twisted.logger event emitted while the test runs."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def derivations(events: list[LogEvent]) -> list[str]:
    """Derived IDs of the derivations the service logged."""
    return [event["derived_id"] for event in events if "derived_id" in event]
