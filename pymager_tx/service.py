"""
The use cases: store, fetch, derive and delete images.  Nothing here knows HTTP.

Consistency rests on the order of steps, so that a crash between any two
leaves something start-up recovery can finish:

- upload: claim the ID with a pending row, store the file, mark the row ready;
- delete: mark the row deleting, remove the files, remove the row;
- derive: claim the rendition, store the file, then record its row (and end
  the claim) only while the original (that very upload, by generation) is
  still ready.

Readers see only ready originals, and a derived file belongs to one upload's
generation, so a re-upload under a deleted ID never meets an old file.

Several processes may share the database and storage.  In one process,
concurrent requests for a rendition share one derivation (InFlight); across
processes, a claim row with a lease elects the one that derives, and the
others wait for its row.  Pending uploads and claims name their owner, so
recovery finishes only what dead processes left.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar
from uuid import uuid4

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymager_tx.admission import ImageAdmission
from pymager_tx.db.database import Database
from pymager_tx.db.repository import (
    Claim,
    ClaimOutcome,
    Recorded,
    Removal,
    RowState,
    abandon_upload_txn,
    begin_removal_txn,
    claim_derivation_txn,
    claim_original_txn,
    claims_txn,
    find_original_txn,
    forget_derived_key_txn,
    forget_derived_txn,
    forget_lost_original_txn,
    forget_original_txn,
    lookup_derived_txn,
    mark_original_ready_txn,
    names_blob_txn,
    ping_txn,
    record_derived_txn,
    release_claim_txn,
    removal_count_txn,
    renew_claim_txn,
    resume_removal_txn,
    row_state_txn,
    take_over_claim_txn,
    unfinished_txn,
)
from pymager_tx.errors import (
    BlobNotFound,
    DerivationPending,
    DerivationTooCostly,
    ImageIdTaken,
    ImageNotFound,
    InvalidImage,
    OriginalLost,
    Overloaded,
    PymagerError,
    SizeNotAllowed,
    StorageUnavailable,
    Unavailable,
    UnsupportedOutputFormat,
    UploadTooLarge,
)
from pymager_tx.formats import output_format_for, writable_extensions
from pymager_tx.imaging import (
    DecodeLimits,
    EncodeOptions,
    ImageInfo,
    Rendered,
    make_working_copy,
    probe,
    render,
    working_copy_covers,
    worth_a_working_copy,
)
from pymager_tx.inflight import InFlight
from pymager_tx.model import (
    DerivedRecord,
    DerivedSpec,
    ImageId,
    OriginalRecord,
    OriginalStatus,
    Size,
    StoredFile,
    parse_derived_name,
)
from pymager_tx.peers import POLL_FIRST, POLL_MOST, Peers
from pymager_tx.refusals import RecentRefusals
from pymager_tx.rendition_cache import Mark, RenditionCache
from pymager_tx.storage import IBlobReader, IBlobStore
from pymager_tx.storage.keys import derived_key, derived_prefix, original_key
from pymager_tx.threads import Offload


@dataclass(frozen=True)
class ImagePolicy:
    allowed_sizes: frozenset[Size]
    max_upload_bytes: int
    limits: DecodeLimits
    encoding: EncodeOptions


@dataclass(frozen=True)
class WorkingCopy:
    """The reduced copy of a large original that later sizes are derived
    from, so that each original is decoded in full once, not once per size.
    Stored and claimed like any rendition, under a variant no URL names."""

    sizes: frozenset[Size]
    variant: str = "working"


Target = DerivedSpec | WorkingCopy


@dataclass(frozen=True)
class StoredImage:
    """An original or derived image as served: its record, and its bytes
    unless only the metadata was asked for (HEAD), or unless they are too
    many to hold: then an open reader to send them from, a part at a time."""

    record: StoredFile
    data: bytes | None
    # For a derived image read without its bytes: when its row was checked,
    # so that the bytes, once read, may be kept in memory.
    checked: Mark | None = None
    reader: IBlobReader | None = None


T = TypeVar("T")
# Seconds a derivation may take when the policy sets no time budget.
_DEFAULT_BUDGET = 20.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ImageService:
    log = Logger()

    def __init__(
        self,
        database: Database,
        blobs: IBlobStore,
        imaging: Offload,
        policy: ImagePolicy,
        clock: Callable[[], datetime] = _utcnow,
        peers: Peers | None = None,
        cache: RenditionCache | None = None,
        refusals: RecentRefusals | None = None,
        admission: ImageAdmission | None = None,
    ) -> None:
        """admission: the bounded queue in front of the image threads; None:
        image work goes straight to imaging, unbounded (tests, the CLI)."""
        self._database = database
        self._blobs = blobs
        self._imaging = imaging
        self.policy = policy
        self._clock = clock
        self._peers = peers or Peers.alone()
        self._cache = cache or RenditionCache(max_bytes=0, max_item_bytes=0, poll_seconds=0)
        self._refusals = refusals if refusals is not None else RecentRefusals()
        self._admission = admission
        # Generations of the uploads this process is carrying out right now,
        # registered before their pending row exists: a pending row of ours
        # whose generation is not here was abandoned.
        self._uploading: set[str] = set()
        self._derivations: InFlight[tuple[str, str, str], StoredImage] = InFlight()

    # Originals

    async def store_original(
        self, image_id: ImageId, data: bytes, arrived: float | None = None
    ) -> OriginalRecord:
        if len(data) > self.policy.max_upload_bytes:
            raise UploadTooLarge(
                f"the image is {len(data)} bytes; the limit is {self.policy.max_upload_bytes}"
            )
        # Cheap early answer for the common conflict; the claim below decides.
        state = await self._database.read(row_state_txn, image_id.value)
        if state is not None:
            if state.status is OriginalStatus.DELETING:
                # A deletion that failed half-way: finish it, then take the ID.
                await self._resume_removal(state)
            elif state.status is OriginalStatus.PENDING:
                await self._take_over_abandoned_upload(state)
            else:
                raise _taken(image_id)
        info, digest = await self._admitted(
            lambda: self._imaging(_describe, data, self.policy.limits), _Errand(self._deadline(arrived))
        )
        generation = uuid4().hex
        record = OriginalRecord(
            image_id=image_id.value,
            generation=generation,
            status=OriginalStatus.PENDING,
            format=info.format.name,
            media_type=info.format.media_type,
            width=info.width,
            height=info.height,
            byte_length=len(data),
            sha256=digest,
            blob_key=original_key(image_id, generation),
            created_at=self._clock(),
        )
        self._uploading.add(generation)
        try:
            await self._database.transact(claim_original_txn, record, self._peers.me)
            try:
                await self._blobs.put(record.blob_key, data)
                ready_at = self._clock()
                if not await self._database.transact(
                    mark_original_ready_txn, record.image_id, generation, ready_at
                ):
                    raise RuntimeError(f"the pending row of {record.image_id!r} vanished before it was ready")
            except BaseException:
                await self._abandon(record)
                raise
        finally:
            self._uploading.discard(generation)
        self.log.info(
            "Stored original {image_id}: {image_format} {width}x{height}, {byte_length} bytes",
            image_id=record.image_id,
            image_format=record.format,
            width=record.width,
            height=record.height,
            byte_length=record.byte_length,
        )
        return replace(record, status=OriginalStatus.READY, created_at=ready_at)

    async def fetch_original(self, image_id: ImageId, with_body: bool = True) -> StoredImage:
        record = await self._database.read(find_original_txn, image_id.value)
        if record is None:
            raise _not_found(image_id)
        stored = StoredImage(record, None)
        return await self.load_original(stored) if with_body else stored

    async def load_original(self, stored: StoredImage, whole_up_to: int | None = None) -> StoredImage:
        """stored, with the bytes of the original it describes; past
        whole_up_to bytes, with a reader of them instead."""
        record = stored.record
        assert isinstance(record, OriginalRecord)
        try:
            if whole_up_to is not None and record.byte_length > whole_up_to:
                return StoredImage(record, None, reader=await self._blobs.open(record.blob_key))
            return StoredImage(record, await self._blobs.get(record.blob_key))
        except BlobNotFound:
            raise await self._missing(record) from None

    async def confirm_original(self, stored: StoredImage) -> None:
        """Fail as load_original would if the original's file is gone, without
        reading it: for answers that send no bytes (HEAD, 304)."""
        record = stored.record
        assert isinstance(record, OriginalRecord)
        try:
            # Opened, not just looked up: it fails as reading it would.
            reader = await self._blobs.open(record.blob_key)
        except BlobNotFound:
            raise await self._missing(record) from None
        await reader.close()

    async def _missing(self, original: OriginalRecord) -> PymagerError:
        """The error for an original whose file was not found: deleted since
        its row was read (404), or lost from storage (an operator's matter,
        logged as an error; pymager-admin check reports it too)."""
        if not await self._still_current(original):
            return _not_found(ImageId(original.image_id))
        self.log.error(
            "The file of original {image_id} is lost ({blob_key}); "
            "`pymager-admin check` reports it, `--repair` forgets the original",
            image_id=original.image_id,
            blob_key=original.blob_key,
        )
        return OriginalLost(
            f"the original stored under the ID {original.image_id!r} is lost from storage; "
            "the operator has been told"
        )

    async def delete_original(self, image_id: ImageId) -> None:
        removal = await self._database.transact(begin_removal_txn, image_id.value, self._clock())
        if removal is None:
            raise _not_found(image_id)
        await self._remove(removal)
        self.log.info(
            "Deleted original {image_id} and {derived_count} derived images",
            image_id=image_id.value,
            derived_count=len(removal.derived_keys),
        )

    # Derived images

    def derived_request(self, name: str) -> tuple[ImageId, DerivedSpec]:
        """Check a derived name in the original service's order: a name that
        does not parse, then the format, then the size."""
        parsed = parse_derived_name(name)
        output = output_format_for(parsed.extension)
        if output is None:
            raise UnsupportedOutputFormat(
                f"cannot write {parsed.extension!r} images; "
                f"supported: {', '.join(sorted(writable_extensions()))}"
            )
        if parsed.size not in self.policy.allowed_sizes:
            raise SizeNotAllowed(
                f"the size {parsed.size} is not allowed; "
                f"allowed: {', '.join(str(size) for size in sorted(self.policy.allowed_sizes))}"
            )
        return parsed.image_id, DerivedSpec(parsed.size, output, parsed.mode)

    async def fetch_derived(
        self, image_id: ImageId, spec: DerivedSpec, with_body: bool = True, arrived: float | None = None
    ) -> StoredImage:
        """The derived image, derived first if need be.  arrived: when the
        request came (time.monotonic()); the time budget counts from then,
        time spent queueing for an image thread included."""
        key = (image_id.value, spec.variant)
        held = self._cache.fresh(key)
        if held is not None:
            return StoredImage(*held)
        mark = self._cache.mark()
        lookup = await self._database.read(lookup_derived_txn, image_id.value, spec.variant)
        original = lookup.original
        if original is None:
            raise _not_found(image_id)
        if lookup.derived is not None:
            data = self._cache.confirmed(key, lookup.derived, mark)
            if data is not None:
                return StoredImage(lookup.derived, data)
            stored = await self._read_derived(lookup.derived, with_body)
            if stored is not None:
                return self._remember(stored, mark)
        rendition = (original.image_id, original.generation, spec.variant)
        refused = self._refusals.recall(rendition)
        if refused is not None:
            raise refused
        # Everyone asking for this rendition of this upload meanwhile shares
        # one derivation, and each gets a Deferred of its own.
        errand = _Errand(self._deadline(arrived), self._derivations.deserted)
        try:
            stored = await self._derivations.run(
                rendition, lambda: Deferred.fromCoroutine(self._derive(original, spec, errand.of(rendition)))
            )
        except (InvalidImage, DerivationTooCostly) as error:
            # Refused for what the source is: it would be refused again.
            self._refusals.remember(rendition, error)
            raise
        return self._remember(stored, mark)

    async def load_derived(
        self, image_id: ImageId, spec: DerivedSpec, stored: StoredImage, whole_up_to: int | None = None
    ) -> StoredImage:
        """stored, with the bytes of the derived image it describes (derived
        again if its file went missing); past whole_up_to bytes, and too
        large to keep in memory, with a reader of them instead."""
        if stored.data is not None:
            return stored
        assert isinstance(stored.record, DerivedRecord)
        if whole_up_to is not None and stored.record.byte_length > max(
            whole_up_to, self._cache.max_item_bytes
        ):
            try:
                return replace(stored, reader=await self._blobs.open(stored.record.blob_key))
            except BlobNotFound:
                pass  # read below, which derives it again
        loaded = await self._read_derived(stored.record, with_body=True)
        if loaded is None:
            return await self.fetch_derived(image_id, spec)
        return loaded if stored.checked is None else self._remember(loaded, stored.checked)

    def _remember(self, stored: StoredImage, checked: Mark) -> StoredImage:
        """stored, kept in memory if it has its bytes; else marked with when
        it was checked, for load_derived to keep it once it has them."""
        record = stored.record
        assert isinstance(record, DerivedRecord)
        if stored.data is None:
            return replace(stored, checked=checked)
        self._cache.put((record.image_id, record.variant), record, stored.data, checked)
        return stored

    async def poll_removals(self) -> None:
        """Learn of deletions made by processes on other machines, so that
        no derived image held in memory outlives one for long."""
        try:
            self._cache.heard_removals(await self._database.read(removal_count_txn))
        except Unavailable as error:
            # Held images stop being served after a few missed polls.
            self.log.warn("Cannot poll for deletions: {reason}", reason=error.reason)
        except Exception:
            self.log.failure("Cannot poll for deletions")

    async def _still_current(self, original: OriginalRecord) -> bool:
        current = await self._database.read(find_original_txn, original.image_id)
        return current is not None and current.generation == original.generation

    async def _read_derived(self, record: DerivedRecord, with_body: bool) -> StoredImage | None:
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
            await self._database.transact(forget_derived_txn, record)
            return None

    def _deadline(self, arrived: float | None) -> float | None:
        budget = self.policy.limits.time_budget
        return None if arrived is None or budget is None else arrived + budget

    async def _admitted(self, work: Callable[[], Deferred[T]], errand: _Errand) -> T:
        """work(), once an image thread is free for it (see admission)."""
        if self._admission is None:
            return await work()
        wait = None if errand.deadline is None else errand.deadline - time.monotonic()
        return await self._admission.run(work, wait, errand.deserted_now)

    async def _derive(self, original: OriginalRecord, spec: Target, errand: _Errand) -> StoredImage:
        """The rendition, derived here or by whichever process claimed it."""
        image_id = ImageId(original.image_id)
        delay = POLL_FIRST
        give_up_at: float | None = None
        while True:
            outcome, claim = await self._database.transact(
                claim_derivation_txn,
                original.image_id,
                spec.variant,
                original.generation,
                self._peers.me,
                uuid4().hex,
                self._peers.lease,
            )
            if outcome is ClaimOutcome.GONE:
                raise _not_found(image_id)
            if outcome is ClaimOutcome.CLAIMED:
                assert claim is not None
                derived = await self._derive_claimed(original, spec, claim, errand)
                if derived is not None:
                    return derived
                continue  # our claim was taken over: wait for its new holder
            if outcome is ClaimOutcome.DONE:
                # Derived meanwhile, here or elsewhere.  If its file is gone
                # after all, its row is forgotten and the next claim wins.
                lookup = await self._database.read(lookup_derived_txn, original.image_id, spec.variant)
                if lookup.derived is not None:
                    stored = await self._read_derived(lookup.derived, with_body=True)
                    if stored is not None:
                        return stored
                continue
            if claim is None:
                continue  # released meanwhile
            if not await self._peers.alive(claim.owner):
                await self._settle(claim)
                continue
            # A live peer is deriving it: look again soon, then less often,
            # for as long as a derivation may take, then answer all the same.
            timer = self._peers.timer
            assert timer is not None, "a live peer holds a claim, but this process has no peers"
            if give_up_at is None:
                give_up_at = timer.seconds() + self._hold_limit
            elif timer.seconds() >= give_up_at:
                raise DerivationPending(
                    f"another process is still deriving {original.image_id}-{spec.variant}; try again later",
                    f"{claim.owner} has held the claim on {original.image_id} {spec.variant} "
                    f"for over {self._hold_limit:.0f}s",
                )
            await deferLater(timer, delay)
            delay = min(delay * 2, POLL_MOST)

    @property
    def _hold_limit(self) -> float:
        """Seconds a holder renews a claim, and a waiter waits for one: twice
        the time a derivation may take, for its reads and writes."""
        return 2 * (self.policy.limits.time_budget or _DEFAULT_BUDGET)

    async def _derive_claimed(
        self, original: OriginalRecord, spec: Target, claim: Claim, errand: _Errand
    ) -> StoredImage | None:
        """Derive a rendition this process has claimed, renewing the claim
        while the work takes, and end the claim either way; None if the
        claim was lost meanwhile (its lease ran out and a peer took it)."""
        holding = _Holding(claim)
        renewal = None
        timer = self._peers.timer
        if timer is not None:
            holding.since = timer.seconds()
            renewal = LoopingCall(self._renew_claim, holding, timer)
            renewal.clock = timer
            renewal.start(self._peers.lease.total_seconds() / 3, now=False)
        try:
            return await self._render_and_record(original, spec, holding, errand)
        except _Superseded as superseded:
            self.log.info(
                "Gave up deriving {image_id} {variant} here: {reason}",
                image_id=original.image_id,
                variant=spec.variant,
                reason=str(superseded),
            )
            return None
        except Exception:
            # Not on GeneratorExit: a coroutine being garbage-collected can
            # no longer wait for a transaction; the lease then runs out.
            if await self._discard_stored(holding):
                await self._database.transact(release_claim_txn, claim)
            raise
        finally:
            if renewal is not None and renewal.running:
                renewal.stop()

    async def _discard_stored(self, holding: _Holding) -> bool:
        """Remove the file a failed derivation stored under its claim, which
        no row names; False if it is still there, and then the claim must
        stay, to lead recovery to it should this process die."""
        if not holding.stored:
            return True
        try:
            await self._blobs.delete(claimed_key(holding.claim))
        except Exception as error:
            self.log.warn(
                "Could not remove the unrecorded rendition of {image_id} {variant}; its claim stays: "
                "{reason}",
                image_id=holding.claim.image_id,
                variant=holding.claim.variant,
                reason=str(error),
            )
            return False
        holding.stored = False
        return True

    def _renew_claim(self, holding: _Holding, timer: IReactorTime) -> Deferred[None] | None:
        """Extend a claim while its work goes on, but not for ever: a holder
        stuck (in I/O, say) past the hold limit lets its claim lapse, so a
        peer takes the derivation over."""
        claim = holding.claim
        if holding.lost or holding.expired:
            return None
        if timer.seconds() - holding.since > self._hold_limit:
            holding.expired = True
            self.log.warn(
                "Still deriving {image_id} {variant} after {seconds:.0f}s: letting the claim lapse",
                image_id=claim.image_id,
                variant=claim.variant,
                seconds=self._hold_limit,
            )
            return None

        def renewed(still_held: bool) -> None:
            if not still_held:
                holding.lost = True

        def failed(failure: Failure) -> None:
            # Not a reason to stop: the next renewal may work, and a claim
            # that lapses meanwhile fences this holder from recording.
            self.log.warn(
                "Could not renew the claim on {image_id} {variant}: {reason}",
                image_id=claim.image_id,
                variant=claim.variant,
                reason=failure.getErrorMessage(),
            )

        return self._database.transact(renew_claim_txn, claim, self._peers.lease).addCallbacks(
            renewed, failed
        )

    async def _render_and_record(
        self, original: OriginalRecord, spec: Target, holding: _Holding, errand: _Errand
    ) -> StoredImage:
        image_id = ImageId(original.image_id)
        claim = holding.claim
        started = time.perf_counter()
        source_key, source_name = await self._source_for(original, spec, errand)
        outcome = await self._admitted(
            lambda: Deferred.fromCoroutine(self._read_and_render(original, source_key, spec, errand)), errand
        )
        if outcome is None:
            raise _NoWorkingCopy()
        if holding.lost:
            raise _Superseded("its claim was taken over")
        rendered, digest, render_seconds = outcome
        key = claimed_key(claim)
        holding.stored = True  # from here, a file may stand under the claim's key
        try:
            await self._blobs.put(key, rendered.data)
        except StorageUnavailable:
            # Storing can fail because a deletion of the original is taking
            # the directories away: then the answer is 404, not an error.
            if not await self._still_current(original):
                raise _not_found(image_id) from None
            raise
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
        )
        try:
            recorded = await self._database.transact(record_derived_txn, record, original.generation, claim)
        except Exception:
            holding.stored = False  # it may have been recorded: never remove it on a guess
            raise
        if recorded is Recorded.RECORDED:
            holding.stored = False
        else:
            # No row names our file, and none ever will: only our claim's
            # token does.  The claim (if still ours) ends only once the file
            # is gone, so a crash in between leaves it for recovery to find.
            if not await self._discard_stored(holding):
                raise StorageUnavailable(
                    "the image storage is failing; try again later", f"could not remove {key}"
                )
            if recorded is Recorded.GONE:
                # Deleted while this was derived; the generation's directory
                # goes too, if the deletion already emptied it.
                await self._blobs.delete_prefix(derived_prefix(image_id, original.generation))
            if recorded is not Recorded.LOST:
                await self._database.transact(release_claim_txn, claim)
            if recorded is Recorded.GONE:
                raise _not_found(image_id)
            raise _Superseded(
                "its claim was taken over"
                if recorded is Recorded.LOST
                else "another process recorded it first"
            )
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
        else:
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
        return StoredImage(record, rendered.data)

    async def _source_for(self, original: OriginalRecord, spec: Target, errand: _Errand) -> tuple[str, str]:
        """The key of the bytes to derive spec from: the original's working
        copy where it will do as well, else the original itself.  A key, not
        the bytes: they are read once an image thread is free for them."""
        if isinstance(spec, DerivedSpec) and worth_a_working_copy(
            original.width, original.height, self.policy.allowed_sizes
        ):
            working = await self._working_copy(original, errand)
            if working is not None and working_copy_covers(
                working.width, working.height, original.width, original.height, spec
            ):
                return working.blob_key, "working copy"
        return original.blob_key, "original"

    async def _read_and_render(
        self, original: OriginalRecord, source_key: str, spec: Target, errand: _Errand
    ) -> tuple[Rendered, str, float] | None:
        try:
            source = await self._blobs.get(source_key)
        except BlobNotFound:
            if source_key == original.blob_key:
                raise await self._missing(original) from None
            self.log.warn(
                "The working copy of {image_id} is missing; deriving from the original",
                image_id=original.image_id,
            )
            await self._database.transact(forget_derived_key_txn, source_key)
            try:
                source = await self._blobs.get(original.blob_key)
            except BlobNotFound:
                raise await self._missing(original) from None
        budget = self.policy.limits.time_budget
        deadline, shortened = errand.deadline, False
        if budget is not None:
            if deadline is None:
                deadline = time.monotonic() + budget
            else:
                # Counted from the request's arrival: was the budget spent
                # waiting for a thread?
                shortened = deadline - time.monotonic() < budget * 0.95
        limits, encoding = self.policy.limits, self.policy.encoding
        try:
            return await self._imaging(_render, source, spec, limits, encoding, deadline)
        except DerivationTooCostly:
            if shortened:
                # It waited for a thread first: not the image's fault alone.
                raise Overloaded(
                    "the server was too busy to finish this image in time; try again shortly",
                    f"{original.image_id} {spec.variant} ran out of time after queueing",
                ) from None
            raise

    async def _working_copy(self, original: OriginalRecord, errand: _Errand) -> DerivedRecord | None:
        target = WorkingCopy(self.policy.allowed_sizes)
        lookup = await self._database.read(lookup_derived_txn, original.image_id, target.variant)
        if lookup.derived is not None:
            return lookup.derived
        key = (original.image_id, original.generation, target.variant)
        try:
            made = await self._derivations.run(
                key, lambda: Deferred.fromCoroutine(self._derive(original, target, errand.of(key)))
            )
        except _NoWorkingCopy:
            return None  # an animation: derived from the original, frame by frame
        assert isinstance(made.record, DerivedRecord)
        return made.record

    async def check_health(self) -> None:
        """Fails unless the metadata database answers a query."""
        await self._database.read(ping_txn)

    def image_load(self) -> dict[str, object] | None:
        """How busy the image threads are, and whether new work would be
        refused (for health answers); None without admission control."""
        if self._admission is None:
            return None
        return {**self._admission.describe(), "full": self._admission.full}

    # Start-up and removal

    async def recover(self) -> None:
        """Finish what crashed processes left: unfinished writes in storage,
        uploads and deletions that never completed, and derivations stored
        but never recorded.  What live peers hold is left to them, and every
        step is conditional on the row being as it was read, so an upload a
        peer finishes meanwhile is never taken for an interrupted one."""
        await self._blobs.recover()
        for state in await self._database.read(unfinished_txn):
            if state.status is OriginalStatus.PENDING:
                if await self._peers.alive(state.owner):
                    continue
                removal = await self._database.transact(
                    abandon_upload_txn, state.image_id, state.generation, self._clock()
                )
            else:
                removal = await self._database.transact(resume_removal_txn, state.image_id, state.generation)
            if removal is None:
                continue  # finished or changed meanwhile: not ours to touch
            self.log.info(
                "Finishing interrupted {status} of {image_id}",
                status="upload" if state.status is OriginalStatus.PENDING else "deletion",
                image_id=state.image_id,
                generation=state.generation,
            )
            await self._remove(removal)
        for claim in await self._database.read(claims_txn):
            if not await self._peers.alive(claim.owner):
                await self._settle(claim)

    async def forget_lost_original(self, image_id: ImageId, generation: str) -> bool:
        """Forget this upload, whose file is lost, so that its ID can be
        uploaded again; False if it is not that ready upload any more."""
        removal = await self._database.transact(
            forget_lost_original_txn, image_id.value, generation, self._clock()
        )
        if removal is None:
            return False
        await self._remove(removal)
        return True

    async def _settle(self, claim: Claim) -> None:
        """End the claim of a dead process, and remove the file it may have
        stored without recording it.  The claim is made ours first, keeping
        its token, and ends only once the file is gone: if this process dies
        in between, whoever settles the claim next removes the file."""
        if not await self._database.transact(take_over_claim_txn, claim, self._peers.me, self._peers.lease):
            return  # someone else settled it, or took it over
        self.log.info(
            "Ending the claim of {owner}, which is gone, on {image_id} {variant}",
            image_id=claim.image_id,
            variant=claim.variant,
            owner=claim.owner,
        )
        key = claimed_key(claim)
        # Only the claim's holder could record this file, and it is dead; a
        # row naming it would be one recorded before tokens existed.
        if not await self._database.read(names_blob_txn, key):
            await self._blobs.delete(key)
        await self._database.transact(release_claim_txn, replace(claim, owner=self._peers.me))

    async def _take_over_abandoned_upload(self, state: RowState) -> None:
        """Clear the pending row of an upload nobody is carrying out any
        more (its process died, or its own clean-up failed here while the
        database was away), or refuse: the ID is being uploaded."""
        image_id = ImageId(state.image_id)
        if state.owner == self._peers.me:
            abandoned = state.generation not in self._uploading
        else:
            abandoned = not await self._peers.alive(state.owner)
        if not abandoned:
            raise _taken(image_id)
        # What was read may be stale by now (the upload may have finished
        # since): take the row over only if it is still that pending upload.
        taken_over = await self._database.transact(
            abandon_upload_txn, state.image_id, state.generation, self._clock()
        )
        if taken_over is None:
            raise _taken(image_id)
        self.log.info("Clearing the abandoned upload of {image_id}", image_id=state.image_id)
        await self._remove(taken_over)

    async def _resume_removal(self, state: RowState) -> None:
        """Finish the interrupted deletion read in state, if the row is still
        that deletion; an upload finished under the ID meanwhile is kept
        (and then refuses this one when it claims the ID)."""
        removal = await self._database.transact(resume_removal_txn, state.image_id, state.generation)
        if removal is not None:
            await self._remove(removal)

    async def _abandon(self, record: OriginalRecord) -> None:
        """Undo a claimed upload that failed; recovery retries if this fails too."""
        try:
            # The file first: it is this upload's alone, never acknowledged,
            # and it goes even when the database is what failed.
            await self._blobs.delete(record.blob_key)
            removal = await self._database.transact(
                abandon_upload_txn, record.image_id, record.generation, self._clock()
            )
            if removal is not None:
                await self._remove(removal)
        except Exception:
            self.log.failure("Could not clean up the failed upload of {image_id}", image_id=record.image_id)

    async def _remove(self, removal: Removal) -> None:
        """Remove the files of an upload whose row is marked deleting, then
        the row.  Every key removed belongs to that upload's generation."""
        # The row is hidden already; from here no process may serve this
        # image's renditions from memory without asking the database again.
        self._cache.epoch.bump()
        original = removal.original
        image_id = ImageId(original.image_id)
        await self._blobs.delete(original.blob_key)
        for key in removal.derived_keys:
            await self._blobs.delete(key)
        await self._blobs.delete_prefix(derived_prefix(image_id, original.generation))
        await self._database.transact(forget_original_txn, original.image_id, original.generation)


