"""The allocator's tuning (process/allocator): freed memory stays in the
heap for the next picture until give_back(), on glibc.  Each case runs in a
process of its own: the settings are the whole process's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pymager_tx.process.allocator import tunable

pytestmark = pytest.mark.skipif(
    not tunable(), reason="glibc's allocator only: elsewhere keep_freed_memory() changes nothing"
)

_FREE_THEN_GIVE_BACK = """
import ctypes, sys
from pymager_tx.process.allocator import give_back, keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
size = int(sys.argv[2])  # a large decoded picture's block
block = libc.malloc(size)
ctypes.memset(block, 1, size)
libc.free(block)
kept = libc.mallinfo2().fordblks
give_back()
print(kept, libc.mallinfo2().fordblks)
"""

SIZE = 24 * 1024 * 1024


def _free_then_give_back(mode: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", _FREE_THEN_GIVE_BACK, mode, str(SIZE)],
        capture_output=True,
        text=True,
        check=True,
    )
    kept, after = done.stdout.split()
    return int(kept), int(after)


def test_freed_memory_is_kept_until_given_back() -> None:
    kept, after = _free_then_give_back("tuned")
    assert kept >= SIZE  # free in the heap, still the process's
    assert after < SIZE // 4  # returned by give_back()


def test_by_default_glibc_returns_it_at_once() -> None:
    kept, _ = _free_then_give_back("default")
    assert kept < SIZE // 4
