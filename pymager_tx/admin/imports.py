"""
`pymager-admin import PATH...`: upload every image in files and folders,
N at a time, through the HTTP API (--url) or straight into the store.

Resumable: an ID already stored with the same SHA-256 is skipped, so a run
that stopped half-way is run again as it was; an ID stored with other bytes
is a conflict, never overwritten.  The import core speaks to an Uploader,
so where the images go (a service over HTTP, the store) is one choice.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import click
from twisted.internet.defer import DeferredList, DeferredSemaphore

from pymager_tx.admin.command import Target, finish, with_target
from pymager_tx.admin.progress import Progress
from pymager_tx.admin.runtime import direct, run
from pymager_tx.app.api import ImageServiceAPI
from pymager_tx.core.errors import ImageIdTaken, ImageNotFound, PymagerError
from pymager_tx.core.formats import KNOWN
from pymager_tx.core.model import ImageId

# What a folder is searched for (files named on the command line are taken whatever their name).
IMAGE_EXTENSIONS = frozenset(extension for known in KNOWN for extension in known.extensions)


class Uploader(Protocol):
    """Where imported images go."""

    async def stored_sha256(self, image_id: str) -> str | None:
        """The SHA-256 of the original stored under image_id, None if there is none."""
        ...

    async def upload(self, image_id: str, path: Path) -> str:
        """Store the file at path under image_id; the SHA-256 stored.
        ImageIdTaken if the ID is taken."""
        ...


class StoreUploader:
    """Straight into the store, through the service's own use cases."""

    def __init__(self, service: ImageServiceAPI) -> None:
        self._service = service

    async def stored_sha256(self, image_id: str) -> str | None:
        try:
            found = await self._service.original(ImageId(image_id))
        except ImageNotFound:
            return None
        return found.record.sha256

    async def upload(self, image_id: str, path: Path) -> str:
        record = await self._service.store_original(ImageId(image_id), path.read_bytes())
        return record.sha256


@dataclass(frozen=True)
class Candidate:
    """A file to import, and its ID or the reason it has none."""

    path: Path
    image_id: str | None
    problem: str | None = None


