"""Derived images in memory: when they may be served without asking the
database, and the shared removal epoch that voids them across processes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pymager_tx.adapters.cluster.epoch import SharedEpoch
from pymager_tx.app.rendition_cache import RenditionCache
from pymager_tx.core.model import DerivedRecord
from pymager_tx.ports import LocalEpoch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(image_id: str = "photo", sha256: str = "a" * 64, variant: str = "100x100.jpg") -> DerivedRecord:
    return DerivedRecord(
        image_id=image_id,
        format="jpeg",
        media_type="image/jpeg",
        width=100,
        height=100,
        byte_length=3,
        sha256=sha256,
        blob_key=f"derived/{image_id}/{sha256[:8]}/{variant}",
        created_at=datetime(2026, 11, 21, tzinfo=UTC),
        variant=variant,
    )


def cache(
    clock: Clock, epoch: LocalEpoch | SharedEpoch | None = None, max_bytes: int = 100
) -> RenditionCache:
    held = RenditionCache(max_bytes=max_bytes, max_item_bytes=40, poll_seconds=1.0, epoch=epoch, clock=clock)
    held.heard_removals(7)
    return held


KEY = ("photo", "100x100.jpg")


class TestFreshness:
    def test_an_entry_is_served_while_no_deletion_is_heard_of(self) -> None:
        clock = Clock()
        held = cache(clock)
        held.put(KEY, record(), b"abc", held.mark())
        for _ in range(10):
            clock.now += 1.0
            held.heard_removals(7)
            assert held.fresh(KEY) == (record(), b"abc")

    def test_a_deletion_on_another_machine_voids_every_entry_at_the_next_poll(self) -> None:
        held = cache(Clock())
        held.put(KEY, record(), b"abc", held.mark())
        held.heard_removals(8)
        assert held.fresh(KEY) is None

    def test_a_deletion_on_this_machine_voids_every_entry_at_once(self) -> None:
        held = cache(Clock())
        held.put(KEY, record(), b"abc", held.mark())
        held.epoch.bump()
        assert held.fresh(KEY) is None

    def test_a_deletion_during_the_check_voids_what_the_check_found(self) -> None:
        # mark() is taken before the database is asked; a deletion that
        # begins while the answer is on its way must not be hidden by it.
        held = cache(Clock())
        mark = held.mark()
        held.epoch.bump()
        held.put(KEY, record(), b"abc", mark)
        assert held.fresh(KEY) is None
        mark = held.mark()
        held.heard_removals(8)
        held.put(KEY, record(), b"abc", mark)
        assert held.fresh(KEY) is None

    def test_without_polls_entries_stop_being_served(self) -> None:
        clock = Clock()
        held = cache(clock)
        held.put(KEY, record(), b"abc", held.mark())
        clock.now += 1.9
        assert held.fresh(KEY) is not None
        clock.now += 0.1  # the last answer is two polls old: the database may be away
        assert held.fresh(KEY) is None

    def test_before_the_first_poll_nothing_is_served_from_memory(self) -> None:
        held = RenditionCache(max_bytes=100, max_item_bytes=40, poll_seconds=1.0, clock=Clock())
        held.put(KEY, record(), b"abc", held.mark())
        assert held.fresh(KEY) is None

    def test_with_no_polling_every_request_asks(self) -> None:
        held = RenditionCache(max_bytes=100, max_item_bytes=40, poll_seconds=0, clock=Clock())
        held.heard_removals(7)
        held.put(KEY, record(), b"abc", held.mark())
        assert held.fresh(KEY) is None
        assert held.confirmed(KEY, record(), held.mark()) == b"abc"

    def test_a_check_that_finds_the_same_row_serves_the_bytes_again(self) -> None:
        held = cache(Clock())
        held.put(KEY, record(), b"abc", held.mark())
        held.heard_removals(8)
        assert held.fresh(KEY) is None
        assert held.confirmed(KEY, record(), held.mark()) == b"abc"
        assert held.fresh(KEY) == (record(), b"abc")

    def test_a_check_that_finds_another_row_drops_the_entry(self) -> None:
        held = cache(Clock())
        held.put(KEY, record(), b"abc", held.mark())
        assert held.confirmed(KEY, record(sha256="b" * 64), held.mark()) is None
        assert held.size_bytes == 0
        assert held.fresh(KEY) is None


class TestBounds:
    def test_the_least_recently_used_go_first(self) -> None:
        clock = Clock()
        held = cache(clock, max_bytes=100)
        for name in ("a", "b", "c"):
            held.put((name, "v"), record(name), b"x" * 40, held.mark())
        assert held.fresh(("a", "v")) is None
        assert held.fresh(("b", "v")) is not None
        assert held.fresh(("c", "v")) is not None
        assert held.size_bytes == 80
        held.fresh(("b", "v"))  # b is now the most recently used
        held.put(("d", "v"), record("d"), b"x" * 40, held.mark())
        assert [held.fresh((name, "v")) is not None for name in "bcd"] == [True, False, True]

    def test_an_item_over_the_item_limit_is_not_kept(self) -> None:
        held = cache(Clock())
        held.put(KEY, record(), b"x" * 41, held.mark())
        assert held.fresh(KEY) is None
        assert held.size_bytes == 0

    def test_replacing_an_entry_counts_its_bytes_once(self) -> None:
        held = cache(Clock())
        held.put(KEY, record(), b"x" * 30, held.mark())
        held.put(KEY, record(sha256="b" * 64), b"y" * 20, held.mark())
        assert held.size_bytes == 20
        assert held.fresh(KEY) == (record(sha256="b" * 64), b"y" * 20)

    def test_no_bytes_no_cache(self) -> None:
        held = RenditionCache(max_bytes=0, max_item_bytes=0, poll_seconds=1.0, clock=Clock())
        held.heard_removals(0)
        held.put(KEY, record(), b"abc", held.mark())
        assert held.fresh(KEY) is None


class TestSharedEpoch:
    def test_a_bump_in_one_process_is_seen_in_another(self, tmp_path: Path) -> None:
        # Two mappings of one file, as two processes would have.
        mine, theirs = SharedEpoch.of(tmp_path), SharedEpoch.of(tmp_path)
        mine.open()
        theirs.open()
        try:
            before = mine.read()
            assert theirs.read() == before
            theirs.bump()
            assert mine.read() != before
            assert mine.read() == theirs.read()
        finally:
            mine.close()
            theirs.close()

    def test_opening_keeps_what_another_process_wrote(self, tmp_path: Path) -> None:
        first = SharedEpoch.of(tmp_path)
        first.open()
        first.bump()
        value = first.read()
        later = SharedEpoch.of(tmp_path)
        later.open()
        assert later.read() == value
        first.close()
        later.close()

    def test_before_it_is_mapped_bumps_still_count_here(self, tmp_path: Path) -> None:
        epoch = SharedEpoch.of(tmp_path)
        before = epoch.read()
        epoch.bump()
        assert epoch.read() != before
        assert not epoch.path.exists()
