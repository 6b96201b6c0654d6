"""
The C allocator under image work (glibc, Linux): freed memory is kept for
the next picture while images are being made, and given back when idle.

A decoded 20 MP photograph is 80 MB of pixels, which Pillow allocates (and
glibc zeroes) with the GIL held.  By default glibc gives the top of its
heap back to the system as soon as more than twice its mmap threshold is
free there, so the next picture's memory is faulted in again inside that
allocation: up to 20 ms beside another image thread, during which no other
thread of the process ran, the reactor's included (bench/RESULTS.md, stop
21).  Here the heap is trimmed only past TRIM_ABOVE, and by give_back()
when the image threads are idle; big blocks still come from the heap up to
glibc's largest mmap threshold, as its dynamic threshold does after the
first free anyway.  Elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from functools import cache
from typing import Any

from twisted.logger import Logger

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_ABOVE = 32 * 1024 * 1024
# Free memory kept at the heap's top while busy: two image threads' worth of
# large decodes (each up to about 100 MB of pixels and their resized copies).
TRIM_ABOVE = 256 * 1024 * 1024

_log = Logger(namespace="pymager_tx.process.allocator")


@cache
def _glibc() -> Any | None:
    """The C library, when it is glibc (libc_ver() reads the interpreter's
    file: once per process)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def tunable() -> bool:
    """Whether this process's allocator is glibc's, which this module tunes."""
    return _glibc() is not None


def keep_freed_memory() -> bool:
    """Tune glibc as the module says; whether it was (False elsewhere)."""
    libc = _glibc()
    if libc is None:
        return False
    tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_ABOVE)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_ABOVE)
    )
    if not tuned:
        _log.warn("glibc refused the allocator settings; freed memory is returned as it is freed")
    return tuned


def give_back() -> None:
    """Return the heap's free memory to the system (malloc_trim): blocking,
    run it on a thread; ctypes releases the GIL for the call."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
