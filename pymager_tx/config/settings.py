"""
Settings: every option declared once, with its type, default and a one-line doc.

The configuration file is TOML; an unknown key or a bad value stops start-up
with a message naming it.  etc/pymager.toml documents every key, and a test
checks it against the declarations here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pymager_tx.adapters.sql.database import check_database_url, sqlite_url
from pymager_tx.config.cdn import CdnSettings
from pymager_tx.config.section import Section
from pymager_tx.config.security import SecuritySettings
from pymager_tx.config.storage import StorageSettings
from pymager_tx.core.errors import ConfigError
from pymager_tx.core.model import Size
from pymager_tx.core.signing import DEFAULT_MAX_SIGNED_SIDE
from pymager_tx.imaging.formats import default_decoders, unknown_decoders

# The largest side any output format writes: WebP's limit.
MAX_SIDE = 16383
_TOKEN = re.compile(r"[\x21-\x7e]{16,}")
_HEX_COLOUR = re.compile(
    r"#([0-9A-Fa-f]{2})([0-9A-Fa-f]{2})([0-9A-Fa-f]{2})"
)  # visible ASCII, as a header value carries it


class ServerSettings(Section):
    listen: str = Field(
        "tcp:8000:interface=127.0.0.1",
        description="Twisted endpoint to listen on, e.g. tcp:8000:interface=0.0.0.0 or "
        "unix:/run/pymager/http.sock",
    )
    public_url: str = Field(
        "",
        description="Base of absolute URLs (Location), e.g. https://images.example.com; "
        "empty: from the Host header",
    )
    idle_timeout: Annotated[float, Field(gt=0)] = Field(
        60.0, description="Seconds before an idle client connection is closed"
    )
    trust_forwarded_for: bool = Field(
        False, description="Log the client address from X-Forwarded-For (only behind a proxy you run)"
    )
    dev_mode: bool = Field(
        False, description="Development: wipe the database and stored files at every start"
    )
    access_log: bool = Field(
        True, description="Log every request (turn off when the proxy in front logs them)"
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description='"text" (twistd\'s lines) or "json": one JSON object a line with every field of '
        "each event, for journald and log pipelines",
    )
    workers: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="Processes serving the one listening socket (use one per core)"
    )
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        900,
        description="Client connections each process holds; past it, new ones wait in the listen "
        "backlog (size LimitNOFILE to this plus max_uploads, pool_size and a margin)",
    )
    backlog: Annotated[int, Field(ge=1, le=65535)] = Field(
        1024,
        description="Connections the kernel queues before they are accepted (capped by "
        "net.core.somaxconn), unless listen names its own backlog=",
    )
    max_uploads: Annotated[int, Field(ge=1, le=10_000)] = Field(
        16,
        description="Request bodies each process receives or handles at once; more are refused at "
        "once with 503",
    )
    header_timeout: Annotated[float, Field(gt=0)] = Field(
        10.0, description="Seconds a request's line and headers may take to arrive from its first byte (408)"
    )
    body_timeout: Annotated[float, Field(gt=0)] = Field(
        300.0, description="Seconds a request body may take to arrive from the end of its headers (408)"
    )

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[\x21-\x7e]*)?", value):
            raise ValueError("must be empty or an http(s) URL such as https://images.example.com")
        return value.rstrip("/")


class DatabaseSettings(Section):
    url: str = Field(
        "",
        description="SQLAlchemy URL of the metadata database; "
        "empty: SQLite file pymager.sqlite3 in the data directory",
    )

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value:
            check_database_url(value)
        return value

    pool_size: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="Database connections, and the threads that use them"
    )


class ImageSettings(Section):
    allowed_sizes: list[str] = Field(
        ["100x100", "800x600"], description='Sizes that may be derived, as "WxH"', min_length=1
    )
    max_upload_bytes: Annotated[int, Field(ge=1)] = Field(
        32 * 1024 * 1024, description="Largest original accepted, in bytes (413 beyond)"
    )
    max_signed_side: Annotated[int, Field(ge=1, le=MAX_SIDE)] = Field(
        DEFAULT_MAX_SIGNED_SIDE,
        description="Largest side of a signed size, and of a side worked out from the aspect ratio "
        "(a 0 in the name), listed or signed (400 beyond)",
    )
    max_pixels: Annotated[int, Field(ge=1, le=Image.MAX_IMAGE_PIXELS)] = Field(
        64_000_000,
        description="Most pixels (width x height, from the header) an image may declare (400 beyond)",
    )
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = Field(
        85, description="JPEG quality of derived images"
    )
    webp_quality: Annotated[int, Field(ge=1, le=100)] = Field(
        80, description="WebP quality of derived images"
    )
    decoders: list[str] = Field(
        default_factory=lambda: list(default_decoders()),
        description="Decoders that may open uploads, among the eight this service allows (JPEG, PNG, GIF, "
        "WEBP, AVIF, TIFF, BMP: the formats it reads and writes; HEIF: iPhone photos, HEIC and HEIF, read "
        "through pillow-heif and never written; all of them tested on hostile files); nothing else is parsed",
        min_length=1,
    )
    threads: Annotated[int, Field(ge=0, le=256)] = Field(
        0, description="Image threads per process; 0: the CPU cores shared out over [server] workers"
    )
    max_queue: Annotated[int, Field(ge=0, le=100_000)] = Field(
        0,
        description="Derivations and upload checks that may wait for an image thread, per process; "
        "more are refused at once with 503; 0: four per image thread",
    )
    background: str = Field(
        "#ffffff",
        description='Colour under transparency in JPEG and BMP, and of padding ("-pad"), as "#rrggbb"',
    )
    jpeg_progressive: bool = Field(True, description="Write progressive JPEGs (smaller, shown sooner)")
    jpeg_progressive_min_pixels: Annotated[int, Field(ge=0)] = Field(
        250_000,
        description="Derived JPEGs with fewer pixels are baseline even when jpeg_progressive: "
        "thumbnails arrive whole at once, decode faster baseline and are written in a quarter of the "
        "time, for about 2% more bytes; 0: progressive at every size",
    )
    jpeg_subsampling: Literal["4:4:4", "4:2:2", "4:2:0"] = Field(
        "4:2:0", description='Chroma subsampling of derived JPEGs: "4:4:4", "4:2:2" or "4:2:0"'
    )
    upscale: bool = Field(
        True, description="Enlarge originals smaller than the size asked; false: never enlarge"
    )
    max_frames: Annotated[int, Field(ge=1)] = Field(
        500, description="Most frames of an animation kept in a GIF or WebP; more: the first frame only"
    )
    max_animation_pixels: Annotated[int, Field(ge=1)] = Field(
        100_000_000,
        description="Most frames x canvas pixels, and frames x derived pixels, of an animation kept; "
        "more: the first frame only",
    )
    derivation_time_budget: Annotated[float, Field(gt=0)] = Field(
        20.0, description="Seconds a derivation may take before it is given up (422)"
    )

    @field_validator("allowed_sizes")
    @classmethod
    def _sizes(cls, values: list[str]) -> list[str]:
        for value in values:
            Size.parse(value)
        return values

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not _HEX_COLOUR.fullmatch(value):
            raise ValueError('must be a colour written "#rrggbb", like "#ffffff"')
        return value

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        match = _HEX_COLOUR.fullmatch(self.background)
        assert match is not None  # validated above
        red, green, blue = (int(part, 16) for part in match.groups())
        return red, green, blue

    @field_validator("decoders")
    @classmethod
    def _decoders(cls, values: list[str]) -> list[str]:
        unknown = unknown_decoders(values)
        if unknown:
            offered = ", ".join(default_decoders())
            raise ValueError(
                f"not decoders this service allows with this Pillow: {', '.join(unknown)}; "
                f"choose from {offered} (HEIF covers HEIC and HEIF files; other formats Pillow reads "
                "are never opened)"
            )
        return values

    @model_validator(mode="after")
    def _sizes_fit(self) -> ImageSettings:
        for text in self.allowed_sizes:
            size = Size.parse(text)
            if max(size.width, size.height) > MAX_SIDE:
                raise ValueError(
                    f"allowed_sizes: {text} is wider or taller than {MAX_SIDE}, which WebP cannot write"
                )
            if size.width * size.height > self.max_pixels:
                raise ValueError(f"allowed_sizes: {text} has more pixels than max_pixels ({self.max_pixels})")
        return self

    @property
    def sizes(self) -> frozenset[Size]:
        return frozenset(Size.parse(value) for value in self.allowed_sizes)


# An origin as browsers send it in the Origin header.
_ORIGIN = re.compile(r"https?://(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class HttpSettings(Section):
    cache_control: str = Field(
        "public, max-age=86400", description="Cache-Control of images; empty: none sent"
    )
    cors_origins: list[str] = Field(
        [],
        description="Origins whose scripts may read answers and upload with a token (CORS), "
        'like "https://app.example.com", or "*" for any; empty: no CORS headers',
    )
    cors_max_age: Annotated[int, Field(ge=0, le=86400)] = Field(
        600, description="Seconds a browser may keep a CORS preflight's answer"
    )
    accel_redirect_prefix: str = Field(
        "",
        description="Behind nginx with the filesystem store: the path of nginx's internal location "
        'aliased to the files directory, like "/_pymager_files/"; image GETs then answer headers '
        "and X-Accel-Redirect, and nginx sends the file; empty: the service sends the bytes",
    )

    @field_validator("accel_redirect_prefix")
    @classmethod
    def _accel_prefix(cls, value: str) -> str:
        segments = value.split("/")[1:-1]
        if value and (not re.fullmatch(r"/([A-Za-z0-9._~\-]+/)+", value) or {".", ".."} & set(segments)):
            raise ValueError('must be a path of the form "/name/" (letters, digits, ._~-), or empty')
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f'{origin!r} is not an origin: "*" or scheme://host[:port], without a path or a "/" at '
                    'the end, like "https://app.example.com"'
                )
        return value

    @field_validator("cache_control")
    @classmethod
    def _header_value(cls, value: str) -> str:
        if not re.fullmatch(r"[\x20-\x7e]*", value):
            raise ValueError("must be printable ASCII, as an HTTP header value")
        return value


class MemoryCacheSettings(Section):
    max_bytes: Annotated[int, Field(ge=0)] = Field(
        64 * 1024 * 1024, description="Bytes of derived images each process keeps in memory; 0: none"
    )
    max_item_bytes: Annotated[int, Field(ge=0)] = Field(
        1024 * 1024, description="Larger derived images are always read from storage"
    )
    max_records: Annotated[int, Field(ge=0)] = Field(
        20000,
        description="Rows of derived images each process remembers (about 1 KB each), so that one "
        "not held in memory costs a file read without a database query; voided by deletes as the "
        "images held are; also bounds the originals it stored lately (at most 1,024), whose first "
        "sizes skip their lookup; 0: none",
    )
    max_decoded_bytes: Annotated[int, Field(ge=0)] = Field(
        8 * 1024 * 1024,
        description="Bytes of decoded pictures each process keeps for the next size of the same "
        "image (a srcset asks for several at once): working copies and small photos, decoded once "
        "for all; 0: none",
    )
    max_decoded_item_bytes: Annotated[int, Field(ge=0)] = Field(
        2 * 1024 * 1024,
        description="Larger decoded pictures (4 bytes a pixel: half a megapixel) are never kept",
    )
    poll_seconds: Annotated[float, Field(ge=0)] = Field(
        1.0,
        description="How often each process asks the database whether anything was deleted: "
        "how long a delete made on another machine can go unseen while polls succeed (twice "
        "this at most when they fail; on this machine it is seen at once); 0: ask on every request",
    )


class ClusterSettings(Section):
    liveness: Literal["auto", "flock", "database"] = Field(
        "auto",
        description='How processes tell live peers from dead: "flock" (locks in the shared data '
        'directory), "database" (leases renewed in the database), "auto" (flock on SQLite, else database)',
    )
    heartbeat_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        3.0, description="How often each process renews its lease in the database (liveness = database)"
    )
    lease_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        12.0,
        description="Seconds without a renewal after which a process counts as dead (more than twice "
        "heartbeat_seconds): how long a killed process's work waits to be taken over",
    )

    sweep_seconds: Annotated[float, Field(ge=0, le=86400)] = Field(
        60.0,
        description="How often one live process (the first by name) finishes what processes that are gone "
        "left (uploads, deletions, claims, unfinished writes), as start-up does; 0: only at start-up",
    )

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> ClusterSettings:
        if self.lease_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds:g}) must be more than twice heartbeat_seconds "
                f"({self.heartbeat_seconds:g}): one late renewal must not make a live process look dead"
            )
        return self


class AuthSettings(Section):
    write_tokens: list[str] = Field(
        [], description="Bearer tokens that may POST, PUT and DELETE; empty: writes are open"
    )
    write_tokens_file: Annotated[Path, Field(strict=False)] | None = Field(
        None, description="File with more write tokens, one a line (keeps secrets out of this file)"
    )
    allow_anonymous_writes: bool = Field(
        False, description="Allow open writes on an interface other than loopback (not recommended)"
    )

    @field_validator("write_tokens")
    @classmethod
    def _tokens(cls, values: list[str]) -> list[str]:
        for value in values:
            _check_token(value)
        return values

    def tokens(self) -> tuple[str, ...]:
        """The configured tokens, those of write_tokens_file included."""
        extra: list[str] = []
        if self.write_tokens_file is not None:
            try:
                lines = self.write_tokens_file.read_text(encoding="utf-8").splitlines()
            except OSError as error:
                raise ConfigError(f"auth.write_tokens_file: cannot read it ({error.strerror})") from None
            extra = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            for number, token in enumerate(extra, start=1):
                try:
                    _check_token(token)
                except ValueError as error:
                    raise ConfigError(f"auth.write_tokens_file, token {number}: {error}") from None
        return (*self.write_tokens, *extra)


class MetricsSettings(Section):
    enabled: bool = Field(
        True, description="Record metrics for Prometheus (GET /metrics); false: none, and /metrics is 404"
    )
    listen: str = Field(
        "",
        description='Twisted endpoint serving /metrics alone, e.g. "tcp:9100:interface=127.0.0.1"; '
        "empty: on the main port",
    )


class Settings(Section):
    server: ServerSettings = ServerSettings.model_validate({})
    storage: StorageSettings = StorageSettings.model_validate({})
    database: DatabaseSettings = DatabaseSettings.model_validate({})
    images: ImageSettings = ImageSettings.model_validate({})
    http: HttpSettings = HttpSettings.model_validate({})
    memory_cache: MemoryCacheSettings = MemoryCacheSettings.model_validate({})
    auth: AuthSettings = AuthSettings.model_validate({})
    cluster: ClusterSettings = ClusterSettings.model_validate({})
    metrics: MetricsSettings = MetricsSettings.model_validate({})
    security: SecuritySettings = SecuritySettings.model_validate({})
    cdn: CdnSettings = CdnSettings.model_validate({})

    @model_validator(mode="after")
    def _accel_needs_files(self) -> Settings:
        if self.http.accel_redirect_prefix and self.storage.backend != "filesystem":
            raise ValueError(
                '[http] accel_redirect_prefix needs [storage] backend = "filesystem": nginx sends files '
                "from a directory"
            )
        return self

    @property
    def database_url(self) -> str:
        """The database's URL: [database] url, or by default the SQLite
        file pymager.sqlite3 in the data directory."""
        default = sqlite_url(self.storage.data_directory.absolute() / "pymager.sqlite3")
        return self.database.url or default


def _check_token(token: str) -> None:
    if not _TOKEN.fullmatch(token):
        raise ValueError("a write token is at least 16 visible ASCII characters, without spaces")


def load_settings(path: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Settings:
    """Settings from the TOML file at path (or the defaults), then overrides
    (from the command line), all validated together."""
    raw: dict[str, Any] = {}
    source = "the defaults"
    if path is not None:
        source = str(path)
        try:
            with path.open("rb") as file:
                raw = tomllib.load(file)
        except OSError as error:
            raise ConfigError(f"cannot read the configuration file {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
    for section, values in (overrides or {}).items():
        merged = raw.setdefault(section, {})
        if isinstance(merged, dict):
            merged.update(values)
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_explain(error, source)) from None


def _explain(error: ValidationError, source: str) -> str:
    # Messages name the key and the rule, never the value: a bad value may be
    # a secret (a write token).
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting")
        else:
            lines.append(f"{key}: {problem['msg'].removeprefix('Value error, ')}")
    return f"bad configuration in {source}:\n  " + "\n  ".join(lines)


def documented_keys() -> dict[str, str]:
    """Every "section.key" with its one-line doc; the keys of a table within
    a section are "section.table.key" ([storage.s3] bucket is storage.s3.bucket)."""
    keys: dict[str, str] = {}

    def document(model: type[BaseModel], path: str) -> None:
        for key, field in model.model_fields.items():
            inner = field.annotation
            if isinstance(inner, type) and issubclass(inner, Section):
                document(inner, f"{path}.{key}")
            else:
                keys[f"{path}.{key}"] = field.description or ""

    for section, field in Settings.model_fields.items():
        assert isinstance(field.annotation, type) and issubclass(field.annotation, Section)
        document(field.annotation, section)
    return keys
