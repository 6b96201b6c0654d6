"""
Reading a small file that the kernel holds in memory, on the calling thread,
with a guarantee that the call never waits for a disk.

A warm rendition read from the filesystem store is a few kilobytes that the
page cache almost always holds; handing that read to a pool thread and its
answer back costs more than the read (two thread wake-ups, a pipe write and
a reactor turn: about a third of such a request's CPU).  Reading it on the
reactor's thread would block the reactor whenever the file is not cached.
Linux can tell the two apart without waiting: openat2() with RESOLVE_CACHED
fails with EAGAIN unless every name on the path is in the dentry cache, and
preadv2() with RWF_NOWAIT returns EAGAIN (or less than asked) unless the data
is in the page cache.  So this reads the file only when both say it is all
in memory; anything else (EAGAIN, a partial read, a missing file, an older
kernel, another system) answers None, and the caller takes the pool thread
as before.  Python has no openat2() of its own: it is called through libc's
syscall(), whose number is the same on every Linux architecture.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any

_OPENAT2 = 437  # the same on every architecture since Linux 5.6
_AT_FDCWD = -100
_RESOLVE_CACHED = 0x20  # Linux 5.12
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
# A file this small that the kernel holds in memory is read on the calling
# thread: copying it costs less than a trip to a pool thread.
READ_HERE_BYTES = 256 * 1024


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def _syscall() -> Any:
    if not sys.platform.startswith("linux") or _RWF_NOWAIT is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    return call


class CachedReader:
    """read(path, limit): the file's bytes when it is at most limit bytes
    long and wholly in memory, else None; never waits for a disk."""

    def __init__(self) -> None:
        self._syscall = _syscall()
        self._how = _OpenHow(os.O_RDONLY | os.O_CLOEXEC, 0, _RESOLVE_CACHED)
        self._how_size = ctypes.c_size_t(ctypes.sizeof(_OpenHow))
        if self._syscall is not None and not self._works():
            self._syscall = None

    @property
    def available(self) -> bool:
        """Whether this system can read without waiting (Linux 5.12 and later)."""
        return self._syscall is not None

    def read(self, path: str, limit: int) -> bytes | None:
        if self._syscall is None:
            return None
        descriptor = self._open(path)
        if descriptor < 0:
            return None
        try:
            size = os.fstat(descriptor).st_size
            if size > limit:
                return None
            # One byte more than the size: a file that grew is read again, on a thread.
            buffer = bytearray(size + 1)
            try:
                count = os.preadv(descriptor, [buffer], 0, _RWF_NOWAIT)  # type: ignore[arg-type]
            except OSError:
                return None  # EAGAIN: not in memory; or the filesystem cannot say
            return bytes(buffer[:count]) if count == size else None
        finally:
            os.close(descriptor)

    def _open(self, path: str) -> int:
        result: int = self._syscall(
            _OPENAT2, _AT_FDCWD, os.fsencode(path), ctypes.byref(self._how), self._how_size
        )
        return result

    def _works(self) -> bool:
        """openat2 with RESOLVE_CACHED exists here (ENOSYS or EINVAL on an
        older kernel; EAGAIN says it exists and found "/" uncached)."""
        descriptor = self._open("/")
        if descriptor >= 0:
            os.close(descriptor)
            return True
        return ctypes.get_errno() not in (0, errno.ENOSYS, errno.EINVAL)
