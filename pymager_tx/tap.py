"""
`twistd pymager`: command-line options and the composition root.

This is the only module that touches the global reactor or process-wide
settings; everything below it gets what it needs passed in.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from PIL import Image
from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from pymager_tx.config import Settings, load_settings
from pymager_tx.endpoints import listens_only_locally
from pymager_tx.errors import ConfigError
from pymager_tx.server import PymagerService

log = Logger()


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT] [--data-dir DIR] [--dev]"
    longdesc = (
        "Stores images under IDs that clients choose and serves resized copies of them. "
        "With no options it listens on 127.0.0.1:8000 and keeps its data in ./pymager-data."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (see etc/pymager.toml)"],
        ["listen", "l", None, "Twisted endpoint to listen on; overrides [server] listen"],
        ["data-dir", "d", None, "Directory of stored data; overrides [storage] data_directory"],
    ]
    optFlags = [["dev", None, "Development mode: wipe the database and stored files at start"]]

    settings: Settings
    tokens: tuple[str, ...]

    def postOptions(self) -> None:
        overrides: dict[str, dict[str, Any]] = {}
        if self["listen"]:
            overrides.setdefault("server", {})["listen"] = self["listen"]
        if self["dev"]:
            overrides.setdefault("server", {})["dev_mode"] = True
        if self["data-dir"]:
            overrides.setdefault("storage", {})["data_directory"] = self["data-dir"]
        path = Path(self["config"]) if self["config"] else None
        try:
            self.settings = load_settings(path, overrides)
            self.tokens = self.settings.auth.tokens()
            check_exposure(self.settings, self.tokens)
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None


def check_exposure(settings: Settings, tokens: tuple[str, ...]) -> None:
    """Refuse open writes where the network can reach them."""
    listen = settings.server.listen
    try:
        from twisted.internet import reactor

        serverFromString(reactor, listen)
    except Exception as error:
        # Endpoint parsers fail in many ways (a missing TLS certificate is a
        # FileNotFoundError); each is a bad setting, not a crash.
        raise ConfigError(
            f"server.listen: {listen!r} is not an endpoint this Twisted can listen on ({error!r})"
        ) from None
    if tokens or settings.auth.allow_anonymous_writes or listens_only_locally(listen):
        return
    raise ConfigError(
        f"server.listen: {listen!r} is reachable from the network, and writes would be open to anyone. "
        "Set [auth] write_tokens (or write_tokens_file), or, if something in front of this server "
        "guards writes, set [auth] allow_anonymous_writes = true."
    )


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    # Pillow warns of a decompression bomb and decodes anyway; make the
    # warning an error, process-wide, here in the composition root.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    return PymagerService(
        options.settings, reactor, options.tokens, on_start_failure=_exit_on_failure(reactor)
    )


def _exit_on_failure(reactor: Any) -> Any:
    def stop(_failure: Failure) -> None:
        # twistd has no exit status of its own to set: leave with 1 once the
        # reactor has shut down cleanly, so systemd sees a failed start.
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        reactor.stop()

    return stop
