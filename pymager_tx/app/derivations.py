"""
Deriving renditions: shared by everyone asking meanwhile in this process
(InFlight), elected across processes (claims), read from the working copy
of a large original where it will do, rendered on the image threads
through the admission queue, stored under the claim's token and recorded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import NamedTuple, TypeVar

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.logger import Logger

from pymager_tx.app.admission import Ticket
from pymager_tx.app.admitted import ImageWork, render_kept_target, render_target
from pymager_tx.app.api import StoredImage
from pymager_tx.app.claims import Claims, Holding, Superseded
from pymager_tx.app.inflight import InFlight
from pymager_tx.app.originals import Originals
from pymager_tx.app.values import (
    Errand,
    ImagePolicy,
    Rendition,
    Target,
    WorkingCopy,
    claimed_key,
    not_found,
)
from pymager_tx.core.errors import (
    BlobExists,
    BlobNotFound,
    DerivationTooCostly,
    Overloaded,
    PymagerError,
    StorageUnavailable,
    Unavailable,
)
from pymager_tx.core.keys import derived_prefix
from pymager_tx.core.model import DerivedRecord, DerivedSpec, ImageId, OriginalRecord
from pymager_tx.core.records import Recorded
from pymager_tx.imaging.render import Rendered, working_copy_covers, worth_a_working_copy
from pymager_tx.ports import NO_METRICS, IBlobStore, IMetadataStore, IPeers, Metrics

T = TypeVar("T")

# Working-copy rows remembered, by original and generation: later sizes find
# theirs without a transaction.  About half a kilobyte each.
WORKING_COPIES_REMEMBERED = 1024


def _releasing(result: T, ticket: Ticket) -> T:
    ticket.release()
    return result


def outcome_of(error: Exception) -> str:
    """How work that raised error is counted: "refused" when the service
    declined it (overload, an image too costly or invalid, an ID gone),
    "failed" when the database, the storage or the code failed."""
    if isinstance(error, Overloaded) or (
        isinstance(error, PymagerError) and not isinstance(error, Unavailable)
    ):
        return "refused"
    return "failed"


def _never() -> Deferred[StoredImage]:
    raise AssertionError("joined work is never started")


class _Source(NamedTuple):
    """The bytes a rendition is derived from: the key of the original or
    of its working copy, and for a working copy the original's upright size,
    which the rendition is planned on."""

    key: str
    name: str  # "original" or "working copy"
    planned_on: tuple[int, int] | None = None


class _NoWorkingCopy(Exception):
    """The original is one no working copy is made of (an animation)."""


class FocusChanged(Exception):
    """The original's focal point changed while this rendition was derived
    for the old one: it was not recorded, and is derived again from the
    original as it is now."""


def focused(original: OriginalRecord, spec: Target) -> Target:
    """spec, with the original's focal point when its mode is moved by it."""
    if isinstance(spec, DerivedSpec) and spec.mode.focused:
        return replace(spec, focus=original.focal_point)
    return spec


def _inflight_key(original: OriginalRecord, spec: Target) -> Rendition:
    """Work is shared only with requests for the same focal point."""
    variant = spec.variant
    if isinstance(spec, DerivedSpec) and spec.mode.focused:
        variant = f"{variant}@{original.focus_version}"
    return (original.image_id, original.generation, variant)


