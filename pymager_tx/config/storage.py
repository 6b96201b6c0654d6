"""[storage] and [storage.s3]: where the images are kept."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from pymager_tx.config.section import Section

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}")
_ENDPOINT = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+/?")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")


class S3Settings(Section):
    """[storage.s3]: the bucket of an S3-compatible object store."""

    bucket: str = Field("", description='Bucket holding the images (needed with backend = "s3")')
    endpoint_url: str = Field(
        "",
        description="URL of an S3-compatible store, e.g. http://127.0.0.1:8333 (SeaweedFS, MinIO, Ceph, "
        "R2); empty: AWS S3",
    )
    region: str = Field("us-east-1", description="Region of the bucket (signs requests)")
    prefix: str = Field(
        "", description='Key prefix inside the bucket, e.g. "pymager" (keys then start "pymager/")'
    )
    access_key_id: SecretStr | None = Field(
        None,
        description="Access key ID; unset: the standard AWS credential chain (environment, files, roles)",
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Secret access key, set with access_key_id (never logged)"
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto",
        description='"path" (host/bucket/key), "virtual" (bucket.host/key) or "auto" (path for a '
        "custom endpoint_url, virtual for AWS)",
    )
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        5.0, description="Seconds to open a connection to the store before the attempt fails"
    )
    read_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Seconds to wait for any bytes of an answer before the attempt fails"
    )
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        3,
        description="Attempts per request, with backoff, on throttling, 5xx and dropped connections; "
        "then 503",
    )
    max_pool_connections: Annotated[int, Field(ge=1, le=1024)] = Field(
        16, description="Connections to the store per process, and the threads that use them"
    )
    part_bytes: Annotated[int, Field(ge=5 * 1024 * 1024, le=5 * 1024 * 1024 * 1024)] = Field(
        8 * 1024 * 1024,
        description="Larger blobs are uploaded in parts of this many bytes (multipart), 5 MiB at least",
    )
    abort_uploads_after: Annotated[float, Field(ge=600)] = Field(
        86400.0,
        description="Seconds after which start-up aborts a multipart upload never completed (a crashed "
        "writer's)",
    )
    request_checksums: Literal["when_supported", "when_required"] = Field(
        "when_supported",
        description='Send CRC checksums with every upload; "when_required" for stores that refuse them',
    )

    conditional_writes: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Write images with If-None-Match: *, so that no object is ever replaced: "
        '"auto" asks the store at start-up and uses it where honoured (AWS S3, SeaweedFS, MinIO, R2), '
        '"on" requires it (start-up fails where not honoured), "off" never sends it',
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if value and not _BUCKET.fullmatch(value):
            raise ValueError("must be a bucket name: 3 to 255 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        # No user:password@: credentials belong in their own keys, which are never shown.
        if value and not _ENDPOINT.fullmatch(value):
            raise ValueError(
                "must be empty or an http(s) URL such as http://127.0.0.1:8333, without credentials"
            )
        return value.rstrip("/")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if value and not _PREFIX.fullmatch(value):
            raise ValueError("must be empty or path segments of letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _both_keys_or_none(self) -> S3Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together: set both or neither")
        return self


class CacheSettings(Section):
    """[storage.cache]: copies of images read from the bucket, on each node's disk."""

    max_bytes: Annotated[int, Field(ge=0)] = Field(
        1024 * 1024 * 1024,
        description='Bytes of copies each process keeps in <data_directory>/cache (backend = "s3" only); '
        "0: none",
    )
    max_files: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        20_000, description="Copies each process keeps at most (its index holds about 1 KB a copy)"
    )
    max_item_bytes: Annotated[int, Field(ge=1)] = Field(
        32 * 1024 * 1024, description="Larger images are always read from the bucket"
    )


class StorageSettings(Section):
    backend: Literal["filesystem", "s3"] = Field(
        "filesystem",
        description='Where images are stored: "filesystem" (the data directory) or "s3" ([storage.s3])',
    )
    data_directory: Annotated[Path, Field(strict=False)] = Field(
        Path("pymager-data"),
        description="Directory of stored images (and of the default SQLite database); "
        "relative to the working directory",
    )
    s3: S3Settings = Field(S3Settings.model_validate({}), description='The bucket, when backend = "s3"')
    cache: CacheSettings = Field(
        CacheSettings.model_validate({}), description='The local disk cache, when backend = "s3"'
    )

    @model_validator(mode="after")
    def _bucket_named(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError('backend = "s3" needs [storage.s3] bucket')
        return self
