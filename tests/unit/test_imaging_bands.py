"""A resize cut into bands of rows: the same picture as one resize, whoever
takes the bands, and never waiting for a helper that does not come."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
from PIL import Image, ImageChops

from pymager_tx.imaging import bands
from pymager_tx.imaging.bands import Helpers, banded_resize

LANCZOS = Image.Resampling.LANCZOS


def photo_like(size: tuple[int, int] = (943, 531)) -> Image.Image:
    """Noise over a gradient: every band boundary has detail on both sides."""
    noise = Image.effect_noise(size, 60).convert("RGB")
    gradient = Image.linear_gradient("L").resize(size).convert("RGB")
    return Image.blend(noise, gradient, 0.5)


class ThreadHelpers:
    """Helpers on real threads, counting the work they were handed."""

    def __init__(self, bands: int, idle: int | None = None) -> None:
        self.spawned = 0
        self.threads: list[threading.Thread] = []
        self.idle = bands - 1 if idle is None else idle
        self.helpers = Helpers(self.spawn, bands, lambda: self.idle)

    def spawn(self, work: Callable[[], None]) -> None:
        self.spawned += 1
        thread = threading.Thread(target=work)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=10)
            assert not thread.is_alive()


def largest_difference(first: Image.Image, second: Image.Image) -> int:
    assert first.size == second.size and first.mode == second.mode
    return max(high for _, high in ImageChops.difference(first, second).getextrema())


@pytest.mark.parametrize(
    ("size", "box"),
    [
        ((420, 236), (0.0, 0.0, 943.0, 531.0)),  # a fit
        ((420, 420), (236.0, 0.0, 767.0, 531.0)),  # a crop
        ((250, 200), (0.0, 0.0, 943.0, 531.0)),  # 3.8:1 across: no reduce() first
        ((301, 215), (0.5, 0.25, 942.5, 530.75)),  # a box off the pixel grid
    ],
)
@pytest.mark.parametrize("bands", [2, 3, 4])
def test_bands_make_the_picture_one_resize_makes(
    size: tuple[int, int], box: tuple[float, float, float, float], bands: int
) -> None:
    source = photo_like()
    helping = ThreadHelpers(bands)
    banded = banded_resize(source, size, LANCZOS, box, 2.0, helping.helpers)
    helping.join()
    whole = source.resize(size, LANCZOS, box=box)
    assert helping.spawned == bands - 1
    # Only a filter centre's float rounding differs: a level at most.
    assert largest_difference(banded, whole) <= 1


def test_the_caller_takes_every_band_when_no_helper_comes() -> None:
    source = photo_like()
    never: list[Callable[[], None]] = []
    banded = banded_resize(
        source, (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, Helpers(never.append, 4, lambda: 3)
    )
    assert len(never) == 3  # handed out, never run: the caller did not wait for them
    with_helpers = ThreadHelpers(4)
    helped = banded_resize(source, (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, with_helpers.helpers)
    with_helpers.join()
    # The bands are cut the same whoever makes them: the same bytes.
    assert banded.tobytes() == helped.tobytes()
    for late in never:
        late()  # a helper that starts after the resize finds nothing left to do


def test_helpers_are_called_only_while_image_threads_are_idle() -> None:
    source = photo_like()
    alone = ThreadHelpers(4)
    whole = banded_resize(source, (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, alone.helpers)
    alone.join()
    busy = ThreadHelpers(4, idle=1)
    banded_resize(source, (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, busy.helpers)
    busy.join()
    loaded = ThreadHelpers(4, idle=0)
    under_load = banded_resize(source, (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, loaded.helpers)
    assert (alone.spawned, busy.spawned, loaded.spawned) == (3, 1, 0)
    # Cut the same way whoever takes the bands: the same bytes, loaded or not.
    assert under_load.tobytes() == whole.tobytes()


def test_small_resizes_and_reductions_stay_whole() -> None:
    helping = ThreadHelpers(4)

    def resized(source: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
        box = (0.0, 0.0, float(source.width), float(source.height))
        return banded_resize(source, size, LANCZOS, box, 2.0, helping.helpers).size

    assert resized(photo_like((400, 300)), (200, 150)) == (200, 150)  # too few pixels to gain
    large = photo_like((2000, 1200))
    # 10:1 is reduced first by Pillow, whole; and 40 rows are too few to cut.
    assert resized(large, (200, 120)) == (200, 120)
    assert resized(large, (900, 40)) == (900, 40)
    assert helping.spawned == 0


def test_an_error_in_a_helpers_band_is_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    source = photo_like()
    calls = 0
    resize = Image.Image.resize

    def failing_off_the_main_thread(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        nonlocal calls
        calls += 1
        if threading.current_thread() is not threading.main_thread():
            raise MemoryError("a band too many")
        return resize(self, *args, **kwargs)  # type: ignore[arg-type]

    helping = ThreadHelpers(2)

    def spawn_and_finish(work: Callable[[], None]) -> None:
        # The helper takes its band before the caller starts on its own.
        helping.spawn(work)
        helping.join()

    monkeypatch.setattr(Image.Image, "resize", failing_off_the_main_thread)
    with pytest.raises(MemoryError, match="a band too many"):
        banded_resize(
            source, (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, Helpers(spawn_and_finish, 2, lambda: 1)
        )
    assert calls == 1  # after the helper's band failed, the caller took none


def test_each_thread_making_bands_keeps_to_a_core_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux wakes a helper beside the thread that woke it; kept apart, the
    two bands of a resize run on two cores, and both threads are free to
    run anywhere again afterwards."""
    process_cores = os.sched_getaffinity(0)
    cores_seen: dict[str, set[int | None]] = {}
    helper_band_started = threading.Event()
    resize = Image.Image.resize

    def noting_cores(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        who = "caller" if threading.current_thread() is threading.main_thread() else "helper"
        if who == "helper":
            helper_band_started.set()
        else:
            # The caller's band waits for the helper's: both run at once.
            assert helper_band_started.wait(timeout=10)
        seen = cores_seen.setdefault(who, set())
        seen.add(bands._current_core())
        result = resize(self, *args, **kwargs)  # type: ignore[arg-type]
        seen.add(bands._current_core())
        return result

    helping = ThreadHelpers(2)
    freed: list[set[int]] = []

    def spawn(work: Callable[[], None]) -> None:
        def helper() -> None:
            work()
            freed.append(os.sched_getaffinity(0))

        helping.spawn(helper)

    source = photo_like()
    monkeypatch.setattr(Image.Image, "resize", noting_cores)
    banded_resize(source, (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, Helpers(spawn, 2, lambda: 1))
    helping.join()
    assert set(cores_seen) == {"caller", "helper"}
    assert len(cores_seen["caller"]) == 1 and len(cores_seen["helper"]) == 1
    if len(process_cores) > 1:
        assert cores_seen["caller"].isdisjoint(cores_seen["helper"])
    else:
        assert cores_seen["caller"] == cores_seen["helper"]
    assert os.sched_getaffinity(0) == process_cores
    assert freed == [process_cores]


def test_a_resize_without_helpers_keeps_to_no_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load nobody helps: the kernel stays free to move the caller."""
    process_cores = os.sched_getaffinity(0)
    during: list[set[int]] = []
    resize = Image.Image.resize

    def noting_affinity(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        during.append(os.sched_getaffinity(0))
        return resize(self, *args, **kwargs)  # type: ignore[arg-type]

    source = photo_like()
    monkeypatch.setattr(Image.Image, "resize", noting_affinity)
    loaded = ThreadHelpers(2, idle=0)
    banded_resize(source, (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, loaded.helpers)
    assert loaded.spawned == 0
    assert during and all(cores == process_cores for cores in during)


def test_a_helper_thread_started_for_a_resize_is_never_left_on_one_core() -> None:
    """A pool starts its threads from the caller, which they take their
    cores from: even one that comes too late to make a band is free."""
    process_cores = os.sched_getaffinity(0)
    go = threading.Event()
    afterwards: list[set[int]] = []
    threads: list[threading.Thread] = []

    def spawn(work: Callable[[], None]) -> None:
        def late_helper() -> None:
            assert go.wait(timeout=10)
            work()  # finds every band made
            afterwards.append(os.sched_getaffinity(0))

        threads.append(threading.Thread(target=late_helper))
        threads[-1].start()

    banded_resize(photo_like(), (420, 236), LANCZOS, (0, 0, 943, 531), 2.0, Helpers(spawn, 2, lambda: 1))
    go.set()
    for thread in threads:
        thread.join(timeout=10)
    assert afterwards == [process_cores]