class Derivations:
    log = Logger()

    def __init__(
        self,
        database: IMetadataStore,
        blobs: IBlobStore,
        work: ImageWork,
        policy: ImagePolicy,
        clock: Callable[[], datetime],
        peers: IPeers,
        claims: Claims,
        originals: Originals,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._store = database
        self._metrics = metrics
        self._blobs = blobs
        self._work = work
        self._policy = policy
        self._clock = clock
        self._peers = peers
        self._claims = claims
        self._originals = originals
        self._inflight: InFlight[Rendition, StoredImage] = InFlight(expected=(FocusChanged,))
        # Least recently used first.  A generation's working copy is only
        # ever one row, made once; a stale entry (its file removed with the
        # original, or lost) is found when its file is read, and dropped.
        self._working: OrderedDict[tuple[str, str], DerivedRecord] = OrderedDict()

    def errand(
        self,
        arrived: float | None,
        unchanged: Callable[[], bool] | None = None,
        keep: Callable[[StoredImage], object] | None = None,
    ) -> Errand:
        """The errand of a request that arrived then (time.monotonic()).
        unchanged, keep: see Errand; unchanged None: answered once recorded,
        never before."""
        return Errand(self._policy.deadline(arrived), self._inflight.deserted, unchanged=unchanged, keep=keep)

    def settled(self) -> Deferred[None]:
        """Fires once no derivation runs in this process: every rendition
        answered early is stored and recorded (or its failure logged)."""
        return self._inflight.idle()

    def derive(self, original: OriginalRecord, spec: Target, errand: Errand) -> Deferred[StoredImage]:
        """The rendition, derived once for everyone asking meanwhile: each
        caller gets a Deferred of its own."""
        spec = focused(original, spec)
        key = _inflight_key(original, spec)
        if key in self._inflight:
            return self._inflight.run(key, _never, take_answer=errand.may_take_answer)
        # New image work: it takes its place in the queue now, or is refused
        # at once when the queue is full, before it spends a claim and more
        # lookups.  Work that is a step of a derivation under way (its
        # working copy) takes that derivation's place.
        ticket, owned = errand.ticket, False
        if ticket is None or ticket.released:
            try:
                ticket, owned = self._work.reserve(), True
            except Overloaded as refused:
                self._metrics.derivation("refused")
                return fail(refused)

        def start() -> Deferred[StoredImage]:
            work = Deferred.fromCoroutine(
                self._claims.derive(
                    original,
                    spec,
                    lambda holding: self._render_and_record(original, spec, holding, errand.of(key, ticket)),
                    lambda: self._read_recorded(original, spec),
                    # Waiting for another process's derivation takes no thread here.
                    on_peer=None if ticket is None else ticket.release,
                )
            )
            if owned and ticket is not None:
                work.addBoth(_releasing, ticket)
            return work

        return self._inflight.run(key, start)

    async def read(self, record: DerivedRecord, with_body: bool) -> StoredImage | None:
        """The rendition record describes; None if its file is gone (then
        its row is forgotten, and it is derived again when asked for)."""
        if not with_body:
            return StoredImage(record, None)
        try:
            return StoredImage(record, await self._blobs.get(record.blob_key))
        except BlobNotFound:
            self.log.warn(
                "Derived file of {image_id} {variant} is missing; deriving it again",
                image_id=record.image_id,
                variant=record.variant,
            )
            await self._store.forget_derived(record)
            return None

    async def _read_recorded(self, original: OriginalRecord, spec: Target) -> StoredImage | None:
        lookup = await self._store.lookup_derived(original.image_id, spec.variant)
        return None if lookup.derived is None else await self.read(lookup.derived, with_body=True)

    async def _render_and_record(
        self, original: OriginalRecord, spec: Target, holding: Holding, errand: Errand
    ) -> StoredImage:
        """Counted by outcome: derived from the "original" or its
        "working_copy", "refused" or "failed" (outcome_of); work another
        process finished first, and an animation's working copy not made,
        are neither."""
        started = time.perf_counter()
        try:
            stored, source = await self._derive_and_record(original, spec, holding, errand)
        except (_NoWorkingCopy, Superseded, FocusChanged, CancelledError):
            raise
        except Exception as error:
            self._metrics.derivation(outcome_of(error))
            raise
        self._metrics.derivation(source, time.perf_counter() - started)
        return stored

    async def _derive_and_record(
        self, original: OriginalRecord, spec: Target, holding: Holding, errand: Errand
    ) -> tuple[StoredImage, str]:
        image_id = ImageId(original.image_id)
        claim = holding.claim
        started = time.perf_counter()
        source = await self._source_for(original, spec, errand)
        outcome = await self._work.admitted(
            lambda: Deferred.fromCoroutine(self._read_and_render(original, source, spec, errand)), errand
        )
        if outcome is None:
            raise _NoWorkingCopy()
        if holding.lost:
            raise Superseded("its claim was taken over")
        rendered, digest, render_seconds = outcome
        key = claimed_key(claim)
        record = DerivedRecord(
            image_id=original.image_id,
            variant=spec.variant,
            format=rendered.format.name,
            media_type=rendered.format.media_type,
            width=rendered.width,
            height=rendered.height,
            byte_length=len(rendered.data),
            sha256=digest,
            blob_key=key,
            created_at=self._clock(),
            focus_version=original.focus_version
            if isinstance(spec, DerivedSpec) and spec.mode.focused
            else None,
        )
        answered = isinstance(spec, DerivedSpec) and errand.may_take_answer()
        if answered:
            # Its askers need not wait for the disk (2 of a small
            # derivation's 14 ms): storing and recording go on under the
            # claim, and whoever asks meanwhile, here or in another process,
            # waits for them as before.  Only while the original is as
            # current as a rendition held in memory must be to be served:
            # else the record decides, and a refused one is derived again.
            # (Not a working copy: the derivation that asked for it reads
            # its file next.)
            self._inflight.answer(
                _inflight_key(original, spec), StoredImage(record, rendered.data, recorded=False)
            )
        holding.stored = True  # from here, a file may stand under the claim's key
        try:
            await self._blobs.put(key, rendered.data)
        except BlobExists:
            # Another write's object under our claim's key, which the store
            # would not let us replace: never ours to remove.  The derivation
            # is lost to that write; the next claim (a new token, a new key)
            # finds the rendition recorded, or derives it again.
            holding.stored = False
            await self._claims.release(claim)
            raise Superseded("another write stored an object under its key first") from None
        except StorageUnavailable:
            # Storing can fail because a deletion of the original is taking
            # the directories away: then the answer is 404, not an error.
            if not await self._originals.still_current(original):
                raise not_found(image_id) from None
            raise
        try:
            recorded = await self._store.record_derived(record, original.generation, claim)
        except Exception:
            holding.stored = False  # it may have been recorded: never remove it on a guess
            raise
        if recorded is Recorded.STALE:
            # Claims._hold removes our file and ends the claim.
            raise FocusChanged(
                f"the focal point of {original.image_id} changed while {spec.variant} was derived"
            )
        if recorded is not Recorded.RECORDED:
            await self._refused(original, holding, recorded)
        holding.stored = False
        self._log_derived(original, spec, record, source.name, render_seconds, started)
        stored = StoredImage(record, rendered.data)
        if answered:
            errand.recorded(stored)
        return stored, source.name.replace(" ", "_")

    async def _refused(self, original: OriginalRecord, holding: Holding, recorded: Recorded) -> None:
        """After a record was refused: no row names our file, and none ever
        will (only our claim's token does).  The claim, if still ours, ends
        only once the file is gone, so a crash in between leaves it for
        recovery to find.  Raises what the caller hears."""
        if not await self._claims.discard_stored(holding):
            raise StorageUnavailable(
                "the image storage is failing; try again later",
                f"could not remove {claimed_key(holding.claim)}",
            )
        image_id = ImageId(original.image_id)
        if recorded is Recorded.GONE:
            # Deleted while this was derived; the generation's directory
            # goes too, if the deletion already emptied it.
            await self._blobs.delete_prefix(derived_prefix(image_id, original.generation))
        if recorded is not Recorded.LOST:
            await self._claims.release(holding.claim)
        if recorded is Recorded.GONE:
            raise not_found(image_id)
        raise Superseded(
            "its claim was taken over" if recorded is Recorded.LOST else "another process recorded it first"
        )

    def _log_derived(
        self,
        original: OriginalRecord,
        spec: Target,
        record: DerivedRecord,
        source_name: str,
        render_seconds: float,
        started: float,
    ) -> None:
        if isinstance(spec, WorkingCopy):
            self.log.info(
                "Made the working copy of {image_id}: {width}x{height}, {byte_length} bytes, "
                "in {render_seconds:.3f}s",
                image_id=original.image_id,
                width=record.width,
                height=record.height,
                byte_length=record.byte_length,
                render_seconds=render_seconds,
            )
            return
        self.log.info(
            "Derived {derived_id} ({byte_length} bytes) from the {source}: "
            "rendered in {render_seconds:.3f}s, {seconds:.3f}s in all",
            source=source_name,
            derived_id=f"{original.image_id}-{spec.variant}",
            image_id=original.image_id,
            variant=spec.variant,
            byte_length=record.byte_length,
            render_seconds=render_seconds,
            seconds=time.perf_counter() - started,
            owner=self._peers.me,
        )

    async def _source_for(self, original: OriginalRecord, spec: Target, errand: Errand) -> _Source:
        """The key of the bytes to derive spec from: the original's working
        copy where it will do as well, else the original itself.  A key, not
        the bytes: they are read once an image thread is free for them."""
        if isinstance(spec, DerivedSpec) and worth_a_working_copy(
            original.width, original.height, self._policy.allowed_sizes
        ):
            working = await self._working_copy(original, errand)
            if working is not None and working_copy_covers(
                working.width, working.height, original.width, original.height, spec
            ):
                return _Source(working.blob_key, "working copy", (original.width, original.height))
        return _Source(original.blob_key, "original")

    async def _read_and_render(
        self, original: OriginalRecord, source: _Source, spec: Target, errand: Errand
    ) -> tuple[Rendered, str, float] | None:
        if isinstance(spec, DerivedSpec):  # a working copy is made from the bytes
            rendered = await self._render_kept(original, source, spec, errand)
            if rendered is not None:
                return rendered
        limits, encoding = self._policy.limits, self._policy.encoding
        planned_on, key, data = await self._read_source(original, source)
        deadline, shortened = self._render_deadline(errand)
        return await self._in_time(
            original,
            spec,
            shortened,
            self._work.offload(
                render_target, data, spec, limits, encoding, deadline, planned_on, self._work.shared(key)
            ),
        )

    async def _render_kept(
        self, original: OriginalRecord, source: _Source, spec: DerivedSpec, errand: Errand
    ) -> tuple[Rendered, str, float] | None:
        """spec from its source decoded lately (an upload's check, an
        earlier size), without its bytes read or their header parsed
        again; None if it is not kept at the scale spec needs."""
        encoding = self._policy.encoding
        kept = self._work.kept(source.key, spec, encoding, source.planned_on)
        if kept is None:
            return None
        deadline, shortened = self._render_deadline(errand)
        return await self._in_time(
            original,
            spec,
            shortened,
            self._work.offload(render_kept_target, spec, encoding, deadline, source.planned_on, kept),
        )

    def _render_deadline(self, errand: Errand) -> tuple[float | None, bool]:
        """When a render starting now must end, and whether its budget was
        shortened by waiting (for a thread, for the bytes) before it."""
        budget = self._policy.limits.time_budget
        deadline, shortened = errand.deadline, False
        if budget is not None:
            if deadline is None:
                deadline = time.monotonic() + budget
            else:
                # Counted from the request's arrival: was the budget spent
                # waiting for a thread?
                shortened = deadline - time.monotonic() < budget * 0.95
        return deadline, shortened

    async def _in_time(
        self, original: OriginalRecord, spec: Target, shortened: bool, rendering: Deferred[T]
    ) -> T:
        try:
            return await rendering
        except DerivationTooCostly:
            if shortened:
                # It waited for a thread first: not the image's fault alone.
                raise Overloaded(
                    "the server was too busy to finish this image in time; try again shortly",
                    f"{original.image_id} {spec.variant} ran out of time after queueing",
                ) from None
            raise

    async def _read_source(
        self, original: OriginalRecord, source: _Source
    ) -> tuple[tuple[int, int] | None, str, bytes]:
        """The bytes of source, or of the original where its working copy
        is missing (then planned on nothing): planned_on, key and bytes."""
        try:
            return source.planned_on, source.key, await self._blobs.get(source.key)
        except BlobNotFound:
            if source.key == original.blob_key:
                raise await self._originals.missing(original) from None
        self.log.warn(
            "The working copy of {image_id} is missing; deriving from the original",
            image_id=original.image_id,
        )
        self._working.pop((original.image_id, original.generation), None)
        await self._store.forget_derived_key(source.key)
        try:
            return None, original.blob_key, await self._blobs.get(original.blob_key)
        except BlobNotFound:
            raise await self._originals.missing(original) from None

    async def _working_copy(self, original: OriginalRecord, errand: Errand) -> DerivedRecord | None:
        key = (original.image_id, original.generation)
        known = self._working.get(key)
        if known is not None:
            self._working.move_to_end(key)
            return known
        target = WorkingCopy(self._policy.allowed_sizes)
        lookup = await self._store.lookup_derived(original.image_id, target.variant)
        record = lookup.derived
        if record is None:
            try:
                made = await self.derive(original, target, errand)
            except _NoWorkingCopy:
                return None  # an animation: derived from the original, frame by frame
            assert isinstance(made.record, DerivedRecord)
            record = made.record
        elif lookup.original is None or lookup.original.generation != original.generation:
            return record  # the ID was replaced meanwhile: this derivation's record is refused
        self._working[key] = record
        while len(self._working) > WORKING_COPIES_REMEMBERED:
            self._working.popitem(last=False)
        return record
