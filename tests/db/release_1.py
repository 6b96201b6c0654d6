"""A database as the first release left it: its tables, a row in each, and
no alembic_version."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, text

NOW = datetime(2026, 11, 21, 12, 30, 15, tzinfo=UTC)

# The DDL the first release's create_all emitted (git show 962def0), frozen:
# what every database made by that release holds, without alembic_version.
RELEASE_1_DDL = """
CREATE TABLE originals (
    image_id VARCHAR(128) NOT NULL,
    generation VARCHAR(32) NOT NULL,
    status VARCHAR(16) NOT NULL,
    format VARCHAR(16) NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    byte_length BIGINT NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    blob_key VARCHAR(255) NOT NULL,
    created_at {timestamp} NOT NULL,
    updated_at {timestamp} NOT NULL,
    CONSTRAINT pk_originals PRIMARY KEY (image_id),
    CONSTRAINT ck_originals_status CHECK (status IN ('pending', 'ready', 'deleting'))
);
CREATE INDEX ix_originals_status ON originals (status);
CREATE TABLE derived (
    image_id VARCHAR(128) NOT NULL,
    variant VARCHAR(64) NOT NULL,
    format VARCHAR(16) NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    byte_length BIGINT NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    blob_key VARCHAR(255) NOT NULL,
    created_at {timestamp} NOT NULL,
    CONSTRAINT pk_derived PRIMARY KEY (image_id, variant),
    CONSTRAINT fk_derived_image_id_originals FOREIGN KEY(image_id)
        REFERENCES originals (image_id) ON DELETE CASCADE
)
"""

FILE = {
    "format": "jpeg",
    "width": 800,
    "height": 600,
    "byte_length": 128425,
    "sha256": "ab" * 32,
    "created_at": NOW,
}


def create_release_1(connection: Connection) -> None:
    timestamp = "TIMESTAMP WITH TIME ZONE" if connection.dialect.name == "postgresql" else "DATETIME"
    for statement in RELEASE_1_DDL.format(timestamp=timestamp).split(";"):
        connection.exec_driver_sql(statement)


def insert_release_1_rows(connection: Connection) -> None:
    # Columns named one by one: the first release's tables, not today's.
    connection.execute(
        text(
            "INSERT INTO originals (image_id, generation, status, format, width, height, byte_length,"
            " sha256, blob_key, created_at, updated_at) VALUES ('photo', 'g1', 'ready', :format, :width,"
            " :height, :byte_length, :sha256, 'originals/photo/g1', :created_at, :created_at)"
        ),
        FILE,
    )
    connection.execute(
        text(
            "INSERT INTO derived (image_id, variant, format, width, height, byte_length, sha256,"
            " blob_key, created_at) VALUES ('photo', '100x100.jpeg', :format, :width, :height,"
            " :byte_length, :sha256, 'derived/photo/g1/100x100.jpeg', :created_at)"
        ),
        FILE,
    )