def claimed_key(claim: Claim) -> str:
    """The file the holder of claim writes (see storage.keys.derived_key)."""
    return derived_key(ImageId(claim.image_id), claim.generation, claim.variant, claim.token)


class _Errand:
    """What one request's derivation carries down to its image work: when it
    must be done by, and how it hears that nobody waits for it any more."""

    def __init__(
        self, deadline: float | None, deserted: Callable[[tuple[str, str, str]], Deferred[None]] | None = None
    ) -> None:
        self.deadline = deadline
        self._deserted = deserted
        self.deserted_now: Deferred[None] | None = None

    def of(self, key: tuple[str, str, str]) -> _Errand:
        """The errand of the shared work running under key."""
        errand = _Errand(self.deadline, self._deserted)
        errand.deserted_now = None if self._deserted is None else self._deserted(key)
        return errand


class _Holding:
    """A claim this process holds, as its renewals see it."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.since = 0.0
        self.lost = False  # a renewal found it taken over
        self.expired = False  # held past the hold limit: renewals stopped
        self.stored = False  # a file no row names may stand under the claim's key


def _describe(data: bytes, limits: DecodeLimits) -> tuple[ImageInfo, str]:
    return probe(data, limits), hashlib.sha256(data).hexdigest()


def _render(
    data: bytes, spec: Target, limits: DecodeLimits, encoding: EncodeOptions, deadline: float | None
) -> tuple[Rendered, str, float] | None:
    # Timed in the worker thread: the time spent queueing for one is not
    # the image's cost.  The deadline counts from the request's arrival.
    started = time.perf_counter()
    if isinstance(spec, WorkingCopy):
        rendered = make_working_copy(data, limits, spec.sizes, encoding, deadline)
        if rendered is None:
            return None
    else:
        rendered = render(data, spec, limits, encoding, deadline)
    return rendered, hashlib.sha256(rendered.data).hexdigest(), time.perf_counter() - started


class _NoWorkingCopy(Exception):
    """The original is one no working copy is made of (an animation)."""


class _Superseded(Exception):
    """This process may not record the rendition it derived: its claim was
    taken over, or another holder recorded the rendition first."""


def _not_found(image_id: ImageId) -> ImageNotFound:
    return ImageNotFound(f"no image is stored under the ID {image_id.value!r}")


def _taken(image_id: ImageId) -> ImageIdTaken:
    return ImageIdTaken(f"an image is already stored under the ID {image_id.value!r}")
