"""
`pymager-admin migrate-storage`: copy the filesystem store of a data
directory (originals, renditions and working copies: every key it holds)
into the bucket that [storage.s3] names, through the IBlobStore port of
each (list, get, size, put), --jobs keys at a time.

The source is only read, so the single-machine service keeps serving from
it meanwhile.  Keys are immutable (each names one generation, or one
claim's file, written once by one writer), and a bucket holds an object
whole or not at all, so a key already in the bucket with the source's size
is the same object: an interrupted copy is resumed by running it again,
which copies only what is missing (or of another size), and picks up the
uploads and renditions made since the last run.  A key removed from the
source while the copy runs is passed over; one removed after it was copied
is an orphan in the bucket, which `check --repair` removes once the service
runs on the bucket.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import click
from twisted.internet.defer import DeferredSemaphore, gatherResults

from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.admin.command import AdminError, Target, finish, with_target
from pymager_tx.admin.progress import Progress
from pymager_tx.admin.runtime import run
from pymager_tx.core.errors import BlobNotFound, Unavailable
from pymager_tx.ports import IBlobStore
from pymager_tx.process.threads import ThreadPoolService

# What a filesystem store holds: the keys the service writes (core.keys).
TOP_LEVELS = ("originals", "derived")


@dataclass
class Tally:
    copied: int = 0
    present: int = 0  # already in the bucket, the same size
    vanished: int = 0  # removed from the source meanwhile
    copied_bytes: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


async def count_keys(source: IBlobStore) -> int:
    """How many keys the source holds (a listing, nothing kept)."""
    total = 0
    for top in TOP_LEVELS:
        listing = source.list(top)
        while page := await listing.next_page():
            total += len(page)
    return total


async def copy_store(
    source: IBlobStore, destination: IBlobStore, jobs: int, progress: Progress | None = None
) -> Tally:
    """Copy every key of source that destination lacks (or holds at another
    size), jobs at a time, a listing page at a time (so memory holds a page
    of keys and jobs blobs, whatever the store's size)."""
    tally = Tally()
    lanes = DeferredSemaphore(jobs)
    for top in TOP_LEVELS:
        listing = source.list(top)
        while page := await listing.next_page():
            copies = [lanes.run(_copy_one, source, destination, key, tally, progress) for key in page]
            await gatherResults(copies, consumeErrors=True)
    return tally


async def _copy_one(
    source: IBlobStore, destination: IBlobStore, key: str, tally: Tally, progress: Progress | None
) -> None:
    try:
        size = await source.size(key)
        there = None if size is None else await destination.size(key)
        if size is None:
            tally.vanished += 1
        elif there == size:
            tally.present += 1
        else:
            data = await source.get(key)
            if there is not None:
                # Another object of that key (an earlier copy gone wrong):
                # removed first, as an image's object is never replaced.
                await destination.delete(key)
            await destination.put(key, data)
            tally.copied += 1
            tally.copied_bytes += len(data)
    except BlobNotFound:
        tally.vanished += 1
    except Unavailable as error:
        tally.failures.append((key, f"{error.detail} ({error.reason})"))
    except Exception as error:  # one key's failure is listed; the copy goes on
        tally.failures.append((key, f"{type(error).__name__}: {error}"))
    finally:
        if progress is not None:
            progress.advance()


@asynccontextmanager
async def stores(target: Target, reactor: Any, jobs: int) -> AsyncIterator[tuple[IBlobStore, IBlobStore]]:
    """The data directory's filesystem store (read only: no recovery, no
    writes) and the bucket, each on threads of its own."""
    settings = target.settings
    if not settings.storage.s3.bucket:
        raise AdminError("[storage.s3] names no bucket to copy into")
    files = settings.storage.data_directory.absolute() / "files"
    if not files.is_dir():
        raise AdminError(f"no filesystem store at {files}")
    try:
        from pymager_tx.adapters.storage.s3 import S3BlobStore
    except ImportError as error:
        needs = f'copying into a bucket needs boto3 ({error}): pip install "pymager-tx[s3]"'
        raise AdminError(needs) from None
    options = settings.storage.s3
    reading = ThreadPoolService(reactor, "pymager-admin-files", jobs)
    writing = ThreadPoolService(reactor, "pymager-admin-s3", max(jobs * 2, 2))
    source = FilesystemBlobStore(files, reading.offload)
    if options.max_pool_connections < jobs * 2:
        options = options.model_copy(update={"max_pool_connections": jobs * 2})
    bucket = S3BlobStore.from_settings(options, writing.offload)
    reading.startService()
    writing.startService()
    try:
        yield source, bucket
    finally:
        await bucket.close()
        reading.stopService()
        writing.stopService()


@click.command("migrate-storage", short_help="Copy the data directory's files into the [storage.s3] bucket.")
@click.option(
    "-j", "--jobs", type=click.IntRange(1, 64), default=8, show_default=True, help="Keys copied at a time."
)
@with_target
def migrate_storage(target: Target, jobs: int) -> None:
    """Copy every stored image of the data directory (originals, renditions,
    working copies) into the bucket [storage.s3] names, resumably.

    Run it while the service still serves from its files: it only reads
    them.  Run it again to copy what was added meanwhile, or to resume an
    interrupted copy: keys already in the bucket with the same size are
    skipped.  Exits with 1 if any key failed, listing each."""
    started = time.monotonic()
    s3 = target.settings.storage.s3
    destination = f"bucket {s3.bucket}{'/' + s3.prefix if s3.prefix else ''} at {s3.endpoint_url or 'AWS'}"

    async def work(reactor: Any) -> tuple[Tally, int]:
        async with stores(target, reactor, jobs) as (source, bucket):
            total = await count_keys(source)
            progress = Progress(total, "migrate-storage", unit="object")
            try:
                return await copy_store(source, bucket, jobs, progress), total
            finally:
                progress.close()

    tally, total = run(work)
    for key, reason in tally.failures:
        click.echo(f"failed: {key}: {reason}")
    click.echo(
        f"{tally.copied} copied ({tally.copied_bytes} bytes), {tally.present} already there, "
        f"{tally.vanished} removed meanwhile, {len(tally.failures)} failed, of {total} objects "
        f"into {destination} in {time.monotonic() - started:.1f} s"
    )
    finish(1 if tally.failures else 0)
