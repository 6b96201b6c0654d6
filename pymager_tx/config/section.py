"""The base of every settings section: strict, frozen, nothing unknown."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Strict: a TOML string is not a number and 1 is not true; dev_mode =
    # "yes" must not wipe anything, nor allow_anonymous_writes = 1 open writes.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
