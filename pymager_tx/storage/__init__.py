"""Where image bytes live: an interface, a filesystem store and an in-memory fake."""

from pymager_tx.storage.interface import IBlobReader, IBlobStore, validate_key

__all__ = ["IBlobReader", "IBlobStore", "validate_key"]
