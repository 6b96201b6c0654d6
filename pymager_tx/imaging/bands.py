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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
    for _ in range(min(count - 1, helpers.idle())):
        helpers.spawn(parts.work)
    parts.work()
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

    def work(self) -> None:
        """Make bands until none is left; never raises (a helper's error is
        the caller's, raised by wait())."""
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

    def _take(self) -> int | None:
        with self._finished:
            if self._next >= self._count or self._error is not None:
                return None
            index = self._next
            self._next += 1
            self._running += 1
            return index
