"""
`twistd pymager`: command-line options and the composition root.

This is the only module that touches the global reactor or process-wide
settings; everything below it gets what it needs passed in.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from PIL import Image
from twisted.application.service import IService
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from pymager_tx import __version__
from pymager_tx.config import Settings, load_settings
from pymager_tx.core.errors import ConfigError
from pymager_tx.process import logs
from pymager_tx.process.endpoints import listens_only_locally
from pymager_tx.process.server import PymagerService
from pymager_tx.process.wiring import check_storage
from pymager_tx.process.workers import Workers, worker_arguments
from twisted import copyright

log = Logger()


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT] [--data-dir DIR] [--workers N] [--dev] [--version]"
    longdesc = (
        "Stores images under IDs that clients choose and serves resized copies of them. "
        "With no options it listens on 127.0.0.1:8000 and keeps its data in ./pymager-data."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (see etc/pymager.toml)"],
        ["listen", "l", None, "Twisted endpoint to listen on; overrides [server] listen"],
        ["data-dir", "d", None, "Directory of stored data; overrides [storage] data_directory"],
        ["workers", "w", None, "Processes serving the listening socket; overrides [server] workers"],
        # Set by the first process on the workers it starts (pymager_tx.process.workers).
        ["worker", None, None, "(internal) run as worker N, on the socket passed as descriptor 3"],
    ]
    optFlags = [["dev", None, "Development mode: wipe the database and stored files at start"]]

    settings: Settings
    tokens: tuple[str, ...]
    worker: int | None

    def opt_version(self) -> None:
        """Display pymager-tx's version (and Twisted's) and exit."""
        print(f"pymager-tx {__version__} (Twisted {copyright.version})")
        sys.exit(0)

    def postOptions(self) -> None:
        overrides: dict[str, dict[str, Any]] = {}
        if self["listen"]:
            overrides.setdefault("server", {})["listen"] = self["listen"]
        if self["dev"]:
            overrides.setdefault("server", {})["dev_mode"] = True
        if self["data-dir"]:
            overrides.setdefault("storage", {})["data_directory"] = self["data-dir"]
        if self["workers"]:
            overrides.setdefault("server", {})["workers"] = _number("--workers", self["workers"])
        self.worker = None if self["worker"] is None else _number("--worker", self["worker"])
        if self.worker is not None:
            # The first process wiped and prepared the store; a worker joins it.
            overrides.setdefault("server", {})["dev_mode"] = False
        path = Path(self["config"]) if self["config"] else None
        try:
            self.settings = load_settings(path, overrides)
            self.tokens = self.settings.auth.tokens()
            check_exposure(self.settings, self.tokens)
            check_workers(self.settings)
            check_storage(self.settings)
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None
        twistd = getattr(self, "parent", None)
        if twistd is not None:
            _adjust_twistd(twistd, self.settings)

    def worker_arguments(self) -> list[str]:
        """The plugin options a worker gets: those naming the settings,
        none that only the first process acts on (--dev, --workers)."""
        arguments = []
        for name in ("config", "data-dir"):
            if self[name]:
                arguments.append(f"--{name}={Path(self[name]).absolute()}")
        if self["listen"]:
            arguments.append(f"--listen={self['listen']}")
        return arguments


def _adjust_twistd(twistd: Any, settings: Settings) -> None:
    """What the settings change in twistd's own options, which twistd reads
    once every option is parsed (this plugin's first)."""
    # In the foreground, no pid file unless one is named: a second start in
    # the same folder would otherwise refuse ("Another twistd server is
    # running"), and the file would be left in the working directory.
    if twistd.get("nodaemon") and twistd.get("pidfile") == "twistd.pid":
        twistd["pidfile"] = ""
    # JSON lines, where twistd would have written its text lines, unless
    # another logger or syslog is chosen on the command line.
    if settings.server.log_format == "json" and not twistd.get("logger") and not twistd.get("syslog"):
        twistd["logger"] = logs.destination(_log_file(twistd))


def _number(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise usage.UsageError(f"{option}: {text!r} is not a whole number") from None


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


def check_workers(settings: Settings) -> None:
    """Workers are dealt plain connections: TLS would be lost on the way."""
    from twisted.internet import reactor

    endpoint = serverFromString(reactor, settings.server.listen)
    if settings.server.workers > 1 and not isinstance(
        endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint | UNIXServerEndpoint
    ):
        raise ConfigError(
            f"server.workers: more than one needs a tcp: or unix: endpoint, not {settings.server.listen!r} "
            "(TLS belongs to the proxy in front)"
        )


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    # Pillow warns of a decompression bomb and decodes anyway; make the
    # warning an error, process-wide, here in the composition root.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    workers = None
    if options.worker is None and options.settings.server.workers > 1:
        plugin_arguments = options.worker_arguments()
        log_file = _log_file(getattr(options, "parent", None))
        workers = Workers(
            reactor,
            options.settings.server.workers,
            lambda number: worker_arguments([*plugin_arguments, f"--worker={number}"], number, log_file),
        )
    return PymagerService(
        options.settings,
        reactor,
        options.tokens,
        on_start_failure=_exit_on_failure(reactor),
        worker=options.worker,
        workers=workers,
    )


def _log_file(twistd_options: Any) -> str | None:
    """Where twistd logs: None or "-" for standard output."""
    if twistd_options is None:
        return None
    log_file: str | None = twistd_options.get("logfile")
    if log_file is None:
        # twistd's default: standard output in the foreground, else this file.
        return None if twistd_options.get("nodaemon") else "twistd.log"
    return log_file if log_file == "-" else str(Path(log_file).absolute())


def _exit_on_failure(reactor: Any) -> Any:
    def stop(_failure: Failure) -> None:
        # twistd has no exit status of its own to set: leave with 1 once the
        # reactor has shut down cleanly, so systemd sees a failed start.
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        # A start that fails at once (a port in use) fails before twistd has
        # run the reactor: stop it as soon as it runs.
        reactor.callWhenRunning(reactor.stop)

    return stop
