"""
Progress of a long command: a tqdm bar (count, rate, ETA) on a terminal,
and plain lines now and then when the output is a file or a pipe (a log, a
CI job), where a bar would be a mess of carriage returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Never

from tqdm import tqdm


class Progress:
    """Counts items done of total, on stream (standard error by default)."""

    def __init__(
        self,
        total: int,
        what: str,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = 10.0,
        unit: str = "image",
    ) -> None:
        self.total = total
        self.done = 0
        self._what = what
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._every = every
        self._started = self._last = clock()
        if tty is None:
            tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._bar: tqdm[Never] | None = (
            tqdm(total=total, desc=what, unit=unit, file=self._stream, dynamic_ncols=True) if tty else None
        )

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = self._clock()
        if now - self._last >= self._every and self.done < self.total:
            self._last = now
            self._line(now)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.total:
            self._line(self._clock())

    def _line(self, now: float) -> None:
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        percent = 100 * self.done // self.total if self.total else 100
        left = self.total - self.done
        eta = f", ETA {_duration(left / rate)}" if rate > 0 and left else ""
        print(
            f"{self._what}: {self.done}/{self.total} ({percent}%), {rate:.1f}/s{eta}",
            file=self._stream,
            flush=True,
        )


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, seconds_left = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds_left:02d}"
