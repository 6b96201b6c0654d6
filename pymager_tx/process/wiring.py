"""
The composition root: the one place that turns settings into components and
picks the adapters behind the ports.  The server (pymager_tx.process.server)
and the admin tools (pymager_tx.admin) both build through it, so that they
always agree on where the data is and how it is shared.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, succeed
from twisted.web.client import Agent, HTTPConnectionPool

from pymager_tx.adapters.cdn.purger import HttpCachePurger, PurgeRequest
from pymager_tx.adapters.cluster.epoch import SharedEpoch
from pymager_tx.adapters.cluster.owners import Owners
from pymager_tx.adapters.sql.database import Database, make_engine
from pymager_tx.adapters.sql.heartbeat import Heartbeat, LeaseLiveness
from pymager_tx.adapters.sql.lease import Lease
from pymager_tx.adapters.sql.removal_feed import RemovalListener
from pymager_tx.adapters.storage.disk_cache import DiskCachedBlobStore
from pymager_tx.adapters.storage.disk_cache_index import CacheBounds
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.admission import ImageAdmission
from pymager_tx.app.peers import Peers
from pymager_tx.app.rendition_cache import RenditionCache
from pymager_tx.app.service import ImagePolicy, ImageService
from pymager_tx.config import Settings
from pymager_tx.core.errors import ConfigError
from pymager_tx.http.cors import CorsPolicy
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.metrics import Routes, Scrape
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.http.signatures import UrlSignatures
from pymager_tx.http.site import PymagerSite
from pymager_tx.imaging.decoded import DecodedPictures
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions, Helpers
from pymager_tx.ports import (
    NO_METRICS,
    IBlobStore,
    ICachePurger,
    IRemovalFeed,
    Metrics,
    NoCachePurger,
    NoRemovalFeed,
    Offload,
    immediate,
)

Liveness = Literal["flock", "database"]


@dataclass(frozen=True)
class Offloads:
    """Where each kind of blocking work runs."""

    database: Offload
    io: Offload
    images: Offload
    # A bucket's requests, on a pool sized to its connections; None: io.
    storage: Offload | None = None

    @classmethod
    def at_once(cls) -> Offloads:
        """Everything in the calling thread: for the command line."""
        return cls(immediate, immediate, immediate)


@dataclass(frozen=True)
class Store:
    """The state the settings name, and how this process shares it."""

    data_directory: Path
    database: Database
    blobs: IBlobStore
    # The processes sharing the data directory, this one among them.
    owners: Owners
    peers: Peers
    # Removals anywhere void what every process holds in memory.
    epoch: SharedEpoch
    # How peers are told alive: flock in the data directory, or leases in
    # the database, which this process renews with its heartbeat (None on
    # the command line, and with flock).
    liveness: Liveness = "flock"
    heartbeat: Heartbeat | None = None
    # Deletions heard from other machines as they commit (PostgreSQL).
    removal_feed: IRemovalFeed = field(default_factory=NoRemovalFeed)
    # What lets go of the blob store's connections at shutdown, if any.
    close_blobs: Callable[[], Deferred[None]] | None = None
    # Whether this process sweeps now (app.recovery): the first live process
    # by name, by lease or by lock; never on the command line.
    sweep_turn: Callable[[], Deferred[bool]] = field(default_factory=lambda: _never)

    async def close(self) -> None:
        """Let go of the database's and the blob store's connections."""
        await self.database.dispose()
        if self.close_blobs is not None:
            await self.close_blobs()


def build_store(
    settings: Settings,
    offloads: Offloads,
    timer: Any = None,
    pool_size: int | None = None,
    metrics: Metrics = NO_METRICS,
) -> Store:
    """timer: for waiting on peers (the reactor), None on the command line,
    which then neither renews a lease nor listens for deletions; pool_size:
    database connections (default: the settings'); metrics: where the
    database and the blob store record their times."""
    data_directory = settings.storage.data_directory.absolute()
    size = settings.database.pool_size if pool_size is None else pool_size
    engine = make_engine(settings.database_url, size)
    liveness = liveness_of(settings, engine.dialect.name)
    # Every process sharing the data directory registers here, so each can
    # tell what a dead one left unfinished from what a live one holds (its
    # temporary files, always; its rows too, with flock liveness).
    owners = Owners(data_directory / "processes")
    serving = timer is not None
    cluster = settings.cluster
    lease = Lease(owners.me, cluster.lease_seconds) if liveness == "database" and serving else None
    database = Database(engine, offloads.database, lease=lease, metrics=metrics)
    blobs: IBlobStore
    close_blobs = None
    if settings.storage.backend == "s3":
        bucket = _s3().S3BlobStore.from_settings(
            settings.storage.s3, offloads.storage or offloads.io, metrics
        )
        blobs, close_blobs = bucket, bucket.close
        cache = settings.storage.cache
        if serving and cache.max_bytes > 0:
            # Only a server keeps copies: the command line reads once.
            cached = DiskCachedBlobStore(
                bucket,
                data_directory / "cache",
                offloads.io,
                CacheBounds(cache.max_bytes, cache.max_files, cache.max_item_bytes),
                metrics,
                close_bucket=bucket.close,
            )
            blobs, close_blobs = cached, cached.close
    else:
        blobs = FilesystemBlobStore(
            data_directory / "files", offloads.io, owners.me, owners.is_alive, metrics
        )
    heartbeat = None
    if liveness == "database":
        leases = LeaseLiveness(database, owners.me, remember=cluster.heartbeat_seconds)
        peers = Peers(owners.me, alive=_dead_here_or_by_lease(owners, leases, offloads.io), timer=timer)
        if lease is not None:
            heartbeat = Heartbeat(database, lease, socket.gethostname(), cluster.heartbeat_seconds, timer)
    else:
        peers = Peers(owners.me, alive=lambda owner: offloads.io(owners.is_alive, owner), timer=timer)
    turn: Callable[[], Deferred[bool]] = _never
    if heartbeat is not None:
        turn = heartbeat.my_turn
    elif liveness == "flock" and serving:
        turn = partial(offloads.io, owners.first_alive)
    feed: IRemovalFeed = NoRemovalFeed()
    if serving and engine.dialect.name == "postgresql":
        feed = RemovalListener(engine, owners.me, timer.callFromThread)
    return Store(
        data_directory,
        database,
        blobs,
        owners,
        peers,
        SharedEpoch.of(data_directory),
        liveness,
        heartbeat,
        feed,
        close_blobs,
        turn,
    )


def _never() -> Deferred[bool]:
    return succeed(False)


def _dead_here_or_by_lease(
    owners: Owners, leases: LeaseLiveness, io: Offload
) -> Callable[[str | None], Deferred[bool]]:
    """Lease liveness, but a process that registered in this data directory
    and whose lock is free is dead at once, not a lease later: a process
    restarted after kill -9 recovers what it left at start-up."""

    def alive(owner: str | None) -> Deferred[bool]:
        def judged(dead: bool) -> bool | Deferred[bool]:
            return False if dead else leases.alive(owner)

        return io(owners.proven_dead, owner).addCallback(judged)

    return alive


def liveness_of(settings: Settings, dialect: str) -> Liveness:
    """[cluster] liveness, "auto" decided: flock where every process shares
    the data directory for certain (SQLite, which serves one machine, and a
    filesystem store), leases in the database anywhere else (PostgreSQL may
    serve machines that share no disk)."""
    chosen = settings.cluster.liveness
    if chosen != "auto":
        return chosen
    backend = settings.storage.backend
    return "flock" if dialect == "sqlite" and backend == "filesystem" else "database"


def describe_blobs(settings: Settings) -> str:
    """Where the images are, for people (no credentials)."""
    storage = settings.storage
    if storage.backend == "s3":
        s3 = storage.s3
        where = s3.endpoint_url or "AWS"
        return f"bucket {s3.bucket}{'/' + s3.prefix if s3.prefix else ''} at {where}"
    return str(storage.data_directory.absolute() / "files")


def storage_threads(settings: Settings) -> int | None:
    """The threads a bucket store needs of its own; None for the filesystem."""
    return _s3().threads_for(settings.storage.s3) if settings.storage.backend == "s3" else None


def check_storage(settings: Settings) -> None:
    """Raise ConfigError now if the chosen blob store cannot be built here."""
    if settings.storage.backend == "s3":
        _s3()


def _s3() -> ModuleType:
    """The S3 adapter, imported only when chosen: boto3 is an extra."""
    try:
        from pymager_tx.adapters.storage import s3
    except ImportError as error:
        raise ConfigError(
            f'[storage] backend = "s3" needs boto3 ({error}): pip install "pymager-tx[s3]"'
        ) from None
    return s3


def build_service(
    settings: Settings,
    store: Store,
    images: Offload,
    admission: ImageAdmission | None = None,
    memory_cache: bool = True,
    metrics: Metrics = NO_METRICS,
    purger: ICachePurger | None = None,
    helpers: Helpers | None = None,
) -> ImageService:
    """memory_cache: hold renditions in memory as the settings say (the
    command line holds none, but keeps decoded pictures all the same);
    purger: the CDN told of deletions and replacements (build_purger; None:
    nobody); helpers: threads that take a share of a large resize (None:
    each on its image thread alone)."""
    memory = settings.memory_cache
    cache = RenditionCache(
        memory.max_bytes if memory_cache else 0,
        memory.max_item_bytes if memory_cache else 0,
        memory.poll_seconds if memory_cache else 0,
        store.epoch,
        metrics=metrics,
        max_records=memory.max_records if memory_cache else 0,
    )
    return ImageService(
        store.database,
        store.blobs,
        images,
        image_policy(settings),
        peers=store.peers,
        cache=cache,
        admission=admission,
        metrics=metrics,
        purger=purger,
        helpers=helpers,
        # Not answers, only pixels of sources no upload reuses the key of:
        # the command line's `warm` gains as much from them as a server.
        decoded=DecodedPictures(memory.max_decoded_bytes, memory.max_decoded_item_bytes)
        if memory.max_decoded_bytes > 0
        else None,
    )


def build_purger(settings: Settings, reactor: Any) -> ICachePurger:
    """The CDN purges of [cdn], sent with treq on reactor; none without a purge_url."""
    cdn = settings.cdn
    if not cdn.purge_url:
        return NoCachePurger()
    request = PurgeRequest(
        cdn.purge_url, cdn.purge_method, dict(cdn.purge_headers), cdn.purge_body, cdn.token()
    )
    pool = HTTPConnectionPool(reactor, persistent=True)
    return HttpCachePurger(
        request,
        HTTPClient(Agent(reactor, pool=pool)),
        reactor,
        pool=pool,
        attempts=cdn.purge_attempts,
        backoff=cdn.purge_backoff_seconds,
        timeout=cdn.purge_timeout_seconds,
        max_queue=cdn.purge_queue,
    )


def build_site(
    settings: Settings,
    service: ImageService,
    tokens: tuple[str, ...],
    io: Offload,
    reactor: Any,
    upload_directory: Path,
    metrics: Metrics = NO_METRICS,
    scrape: Scrape | None = None,
) -> PymagerSite:
    """metrics: where requests are counted; scrape: what answers GET
    /metrics on this site (None: 404 there)."""
    write_tokens = WriteTokens(tokens)
    api = ImageAPI(
        service,
        write_tokens,
        io,
        HttpPolicy(
            cache_control=settings.http.cache_control,
            public_url=settings.server.public_url,
            cache_tag_headers=tuple(settings.cdn.cache_tag_headers),
            cors=CorsPolicy.of(settings.http.cors_origins, settings.http.cors_max_age),
            accel_redirect_prefix=settings.http.accel_redirect_prefix,
        ),
        UrlSignatures(settings.security.signing_keys()),
    )
    server = settings.server
    return PymagerSite(
        api.resource(),
        max_upload_bytes=settings.images.max_upload_bytes,
        reactor=reactor,
        idle_timeout=server.idle_timeout,
        trust_forwarded_for=server.trust_forwarded_for,
        tokens=write_tokens,
        access_log=server.access_log,
        upload_directory=upload_directory,
        max_uploads=server.max_uploads,
        header_timeout=server.header_timeout,
        body_timeout=server.body_timeout,
        max_connections=server.max_connections,
        metrics=metrics,
        scrape=scrape,
        routes=Routes(api.app.url_map),
    )


def image_policy(settings: Settings) -> ImagePolicy:
    images = settings.images
    return ImagePolicy(
        allowed_sizes=images.sizes,
        max_upload_bytes=images.max_upload_bytes,
        max_signed_side=images.max_signed_side,
        answer_before_stored=not settings.http.accel_redirect_prefix,
        limits=DecodeLimits(
            max_pixels=images.max_pixels,
            decoders=tuple(images.decoders),
            max_frames=images.max_frames,
            max_animation_pixels=images.max_animation_pixels,
            time_budget=images.derivation_time_budget,
        ),
        encoding=EncodeOptions(
            jpeg_quality=images.jpeg_quality,
            webp_quality=images.webp_quality,
            background=images.background_rgb,
            jpeg_progressive=images.jpeg_progressive,
            jpeg_progressive_min_pixels=images.jpeg_progressive_min_pixels,
            jpeg_subsampling=images.jpeg_subsampling,
            upscale=images.upscale,
        ),
    )
