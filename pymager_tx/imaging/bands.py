"""
One resize on several threads: the output cut into bands of rows, each
resized from its own part of the source box.

Pillow's resize takes a source box and reads the filter's support beyond it
(up to the picture's edges), so a band is the whole resize's own rows, to
within a float's rounding of a filter's centre (at most 1 level in a few
pixels); and it lets go of the GIL while it filters, so bands run at once.
The bands depend only on the sizes and the band count, never on which
thread is free, so the same request gives the same bytes every time.

Helpers are called only while image threads stand idle (one for each), so
under load, with every image thread rendering, each does its own bands, and
the cores are not asked for more than they have; an idle machine gives one
derivation all its cores (a 2 MP photo into 420 px: 11 ms of LANCZOS in 6.7
on two cores).  The calling thread takes bands itself until none is left,
and a helper that starts late finds none and returns at once: a render never
waits for a helper that has not begun.

Each thread working on a resize keeps to a core none of the others is on,
for the resize's length.  Linux may wake a helper on the core of the thread
that woke it, beside the caller, while the other core sleeps (a guest
kernel that packs threads onto few vCPUs does so on purpose), and took
3-5 ms to part them: on an idle two-core machine the two bands of a 2 MP
photo's resize shared one core in 21-24 of 40 tries, and took as long as
one thread alone (bench/RESULTS.md, stop 27).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image

__all__ = ["Helpers", "banded_resize"]

Box = tuple[float, float, float, float]

# Below these a band's hand-over and its repeated filter support cost more
# than the thread saves (about 0.1 ms a band).
_MIN_SOURCE_PIXELS = 250_000
_MIN_BAND_ROWS = 48


@dataclass(frozen=True)
class Helpers:
    """Threads that may take bands of a resize: spawn(work) runs work() on
    one of them soon (from any thread, never raising); bands: how many bands
    a resize is cut into at most, the caller's own included; idle(): how
    many image threads have nothing to do now (a helper called for each)."""

    spawn: Callable[[Callable[[], None]], object]
    bands: int
    idle: Callable[[], int]


def banded_resize(
    source: Image.Image,
    size: tuple[int, int],
    resample: Image.Resampling,
    box: Box,
    reducing_gap: float,
    helpers: Helpers | None,
) -> Image.Image:
    """source.resize(size, resample, box=box, reducing_gap=reducing_gap),
    in bands of output rows on this thread and, while image threads are
    idle, the helpers', when the resize is large enough to gain and needs no
    reduce() first (a JPEG decoded at a reduced scale never does: it leaves
    less than twice the gap)."""
    width, height = size
    left, top, right, bottom = box
    count = _band_count(source, size, box, reducing_gap, helpers)
    if helpers is None or count < 2:
        return source.resize(size, resample, box=box, reducing_gap=reducing_gap)
    source.load()  # once, here: the bands only read it
    step = (bottom - top) / height
    rows = [height * index // count for index in range(count + 1)]

    def band(index: int) -> Image.Image:
        first, last = rows[index], rows[index + 1]
        return source.resize(
            (width, last - first), resample, box=(left, top + first * step, right, top + last * step)
        )

    parts = _Bands(count, band)
    helping = min(count - 1, helpers.idle())
    if not helping:
        parts.make()
    else:
        # Spawned before the caller keeps to its core: a thread a pool
        # starts for them would inherit that.
        for _ in range(helping):
            helpers.spawn(parts.work)
        with parts.core_of_its_own():
            # A helper woken onto this core runs now and moves to another
            # (core_of_its_own), instead of waiting milliseconds for a turn.
            _let_others_run()
            parts.make()
    done = parts.wait()
    whole = Image.new(done[0].mode, size)
    for index, part in enumerate(done):
        whole.paste(part, (0, rows[index]))
    return whole


def _band_count(
    source: Image.Image, size: tuple[int, int], box: Box, reducing_gap: float, helpers: Helpers | None
) -> int:
    if helpers is None:
        return 1
    left, top, right, bottom = box
    width, height = size
    if (right - left) / width >= 2 * reducing_gap or (bottom - top) / height >= 2 * reducing_gap:
        return 1  # Pillow reduces first: left to it, whole
    if (right - left) * (bottom - top) < _MIN_SOURCE_PIXELS:
        return 1
    return max(1, min(helpers.bands, height // _MIN_BAND_ROWS))


class _Bands:
    """Bands handed out one at a time to whichever thread asks next."""

    def __init__(self, count: int, make: Callable[[int], Image.Image]) -> None:
        self._make = make
        self._count = count
        self._next = 0
        self._running = 0
        self._finished = threading.Condition()
        self._parts: list[Image.Image | None] = [None] * count
        self._error: BaseException | None = None
        self._cores: set[int] = set()  # those the threads making bands are on
        self._allowed: set[int] | None = None  # those they may run on otherwise

    def work(self) -> None:
        """A helper's part: make bands until none is left, on a core of its
        own; never raises (a helper's error is the caller's, raised by
        wait())."""
        if self._next >= self._count:
            return  # started late: nothing left, and no core to take
        with self.core_of_its_own():
            self.make()

    def make(self) -> None:
        """Make bands until none is left; never raises."""
        while (index := self._take()) is not None:
            try:
                part: Image.Image | None = self._make(index)
            except BaseException as error:  # MemoryError included: the caller decides
                part = None
                self._error = self._error or error
            with self._finished:
                self._parts[index] = part
                self._running -= 1
                self._finished.notify_all()

    def wait(self) -> list[Image.Image]:
        """Every band, once the last one taken is made; raises the first
        error any band met."""
        with self._finished:
            while self._running:
                self._finished.wait()
        if self._error is not None:
            raise self._error
        parts = [part for part in self._parts if part is not None]
        assert len(parts) == self._count, "wait() before the caller took every band"
        return parts

    @contextmanager
    def core_of_its_own(self) -> Iterator[None]:
        """This thread kept off the cores of the others making bands (and
        the first, the caller, kept to the core it is on) while it makes
        them, where threads can be kept to cores; then free again."""
        kept = self._keep_to_a_core_of_its_own()
        try:
            yield
        finally:
            if kept is not None:
                core, allowed = kept
                _keep_to(allowed)
                with self._finished:
                    self._cores.discard(core)

    def _keep_to_a_core_of_its_own(self) -> tuple[int, set[int]] | None:
        """The core this thread is on now, and those it may run on
        afterwards; None if it was not kept anywhere."""
        here = _current_core()
        if here is None:
            return None
        with self._finished:
            # The first thread's cores, before anyone is kept, are
            # everyone's to go back to.
            if self._allowed is None:
                self._allowed = os.sched_getaffinity(0)
            allowed = self._allowed
            cores = allowed - self._cores if here in self._cores else {here}
            if not cores or not _keep_to(cores):
                return None
            moved_to = _current_core()
            here = here if moved_to is None else moved_to
            self._cores.add(here)
        return here, allowed

    def _take(self) -> int | None:
        with self._finished:
            if self._next >= self._count or self._error is not None:
                return None
            index = self._next
            self._next += 1
            self._running += 1
            return index


def _core_finder() -> Callable[[], int] | None:
    """sched_getcpu() from the C library, where there is one (Linux)."""
    try:
        finder = ctypes.CDLL(None).sched_getcpu
    except (AttributeError, OSError, TypeError):  # TypeError: Windows
        return None
    finder.restype = ctypes.c_int
    finder.argtypes = []
    return finder if hasattr(os, "sched_setaffinity") else None


_FIND_CORE = _core_finder()


def _let_others_run() -> None:
    if hasattr(os, "sched_yield"):
        os.sched_yield()


def _keep_to(cores: set[int]) -> bool:
    """Keep this thread to cores; False where the kernel refused (a
    container's cores changed meanwhile, say)."""
    try:
        os.sched_setaffinity(0, cores)
    except OSError:
        return False
    return True


def _current_core() -> int | None:
    """The core this thread runs on now; None where that cannot be known
    (or this thread cannot be kept off a core)."""
    if _FIND_CORE is None:
        return None
    core = _FIND_CORE()
    return core if core >= 0 else None