def find_candidates(paths: Sequence[Path], id_from: re.Pattern[str] | None) -> list[Candidate]:
    """Every file given, and every image file below every folder given (by
    extension, hidden names left out), each with its ID: the file name's
    stem, or the group `id` of id_from, searched in the path below the
    folder given (the file's name, for a file given)."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path)
                if (
                    file.is_file()
                    and not any(part.startswith(".") for part in relative.parts)
                    and file.suffix[1:].lower() in IMAGE_EXTENSIONS
                ):
                    found.append((file, relative.as_posix()))
        else:
            found.append((path, path.name))
    candidates: list[Candidate] = []
    seen: dict[str, Path] = {}
    for file, name in found:
        image_id, problem = _id_of(name, id_from)
        if image_id is not None and image_id in seen:
            problem = f"the ID {image_id} is also {seen[image_id]}'s"
            image_id = None
        elif image_id is not None:
            seen[image_id] = file
        candidates.append(Candidate(file, image_id, problem))
    return candidates


def _id_of(name: str, id_from: re.Pattern[str] | None) -> tuple[str | None, str | None]:
    if id_from is None:
        text = Path(name).stem
    else:
        match = id_from.search(name)
        if match is None or match["id"] is None:
            return None, f"--id-from does not match {name!r}"
        text = match["id"]
    try:
        return str(ImageId(text)), None
    except PymagerError as error:
        return None, error.detail


class Outcome(Enum):
    IMPORTED = "imported"
    SKIPPED = "skipped"
    CONFLICT = "conflict"
    FAILED = "failed"


@dataclass
class Summary:
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    problems: list[tuple[Outcome, Path, str]] = field(default_factory=list)

    def add(self, outcome: Outcome, path: Path, problem: str | None = None) -> None:
        self.counts[outcome] += 1
        if problem is not None:
            self.problems.append((outcome, path, problem))

    @property
    def failed(self) -> bool:
        return bool(self.counts[Outcome.CONFLICT] or self.counts[Outcome.FAILED])


async def import_all(
    candidates: Sequence[Candidate], uploader: Uploader, jobs: int, progress: Progress
) -> Summary:
    """Import every candidate, jobs at a time."""
    summary = Summary()
    slots = DeferredSemaphore(jobs)

    async def one(candidate: Candidate) -> None:
        outcome, problem = await _import(candidate, uploader)
        summary.add(outcome, candidate.path, problem)
        progress.advance()

    await DeferredList(
        [slots.run(one, candidate) for candidate in candidates],
        consumeErrors=True,
    )
    progress.close()
    return summary


async def _import(candidate: Candidate, uploader: Uploader) -> tuple[Outcome, str | None]:
    if candidate.image_id is None:
        return Outcome.FAILED, candidate.problem
    image_id = candidate.image_id
    try:
        digest = _sha256(candidate.path)
        stored = await uploader.stored_sha256(image_id)
        if stored is None:
            try:
                await uploader.upload(image_id, candidate.path)
                return Outcome.IMPORTED, None
            except ImageIdTaken:
                # Taken since we looked (another import, a client): compare again.
                stored = await uploader.stored_sha256(image_id)
                if stored is None:
                    return Outcome.FAILED, f"the ID {image_id} is taken by an upload under way or a lost file"
        if stored == digest:
            return Outcome.SKIPPED, None
        return Outcome.CONFLICT, f"{image_id} is stored with other bytes (SHA-256 {stored[:12]}…)"
    except PymagerError as error:
        return Outcome.FAILED, error.detail or repr(error)
    except OSError as error:
        return Outcome.FAILED, error.strerror or str(error)
    except Exception as error:  # a client or network failure: this file's, not the run's
        return Outcome.FAILED, str(error) or type(error).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while part := file.read(1 << 20):
            digest.update(part)
    return digest.hexdigest()


def _pattern(_ctx: click.Context, _param: click.Parameter, value: str | None) -> re.Pattern[str] | None:
    if value is None:
        return None
    try:
        pattern = re.compile(value)
    except re.error as error:
        raise click.BadParameter(f"not a regular expression: {error}") from None
    if "id" not in pattern.groupindex:
        raise click.BadParameter("needs a named group id, as in '(?P<id>[^/.]+)'")
    return pattern


def report(summary: Summary, total: int, seconds: float) -> None:
    for outcome, path, problem in summary.problems:
        click.echo(f"{outcome.value}: {path}: {problem}")
    counts = summary.counts
    click.echo(
        f"{counts[Outcome.IMPORTED]} imported, {counts[Outcome.SKIPPED]} already stored, "
        f"{counts[Outcome.CONFLICT]} conflicts, {counts[Outcome.FAILED]} failed, "
        f"of {total} files in {seconds:.1f} s"
    )


@click.command("import", short_help="Upload the images of files and folders, resumably.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--id-from",
    callback=_pattern,
    help="Regular expression with a group named id, searched in each file's path below the folder "
    "given (its name, for a file given); default: the file name without its extension.",
)
@click.option(
    "-j", "--jobs", type=click.IntRange(1, 64), default=4, show_default=True, help="Images at a time."
)
@click.option(
    "--url", help="Upload through the HTTP API of the service at this URL; default: into the store."
)
@click.option("--token", envvar="PYMAGER_TOKEN", help="Write token for --url (or PYMAGER_TOKEN).")
@with_target
def import_command(
    target: Target,
    paths: tuple[Path, ...],
    id_from: re.Pattern[str] | None,
    jobs: int,
    url: str | None,
    token: str | None,
) -> None:
    """Upload every image in PATHS (files, and folders searched recursively).

    An ID already stored with the same bytes is skipped, so an import that
    stopped is resumed by running it again; an ID stored with other bytes is
    a conflict, never overwritten.  Exits with 1 if any file failed or
    conflicted, listing each with its problem."""
    candidates = find_candidates(paths, id_from)
    started = time.monotonic()

    async def work(reactor: Any) -> Summary:
        progress = Progress(len(candidates), "import")
        if url is not None:
            from pymager_tx.admin.http_uploader import http_uploader

            async with http_uploader(url, token, reactor, jobs) as uploader:
                return await import_all(candidates, uploader, jobs, progress)
        async with direct(target, reactor, image_threads=jobs) as store:
            return await import_all(candidates, StoreUploader(store.service), jobs, progress)

    summary = run(work)
    report(summary, len(candidates), time.monotonic() - started)
    finish(1 if summary.failed else 0)
