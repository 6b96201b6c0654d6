"""[cdn]: the cache tags on image answers, and the purge request a delete
or a replacement sends to the CDN in front."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pymager_tx.config.section import Section
from pymager_tx.core.errors import ConfigError

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
_TOKEN = re.compile(r"[\x21-\x7e]+")


class CdnSettings(Section):
    cache_tag_headers: list[str] = Field(
        ["Surrogate-Key"],
        description='Headers naming the image\'s ID on every image answer: "Surrogate-Key" (Fastly, '
        'Varnish xkey), "Cache-Tag" (Cloudflare); empty: none',
    )
    purge_url: str = Field(
        "",
        description="URL a delete or a replacement sends the purge to, {id} standing for the image's "
        "ID; empty: no purge",
    )
    purge_method: str = Field("POST", description='HTTP method of the purge ("POST", "PURGE", ...)')
    purge_headers: dict[str, str] = Field(
        {},
        description="Headers of the purge, {id} and {token} standing for the ID and purge_token "
        '(e.g. {"Fastly-Key" = "{token}"})',
    )
    purge_body: str = Field("", description="Body of the purge, {id} standing for the ID; empty: none")
    purge_token: str = Field(
        "", description="The CDN's API token, for {token} in purge_headers; never logged"
    )
    purge_token_file: Annotated[Path, Field(strict=False)] | None = Field(
        None, description="File holding the API token instead (keeps the secret out of this file)"
    )
    purge_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        5, description="Attempts at each purge before it is given up (and logged)"
    )
    purge_backoff_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        1.0, description="Wait before the second attempt; it doubles before each next one"
    )
    purge_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = Field(
        10.0, description="Seconds an attempt may take before it counts as failed"
    )
    purge_queue: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        10_000, description="Purges waiting at most; past it, new ones are logged and dropped"
    )

    @field_validator("cache_tag_headers")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _HEADER_NAME.fullmatch(value):
                raise ValueError("each must be an HTTP header name")
        return values

    @field_validator("purge_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be empty or an http(s) URL, {id} standing for the image's ID")
            if "@" in parts.netloc:
                raise ValueError("must carry no user or password: put credentials in purge_headers")
        return value

    @field_validator("purge_method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError("must be an HTTP method")
        return value

    @field_validator("purge_headers")
    @classmethod
    def _headers(cls, values: dict[str, str]) -> dict[str, str]:
        for name, value in values.items():
            if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
                raise ValueError("each must be an HTTP header name and a printable ASCII value")
        return values

    @field_validator("purge_token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value and not _TOKEN.fullmatch(value):
            raise ValueError("must be visible ASCII characters, without spaces")
        return value

    @model_validator(mode="after")
    def _one_token(self) -> CdnSettings:
        if self.purge_token and self.purge_token_file is not None:
            raise ValueError("give purge_token or purge_token_file, not both")
        return self

    def token(self) -> str:
        """The API token: purge_token, or the first line of purge_token_file."""
        if self.purge_token_file is None:
            return self.purge_token
        try:
            text = self.purge_token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"cdn.purge_token_file: cannot read it ({error.strerror})") from None
        if not _TOKEN.fullmatch(text):
            raise ConfigError("cdn.purge_token_file: holds no token (visible ASCII characters, no spaces)")
        return text
