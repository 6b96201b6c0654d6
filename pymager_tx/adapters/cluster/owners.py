"""
Which of the processes sharing one store are still alive.

Each process holds an exclusive flock(2) on a file named after it for as long
as it runs.  The kernel releases the lock when the process ends, however it
ends (kill -9 included), so another process that can take the lock knows the
owner is gone and may finish what it left unfinished: a pending upload, a
derivation it claimed, its temporary files.  A pid check would not do: pids
are reused, and every container's first process is pid 1.

The files live in the data directory, which every process of one service
shares (on NFS, version 4 locks carry flock).  All methods block: call them
from a thread pool.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from pathlib import Path

from pymager_tx.core.owner_names import UNSAFE_IN_NAMES, new_owner_name

_SUFFIX = ".lock"


class Owners:
    def __init__(self, directory: Path, me: str | None = None) -> None:
        self.directory = directory
        self.me = me or new_owner_name()
        self._held: int | None = None

    def register(self) -> None:
        """Take this process's lock; it is held until release() or death."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # Lock first, then give the file its name: nobody can find the name
        # without its lock and think its owner dead.
        temporary = self.directory / f".{self.me}.new"
        descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, self._path(self.me))
        except BaseException:
            os.close(descriptor)
            raise
        self._held = descriptor

    def release(self) -> None:
        if self._held is None:
            return
        with suppress(FileNotFoundError):
            self._path(self.me).unlink()
        os.close(self._held)
        self._held = None

    def is_alive(self, owner: str | None) -> bool:
        """Whether owner is a running process; None (a row written before
        owners were recorded) and unknown names are not."""
        if owner is None:
            return False
        if owner == self.me:
            return True
        return self._locked(owner) is True

    def proven_dead(self, owner: str | None) -> bool:
        """Whether owner registered here and is gone for certain (its file is
        here and nobody holds its lock); False for names unknown here, which
        may be processes of other machines that share no data directory."""
        if owner is None or owner == self.me:
            return False
        return self._locked(owner) is False

    def _locked(self, owner: str) -> bool | None:
        """Whether owner's lock is held; None if it has no file here."""
        try:
            descriptor = os.open(self._path(owner), os.O_RDWR)
        except (FileNotFoundError, ValueError):
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)  # also drops the lock, if we got it
        return False

    def first_alive(self) -> bool:
        """Whether this process has the smallest name of the live ones
        registered here: the one whose turn it is to sweep."""
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            owner = path.name.removesuffix(_SUFFIX)
            if owner == self.me:
                return True
            if self.is_alive(owner):
                return False
        return False  # not registered (the command line): never

    def bury_dead(self) -> list[str]:
        """Remove the files of owners that are gone; their names."""
        dead = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            owner = path.name.removesuffix(_SUFFIX)
            if not self.is_alive(owner):
                with suppress(FileNotFoundError):
                    path.unlink()
                dead.append(owner)
        return dead

    def _path(self, owner: str) -> Path:
        if UNSAFE_IN_NAMES.search(owner) or owner.startswith("."):
            raise ValueError(f"not an owner name: {owner!r}")
        return self.directory / f"{owner}{_SUFFIX}"
