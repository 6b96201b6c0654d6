"""
Every setting, declared once with its default and its doc: the sections
(pymager_tx.config.settings, storage), loaded from TOML and checked whole.
"""

from pymager_tx.config.settings import ImageSettings, Settings, documented_keys, load_settings
from pymager_tx.config.storage import S3Settings

__all__ = ["ImageSettings", "S3Settings", "Settings", "documented_keys", "load_settings"]
