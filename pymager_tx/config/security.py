"""[security]: the keys that sign derived URLs (GET /derived/<signature>/<name>)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from pymager_tx.config.section import Section
from pymager_tx.core.signing import MIN_KEY_LENGTH


class SecuritySettings(Section):
    url_signing_keys: list[SecretStr] = Field(
        [],
        description="Keys of signed derived URLs: the first signs, every one verifies (rotate by adding "
        "the new key first); empty: signed URLs are refused (403)",
    )

    @field_validator("url_signing_keys")
    @classmethod
    def _keys(cls, values: list[SecretStr]) -> list[SecretStr]:
        for value in values:
            key = value.get_secret_value()
            # Never the key itself in the message: errors are logged.
            if len(key) < MIN_KEY_LENGTH or key != key.strip():
                raise ValueError(
                    f"a URL signing key is at least {MIN_KEY_LENGTH} characters, without spaces around it"
                )
        return values

    def signing_keys(self) -> tuple[str, ...]:
        """The keys as text, the signing one first."""
        return tuple(value.get_secret_value() for value in self.url_signing_keys)
