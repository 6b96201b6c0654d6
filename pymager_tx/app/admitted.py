"""Image work as the use cases run it: on the image threads, through the
admission queue when there is one (see pymager_tx.app.admission)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from twisted.internet.defer import Deferred

from pymager_tx.app.admission import ImageAdmission, Ticket
from pymager_tx.app.values import Errand, Target, WorkingCopy
from pymager_tx.core.model import DerivedSpec, Size
from pymager_tx.imaging.decoded import DecodedPictures, Reuse
from pymager_tx.imaging.render import (
    DecodeLimits,
    EncodeOptions,
    Helpers,
    ImageInfo,
    KeptUpload,
    Rendered,
    kept_scale,
    make_working_copy,
    probe,
    render,
    render_kept,
)
from pymager_tx.imaging.summary import Summary
from pymager_tx.ports import Offload

T = TypeVar("T")


class Shared(NamedTuple):
    """What a render may share with others in its process: threads for its
    resize, and pictures decoded lately (None: nothing of the kind)."""

    helpers: Helpers | None
    reuse: Reuse | None


class ImageWork:
    def __init__(
        self,
        imaging: Offload,
        admission: ImageAdmission | None = None,
        helpers: Helpers | None = None,
        decoded: DecodedPictures | None = None,
    ) -> None:
        """admission: the bounded queue in front of the image threads; None:
        work goes straight to imaging, unbounded (tests, the CLI); helpers:
        threads that take a share of a large resize while they are idle;
        decoded: pictures decoded lately, kept for the next rendition."""
        self.imaging = imaging
        self.admission = admission
        self.helpers = helpers
        self.decoded = decoded

    def shared(self, source: str) -> Shared:
        """What a render of the source stored under this key may share."""
        return Shared(self.helpers, None if self.decoded is None else Reuse(self.decoded, source))

    def kept(
        self, source: str, spec: DerivedSpec, encoding: EncodeOptions, source_size: tuple[int, int] | None
    ) -> Shared | None:
        """What a render of spec from the source stored under this key may
        share, if it finds the source decoded at the scale it needs, and so
        needs neither its bytes nor their header (render_kept_target);
        None if it does not."""
        shared = self.shared(source)
        if shared.reuse is None or kept_scale(spec, encoding, shared.reuse, source_size) is None:
            return None
        return shared

    def keeping_upload(self, source: str, sizes: frozenset[Size], upscale: bool) -> KeptUpload | None:
        """Where the probe of an upload to be stored under this key keeps
        its decode for the first renditions (None: pictures are not kept)."""
        return None if self.decoded is None else KeptUpload(Reuse(self.decoded, source), sizes, upscale)

    async def admitted(self, work: Callable[[], Deferred[T]], errand: Errand) -> T:
        """work(), once an image thread is free for it."""
        if self.admission is None:
            return await work()
        wait = None if errand.deadline is None else errand.deadline - time.monotonic()
        return await self.admission.run(work, wait, errand.deserted_now, errand.ticket)

    def offload(self, work: Callable[..., T], /, *args: Any) -> Deferred[T]:
        return self.imaging(work, *args)

    def reserve(self) -> Ticket | None:
        """A place in the queue for new image work, taken before any
        transaction is spent on it: Overloaded at once while the queue is
        full (None without admission control)."""
        return None if self.admission is None else self.admission.reserve()

    def load(self) -> dict[str, object] | None:
        """How busy the image threads are, and whether new work would be
        refused (for health answers); None without admission control."""
        if self.admission is None:
            return None
        return {**self.admission.describe(), "full": self.admission.full}


# What runs on the image threads: plain functions of bytes.


def describe(data: bytes, limits: DecodeLimits, keep: KeptUpload | None = None) -> tuple[ImageInfo, str]:
    return probe(data, limits, keep), hashlib.sha256(data).hexdigest()


def summarize_image(data: bytes, limits: DecodeLimits) -> Summary | None:
    """The summary of an original stored before summaries were made."""
    return probe(data, limits).summary


def render_target(
    data: bytes,
    spec: Target,
    limits: DecodeLimits,
    encoding: EncodeOptions,
    deadline: float | None,
    source_size: tuple[int, int] | None = None,
    shared: Shared | None = None,
) -> tuple[Rendered, str, float] | None:
    """The rendition (None for a working copy of an animation), its digest
    and the seconds it took, timed in the worker: the time spent queueing
    for one is not the image's cost.  The deadline counts from the request's
    arrival.  source_size: data is a working copy of a source that size;
    shared: see ImageWork.shared."""
    started = time.perf_counter()
    if isinstance(spec, WorkingCopy):
        helpers, reuse = (None, None) if shared is None else shared
        rendered = make_working_copy(data, limits, spec.sizes, encoding, deadline, helpers, reuse)
        if rendered is None:
            return None
    else:
        helpers, reuse = (None, None) if shared is None else shared
        rendered = render(data, spec, limits, encoding, deadline, source_size, helpers, reuse)
    return rendered, hashlib.sha256(rendered.data).hexdigest(), time.perf_counter() - started


def render_kept_target(
    spec: DerivedSpec,
    encoding: EncodeOptions,
    deadline: float | None,
    source_size: tuple[int, int] | None,
    shared: Shared,
) -> tuple[Rendered, str, float] | None:
    """As render_target, from the source decoded and kept (ImageWork.kept);
    None if it was let go meanwhile."""
    started = time.perf_counter()
    rendered = render_kept(spec, encoding, deadline, source_size, shared.helpers, shared.reuse)
    if rendered is None:
        return None
    return rendered, hashlib.sha256(rendered.data).hexdigest(), time.perf_counter() - started
