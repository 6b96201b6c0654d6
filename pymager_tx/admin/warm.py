"""
`pymager-admin warm --sizes 100x100,800x600 [IDS... | --all]`: derive
renditions ahead of traffic, N at a time, through the HTTP API (--url) or
straight on the store.

It never starves the service: at most --jobs derivations are under way at
once, and through HTTP a 503 (the image queue full, a derivation pending
elsewhere) is tried again after the Retry-After the service gives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import click
from twisted.internet.defer import DeferredList, DeferredSemaphore

from pymager_tx.admin.command import AdminError, Target, finish, with_target
from pymager_tx.admin.progress import Progress
from pymager_tx.admin.runtime import direct, run
from pymager_tx.app.api import ImageServiceAPI
from pymager_tx.core.errors import PymagerError
from pymager_tx.core.formats import OUTPUTS
from pymager_tx.core.model import ImageId, ResizeMode, Size


class Deriver(Protocol):
    async def derive(self, image_id: str, size: Size, extension: str, mode: ResizeMode) -> None:
        """Have the rendition derived and stored (if it is not already)."""
        ...


class StoreDeriver:
    """On the store, through the service's own use cases."""

    def __init__(self, service: ImageServiceAPI) -> None:
        self._service = service

    async def derive(self, image_id: str, size: Size, extension: str, mode: ResizeMode) -> None:
        suffix = "" if mode is ResizeMode.CROP else f"-{mode}"
        await self._service.derived(f"{ImageId(image_id)}-{size}{suffix}.{extension}")


@dataclass(frozen=True)
class Job:
    image_id: str
    size: Size

    def __str__(self) -> str:
        return f"{self.image_id} {self.size}"


@dataclass
class Warmed:
    done: int = 0
    failures: list[tuple[Job, str]] = field(default_factory=list)


async def warm_all(
    jobs: Sequence[Job], deriver: Deriver, extension: str, mode: ResizeMode, at_once: int, progress: Progress
) -> Warmed:
    warmed = Warmed()
    slots = DeferredSemaphore(at_once)

    async def one(job: Job) -> None:
        try:
            await deriver.derive(job.image_id, job.size, extension, mode)
            warmed.done += 1
        except PymagerError as error:
            warmed.failures.append((job, error.detail or repr(error)))
        except Exception as error:  # a network failure: this job's, not the run's
            warmed.failures.append((job, str(error) or type(error).__name__))
        progress.advance()

    await DeferredList([slots.run(one, job) for job in jobs], consumeErrors=True)
    progress.close()
    return warmed


def _sizes(_ctx: click.Context, _param: click.Parameter, value: str) -> list[Size]:
    try:
        return [Size.parse(text.strip()) for text in value.split(",") if text.strip()]
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


_EXTENSIONS = sorted(extension for known in OUTPUTS for extension in known.extensions)


@click.command(short_help="Derive renditions ahead of traffic.")
@click.argument("ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every stored original (read from the database).")
@click.option("--sizes", required=True, callback=_sizes, help="Sizes to derive, e.g. 100x100,800x600.")
@click.option(
    "--format",
    "extension",
    type=click.Choice(_EXTENSIONS, case_sensitive=False),
    default="jpg",
    show_default=True,
    help="Format of the renditions (their URL extension).",
)
@click.option(
    "--mode",
    type=click.Choice([mode.value for mode in ResizeMode]),
    default="crop",
    show_default=True,
    help="crop, fit or pad, as in derived names.",
)
@click.option(
    "-j", "--jobs", type=click.IntRange(1, 64), default=2, show_default=True, help="Derivations at a time."
)
@click.option("--url", help="Derive through the HTTP API of the service at this URL; default: on the store.")
@with_target
def warm(
    target: Target,
    ids: tuple[str, ...],
    every: bool,
    sizes: list[Size],
    extension: str,
    mode: str,
    jobs: int,
    url: str | None,
) -> None:
    """Derive the renditions of IDS (or of --all originals) at --sizes, ahead of traffic.

    Exits with 1 if any failed, listing each with its problem."""
    if every == bool(ids):
        raise click.UsageError("give IDS or --all, not both and not neither")
    for image_id in ids:
        try:
            ImageId(image_id)
        except PymagerError as error:
            raise click.BadParameter(error.detail, param_hint="IDS") from None
    allowed = target.settings.images.sizes
    if url is None and (refused := [str(size) for size in sizes if size not in allowed]):
        shown = ", ".join(str(size) for size in sorted(allowed))
        raise AdminError(f"not in [images] allowed_sizes ({shown}): {', '.join(refused)}")
    started = time.monotonic()

    async def work(reactor: Any) -> Warmed:
        if url is not None:
            from pymager_tx.admin.http_uploader import http_deriver

            names = list(ids) or await _every_id(target, reactor)
            async with http_deriver(url, reactor, jobs) as deriver:
                return await _warm(names, sizes, deriver, extension, ResizeMode(mode), jobs)
        async with direct(target, reactor, image_threads=jobs) as store:
            names = list(ids) or await store.queries.ready_ids()
            return await _warm(names, sizes, StoreDeriver(store.service), extension, ResizeMode(mode), jobs)

    warmed = run(work)
    for job, problem in warmed.failures:
        click.echo(f"failed: {job}: {problem}")
    click.echo(
        f"{warmed.done} renditions derived or already there, {len(warmed.failures)} failed, "
        f"in {time.monotonic() - started:.1f} s"
    )
    finish(1 if warmed.failures else 0)


async def _warm(
    names: Sequence[str],
    sizes: Sequence[Size],
    deriver: Deriver,
    extension: str,
    mode: ResizeMode,
    at_once: int,
) -> Warmed:
    jobs = [Job(name, size) for name in names for size in sizes]
    return await warm_all(jobs, deriver, extension.lower(), mode, at_once, Progress(len(jobs), "warm"))


async def _every_id(target: Target, reactor: Any) -> list[str]:
    async with direct(target, reactor, image_threads=0) as store:
        return await store.queries.ready_ids()
