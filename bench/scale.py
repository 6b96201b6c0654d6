"""
Scale, measured (issue 14): what the bucket costs per request, how cost grows
with the store, what `pymager-admin check` holds, and what several nodes on
one database and one bucket cost in coordination.

    .venv/bin/python bench/scale.py storage            # S3 against the filesystem, one run
    .venv/bin/python bench/scale.py growth --database postgresql --database sqlite
    .venv/bin/python bench/scale.py check --objects 100000 --objects 300000 --objects 1000000
    .venv/bin/python bench/scale.py nodes --nodes 1 --nodes 2 --nodes 3

Every phase starts its own SeaweedFS (`weed mini`, as .ci/run does) where it
needs a bucket, its own PostgreSQL databases (pymager_scale_*, dropped at the
end) where it needs PostgreSQL, and its own `twistd pymager` processes
(bench/servers.py), all on 127.0.0.1. Millions of rows are not uploaded over
HTTP: a few real originals are uploaded and derived through the server, and
the rest of the rows are copied from those real rows (same columns, same
values, but their own IDs, generations and blob keys, computed by
pymager_tx.core.keys) by bulk SQL. Only the real rows are requested, so every
request finds a row and its blob. Outputs: a Markdown fragment (--out) and
bench/out/scale/<phase>.json; every directory it made is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import random
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageFilter

from bench.loadgen import Phase, Request, run_counted, run_wrk
from bench.servers import Server, start_pymager
from pymager_tx.adapters.sql.schema import derived, originals
from pymager_tx.core.keys import derived_key, original_key
from pymager_tx.core.model import ImageId

REPOSITORY = Path(__file__).resolve().parents[1]
OUT = REPOSITORY / "bench" / "out" / "scale"
VENV_BIN = Path(sys.executable).parent
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
SIZES = ["100x100", "320x240", "800x600"]  # the three renditions of every original
HELD_BACK = "300x300"  # asked for by nobody before the dedupe phase
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [int(each.getsockname()[1]) for each in sockets]
    for each in sockets:
        each.close()
    return ports


def pid_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_line() -> str:
    import PIL

    import twisted

    memory = Path("/proc/meminfo").read_text().split()[1]
    return (
        f"`{' '.join(platform.uname()[:3])}`, nproc {os.cpu_count()}, "
        f"{int(memory) / 1024 / 1024:.1f} GiB, Python {platform.python_version()}, "
        f"Pillow {PIL.__version__}, Twisted {twisted.__version__}"
    )


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True
    ).stdout.strip()


# ---------------------------------------------------------------- the images


def photo(seed: int, width: int, height: int) -> bytes:
    """A JPEG that compresses about as a photograph does: smooth blotches of
    colour, mid-frequency texture and grain (Pillow only; the noise is
    Pillow's own, so bytes differ between runs, sizes do not)."""
    rng = random.Random(seed)
    channels = []
    for _ in range(3):
        coarse = Image.effect_noise((max(2, width // 200), max(2, height // 200)), 80).resize(
            (width, height), Image.Resampling.BICUBIC
        )
        texture = Image.effect_noise((width // 8, height // 8), 40).resize(
            (width, height), Image.Resampling.BILINEAR
        )
        grain = Image.effect_noise((width, height), 20).filter(ImageFilter.GaussianBlur(0.6))
        mixed = Image.blend(Image.blend(coarse, texture, 0.25 + rng.random() * 0.1), grain, 0.12)
        channels.append(mixed)
    buffer = BytesIO()
    Image.merge("RGB", channels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def photos(count: int, width: int, height: int) -> list[bytes]:
    log(f"making {count} photographs of {width}x{height}")
    return [photo(seed, width, height) for seed in range(count)]


# ---------------------------------------------------------------- SeaweedFS


@dataclass
class Weed:
    process: subprocess.Popen[bytes]
    directory: Path
    url: str
    key_id: str
    secret: str
    filer_port: int = 0

    def cpu(self) -> float:
        return pid_cpu(self.process.pid)

    def client(self, connections: int = 10):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            config=Config(
                max_pool_connections=connections,
                retries={"max_attempts": 3},
                request_checksum_calculation="when_required",
            ),
        )

    def storage_config(self, bucket: str, prefix: str) -> str:
        return (
            'backend = "s3"\n[storage.s3]\n'
            f'bucket = "{bucket}"\nendpoint_url = "{self.url}"\nprefix = "{prefix}"\n'
            f'access_key_id = "{self.key_id}"\nsecret_access_key = "{self.secret}"\n'
        )


@contextlib.contextmanager
def seaweed(parent: Path) -> Iterator[Weed]:
    """`weed mini` on ten free loopback ports in a directory of its own, as
    .ci/run starts it (its AWS_* variables make it check signatures)."""
    directory = Path(tempfile.mkdtemp(prefix="weed-", dir=parent))
    ports = free_ports(10)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc = ports
    key_id, secret = "pymager-bench", secrets.token_urlsafe(30)
    command = [
        str(VENV_BIN / "weed"),
        "mini",
        f"-dir={directory}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
    ]
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    process = subprocess.Popen(
        command, env=environment, stdout=(directory / "weed.log").open("wb"), stderr=subprocess.STDOUT
    )
    weed = Weed(process, directory, f"http://127.0.0.1:{s3}", key_id, secret, filer)
    try:
        client = weed.client()
        deadline = time.monotonic() + 90
        while True:
            try:
                client.list_buckets()
                break
            except Exception as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        "weed mini did not start:\n" + (directory / "weed.log").read_text()[-3000:]
                    ) from error
                time.sleep(0.5)
        log(f"SeaweedFS up at {weed.url}")
        yield weed
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def make_bucket(weed: Weed, name: str) -> None:
    weed.client().create_bucket(Bucket=name)


# ---------------------------------------------------------------- PostgreSQL


def _admin_connection():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A database of our own on the shared server, dropped afterwards."""
    with _admin_connection() as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with _admin_connection() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds of every server process connected to database (its
    backends: the pool of each pymager-tx process and its LISTEN)."""
    with _admin_connection() as connection:
        pids = [
            row[0]
            for row in connection.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))
        ]
    return {pid: pid_cpu(pid) for pid in pids}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


# ---------------------------------------------------------------- servers and metrics


def start(
    directory: Path,
    *,
    database_url: str = "",
    storage: str = "",
    memory_cache: int = 0,
    records: int | None = None,
    threads: int = 2,
    sizes: list[str] | None = None,
    name: str = "pymager-tx",
    extra: str = "",
) -> tuple[Server, float]:
    """A pymager-tx, and the seconds from its exec to its first answer.
    memory_cache: [memory_cache] max_bytes (0: no rendition bytes held);
    records: max_records (None: the default; 0: every request asks the
    database for its row)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = f'[database]\nurl = "{database_url}"\n' if database_url else ""
    config += f"[memory_cache]\nmax_bytes = {memory_cache}\n"
    if records is not None:
        config += f"max_records = {records}\n"
    started = time.perf_counter()
    server = start_pymager(
        directory,
        sizes or [*SIZES, HELD_BACK],
        threads=threads,
        access_log=False,
        name=name,
        storage=storage,
        extra_config=config + extra,
        ready_within=600,
    )
    return server, time.perf_counter() - started


def metric_sum(server: Server, prefix: str) -> float:
    """Sum of every sample of the metric lines starting with prefix."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


COUNTERS = {
    "db_tx": "pymager_db_transaction_duration_seconds_count",
    "bucket_ops": "pymager_storage_operation_duration_seconds_count",
}


def counters(servers: list[Server]) -> dict[str, float]:
    return {name: sum(metric_sum(server, prefix) for server in servers) for name, prefix in COUNTERS.items()}


def derivations_logged(servers: list[Server]) -> int:
    return sum(server.log_path.read_text(errors="replace").count(" Derived ") for server in servers)


def upload_requests(servers: list[Server], images: list[bytes], prefix: str) -> list[Request]:
    return [
        Request(
            "PUT",
            f"{servers[index % len(servers)].base_url}/original/{prefix}{index:04d}",
            body,
            "image/jpeg",
            expect_status=201,
        )
        for index, body in enumerate(images)
    ]


def derived_paths(ids: list[str], sizes: list[str]) -> list[str]:
    return [f"/derived/{image_id}-{size}.jpg" for image_id in ids for size in sizes]


def expect(size: str) -> tuple[int, int]:
    width, height = size.split("x")
    return int(width), int(height)


@dataclass
class Measured:
    """One phase against some servers, with the CPU of everything it used."""

    phase: Phase
    requests: int
    pymager_cpu: float
    weed_cpu: float = math.nan
    postgres_cpu: float = math.nan
    db_tx: float = math.nan
    bucket_ops: float = math.nan

    def row(self) -> dict[str, object]:
        per = max(self.requests, 1)
        return {
            "requests": self.requests,
            "errors": len(self.phase.errors),
            "first_errors": self.phase.errors[:3],
            "req_per_s": round(self.phase.rate, 1),
            "p50_ms": round(self.phase.p(50), 2),
            "p99_ms": round(self.phase.p(99), 2),
            "pymager_cpu_ms": round(self.pymager_cpu / per * 1000, 3),
            "weed_cpu_ms": round(self.weed_cpu / per * 1000, 3),
            "postgres_cpu_ms": round(self.postgres_cpu / per * 1000, 3),
            "db_tx_per_request": round(self.db_tx / per, 2),
            "bucket_ops_per_request": round(self.bucket_ops / per, 2),
            "other_cores": round(self.phase.other_cores, 2),
        }


def machine_busy() -> tuple[float, float]:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(value) for value in fields]
    idle = values[3] + values[4]
    return sum(values) / CLK_TCK, (sum(values) - idle) / CLK_TCK


def measure(
    run: Callable[[], Phase],
    servers: list[Server],
    weed: Weed | None = None,
    postgres: str | None = None,
) -> Measured:
    """Runs a phase, with the CPU of the servers, weed and PostgreSQL's
    backends around it, and the servers' own counts of database
    transactions and bucket operations."""
    cpu = lambda: sum(server.cpu_seconds() for server in servers)  # noqa: E731
    before_count = counters(servers)
    pymager_before, weed_before = cpu(), weed.cpu() if weed else math.nan
    postgres_before = postgres_backend_cpu(postgres) if postgres else {}
    total_before, busy_before = machine_busy()
    client_before = time.process_time()
    phase = run()
    total_after, busy_after = machine_busy()
    pymager = cpu() - pymager_before
    weed_used = weed.cpu() - weed_before if weed else math.nan
    postgres_used = cpu_delta(postgres_before, postgres_backend_cpu(postgres)) if postgres else math.nan
    ours = pymager + (weed_used if weed else 0) + (postgres_used if postgres else 0)
    ours += phase.client_cpu or (time.process_time() - client_before)
    elapsed = (total_after - total_before) / (os.cpu_count() or 1)
    if elapsed > 0:
        phase.other_cores = max(0.0, (busy_after - busy_before - ours) / elapsed)
    after_count = counters(servers)
    return Measured(
        phase,
        phase.done,
        pymager,
        weed_used,
        postgres_used,
        after_count["db_tx"] - before_count["db_tx"],
        after_count["bucket_ops"] - before_count["bucket_ops"],
    )


def table(rows: list[tuple[str, dict[str, object]]], columns: list[str]) -> str:
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(str(row.get(column, "")) for column in columns) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- storage: S3 against the filesystem


def phase_storage(arguments: argparse.Namespace, work: Path) -> str:
    """Servers identical but for [storage]: the filesystem, the bucket with
    its local disk cache (the default), the bucket alone ([storage.cache]
    max_bytes = 0); the same uploads, cold and warm requests in turn."""
    images = photos(arguments.originals, 2400, 1600)
    with seaweed(work) as weed:
        make_bucket(weed, "scale")
        servers = {
            "filesystem": start(work / "fs", memory_cache=0)[0],
            "s3": start(work / "s3", storage=weed.storage_config("scale", "storage"), memory_cache=0)[0],
            "s3, no disk cache": start(
                work / "s3-bare",
                storage=weed.storage_config("scale", "bare") + "[storage.cache]\nmax_bytes = 0\n",
                memory_cache=0,
            )[0],
        }
        results: dict[str, dict[str, list[dict[str, object]]]] = {name: {} for name in servers}
        try:
            order = list(servers)
            ids = [f"up{index:04d}" for index in range(len(images))]
            for name in order:
                measured = measure(
                    partial(run_counted, "upload", upload_requests([servers[name]], images, "up"), 2),
                    [servers[name]],
                    weed if name.startswith("s3") else None,
                )
                results[name].setdefault("upload", []).append(measured.row())
            # Cold: every size of every original once, the servers in turn a size at a time.
            for size in SIZES:
                for name in order if size != SIZES[1] else order[::-1]:
                    requests = [
                        Request("GET", servers[name].base_url + path, expect_size=expect(size))
                        for path in derived_paths(ids, [size])
                    ]
                    measured = measure(
                        partial(run_counted, f"cold {size}", requests, 2),
                        [servers[name]],
                        weed if name.startswith("s3") else None,
                    )
                    results[name].setdefault("cold", []).append(measured.row())
            paths = derived_paths(ids, SIZES)
            for round_index in range(arguments.rounds):
                for name in order if round_index % 2 == 0 else order[::-1]:
                    measured = measure(
                        partial(run_wrk, "warm", servers[name].base_url, paths, 4, arguments.seconds),
                        [servers[name]],
                        weed if name.startswith("s3") else None,
                    )
                    results[name].setdefault("warm", []).append(measured.row())
                    # Originals, whole, from storage (the memory cache holds renditions only).
                    measured = measure(
                        partial(
                            run_wrk,
                            "original",
                            servers[name].base_url,
                            [f"/original/{i}" for i in ids],
                            4,
                            arguments.seconds,
                        ),
                        [servers[name]],
                        weed if name.startswith("s3") else None,
                    )
                    results[name].setdefault("original", []).append(measured.row())
        finally:
            for server in servers.values():
                server.stop()
    (OUT / "storage.json").write_text(json.dumps(results, indent=1))
    return storage_report(results, arguments)


def combine(rows: list[dict[str, object]]) -> dict[str, object]:
    """Phases split in parts (cold: one per size; warm: one per round):
    request-weighted CPU, median rates and latencies."""
    total = sum(int(row["requests"]) for row in rows)  # type: ignore[call-overload]
    combined: dict[str, object] = {"requests": total, "errors": sum(int(row["errors"]) for row in rows)}  # type: ignore[call-overload]
    for key in (
        "pymager_cpu_ms",
        "weed_cpu_ms",
        "postgres_cpu_ms",
        "db_tx_per_request",
        "bucket_ops_per_request",
    ):
        values = [float(row[key]) * int(row["requests"]) for row in rows]  # type: ignore[arg-type,call-overload]
        combined[key] = round(sum(values) / total, 3) if total else math.nan
    for key in ("req_per_s", "p50_ms", "p99_ms", "other_cores"):
        combined[key] = round(statistics.median(float(row[key]) for row in rows), 2)  # type: ignore[arg-type]
    return combined


def storage_report(
    results: dict[str, dict[str, list[dict[str, object]]]], arguments: argparse.Namespace
) -> str:
    columns = [
        "requests",
        "errors",
        "req_per_s",
        "p50_ms",
        "p99_ms",
        "pymager_cpu_ms",
        "weed_cpu_ms",
        "bucket_ops_per_request",
        "other_cores",
    ]
    rows = []
    ratios = []
    for phase in ("upload", "cold", "warm", "original"):
        fs = combine(results["filesystem"][phase])
        rows.append((f"{phase}, filesystem", fs))
        for name in [each for each in results if each != "filesystem"]:
            s3 = combine(results[name][phase])
            rows.append((f"{phase}, {name}", s3))
            mine = {key: float(s3[key]) for key in ("pymager_cpu_ms", "weed_cpu_ms", "p50_ms", "req_per_s")}  # type: ignore[arg-type]
            base = {key: float(fs[key]) for key in ("pymager_cpu_ms", "p50_ms", "req_per_s")}  # type: ignore[arg-type]
            ratios.append(
                f"| {phase}, {name} | {mine['pymager_cpu_ms'] / base['pymager_cpu_ms']:.2f} | "
                f"{(mine['pymager_cpu_ms'] + mine['weed_cpu_ms']) / base['pymager_cpu_ms']:.2f} | "
                f"{mine['p50_ms'] / base['p50_ms']:.2f} | {mine['req_per_s'] / base['req_per_s']:.2f} |"
            )
    return (
        f"### S3 against the filesystem\n\n{arguments.originals} originals of 2400x1600 (JPEG q90), "
        f"cold: {', '.join(SIZES)} of each once, 2 at a time; warm: wrk -c4 {arguments.seconds:.0f} s x "
        f"{arguments.rounds} rounds over the renditions (memory cache off: each from storage), and the "
        "originals whole. CPU in ms per request; weed's CPU is the object store's own.\n\n"
        + table(rows, columns)
        + "\n\n| phase, store | s3 / fs pymager CPU | (s3 + weed) / fs CPU | s3 / fs p50 | s3 / fs req/s |\n"
        + "|---|---|---|---|---|\n"
        + "\n".join(ratios)
        + "\n"
    )


# ---------------------------------------------------------------- bulk rows


def _raw_rows(url: str) -> tuple[list[str], list[tuple[object, ...]], list[str], list[tuple[object, ...]]]:
    """The real rows (the server's, not the bulk copies), as the driver stores them."""
    original_columns = [column.name for column in originals.columns]
    derived_columns = [column.name for column in derived.columns]
    if url.startswith("sqlite:"):
        connection: object = sqlite3.connect(url.removeprefix("sqlite:///"))
    else:
        import psycopg

        connection = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
    with contextlib.closing(connection) as open_connection:  # type: ignore[type-var]
        cursor = open_connection.cursor()  # type: ignore[attr-defined]
        real = "WHERE image_id NOT LIKE 'scale%'"  # not the bulk rows
        cursor.execute(f"SELECT {', '.join(original_columns)} FROM originals {real}")
        real_originals = [tuple(row) for row in cursor.fetchall()]
        cursor.execute(f"SELECT {', '.join(derived_columns)} FROM derived {real}")
        real_derived = [tuple(row) for row in cursor.fetchall()]
    return original_columns, real_originals, derived_columns, real_derived


def fake_rows(
    url: str, first: int, count: int, batch: int = 20000
) -> Iterator[tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[str]]]:
    """Rows for originals first..first+count-1 (and three renditions each),
    batch at a time: a real ready original's row and its real rendition rows,
    with another ID, generation, sha256 and blob keys. Yields the rows and
    the blob keys they name."""
    original_columns, real_originals, derived_columns, real_derived = _raw_rows(url)
    template = next(row for row in real_originals if row[original_columns.index("status")] == "ready")
    template_id = template[original_columns.index("image_id")]
    renditions = [row for row in real_derived if row[0] == template_id]
    assert len(renditions) >= 3, f"the real original {template_id} has {len(renditions)} renditions"
    index = {name: original_columns.index(name) for name in ("image_id", "generation", "sha256", "blob_key")}
    dindex = {name: derived_columns.index(name) for name in ("image_id", "variant", "sha256", "blob_key")}
    for start_at in range(first, first + count, batch):
        rows_o, rows_d, keys = [], [], []
        for number in range(start_at, min(first + count, start_at + batch)):
            image_id, generation = f"scale{number:08d}", secrets.token_hex(16)
            row = list(template)
            row[index["image_id"]], row[index["generation"]] = image_id, generation
            row[index["sha256"]] = secrets.token_hex(32)
            row[index["blob_key"]] = original_key(ImageId(image_id), generation)
            rows_o.append(tuple(row))
            keys.append(row[index["blob_key"]])
            for rendition in renditions[:3]:
                drow = list(rendition)
                drow[dindex["image_id"]], drow[dindex["sha256"]] = image_id, secrets.token_hex(32)
                drow[dindex["blob_key"]] = derived_key(
                    ImageId(image_id), generation, str(drow[dindex["variant"]]), secrets.token_hex(8)
                )
                rows_d.append(tuple(drow))
                keys.append(drow[dindex["blob_key"]])
        yield rows_o, rows_d, keys  # type: ignore[misc]


def insert_rows(
    url: str, first: int, count: int, on_keys: Callable[[list[str]], None] | None = None
) -> float:
    """Bulk-inserts count fake originals (and three renditions each): COPY
    on PostgreSQL, executemany in one transaction a batch on SQLite. Returns
    the seconds it took (row making included)."""
    original_columns = [column.name for column in originals.columns]
    derived_columns = [column.name for column in derived.columns]
    started = time.perf_counter()
    if url.startswith("sqlite:"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        marks_o = ", ".join("?" * len(original_columns))
        marks_d = ", ".join("?" * len(derived_columns))
        for rows_o, rows_d, keys in fake_rows(url, first, count):
            with connection:
                connection.executemany(
                    f"INSERT INTO originals ({', '.join(original_columns)}) VALUES ({marks_o})", rows_o
                )
                connection.executemany(
                    f"INSERT INTO derived ({', '.join(derived_columns)}) VALUES ({marks_d})", rows_d
                )
            if on_keys:
                on_keys(keys)
        connection.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as connection:
            for rows_o, rows_d, keys in fake_rows(url, first, count):
                with connection.cursor() as cursor:
                    with cursor.copy(f"COPY originals ({', '.join(original_columns)}) FROM STDIN") as copy:
                        for row in rows_o:
                            copy.write_row(row)
                    with cursor.copy(f"COPY derived ({', '.join(derived_columns)}) FROM STDIN") as copy:
                        for row in rows_d:
                            copy.write_row(row)
                connection.commit()
                if on_keys:
                    on_keys(keys)
            connection.execute("ANALYZE originals")
            connection.execute("ANALYZE derived")
            connection.commit()
    return time.perf_counter() - started


def database_bytes(url: str) -> int:
    if url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(each.stat().st_size for each in path.parent.glob(path.name + "*"))
    with _admin_connection() as connection:
        name = url.rsplit("/", 1)[1]
        return int(connection.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0])  # type: ignore[index]


def count_bulk(engine: Any) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM originals WHERE image_id LIKE 'scale%'")).scalar_one()
        )


def time_queries(url: str, image_id: str, variant: str) -> dict[str, float]:
    """Milliseconds (best of 5) of the project's own transaction bodies that
    start-up, a lookup, a listing and a repair run, on an engine made as the
    server makes it: what grows with the tables shows here."""
    from pymager_tx.adapters.sql.database import make_engine
    from pymager_tx.adapters.sql.listing_txn import list_originals_txn
    from pymager_tx.adapters.sql.originals_txn import unfinished_txn
    from pymager_tx.adapters.sql.renditions_txn import claims_txn, lookup_derived_txn, names_blob_txn

    engine = make_engine(url, 1)
    bodies: dict[str, Callable[[Any], object]] = {
        "lookup_derived": lambda conn: lookup_derived_txn(conn, image_id, variant),
        "unfinished (start-up)": unfinished_txn,
        "claims (start-up)": claims_txn,
        "list 20 from the middle": lambda conn: list_originals_txn(conn, "scale00005000", 20),
        "names_blob, absent key (repair, each orphan)": lambda conn: names_blob_txn(conn, "derived/zz/none"),
    }
    timings = {}
    try:
        # The long tail: lookups spread over the bulk rows, each one once
        # (their pages read from wherever the database finds them).
        bulk = count_bulk(engine)
        if bulk:
            rng = random.Random(14)
            spread = [f"scale{rng.randrange(bulk):08d}" for _ in range(500)]
            with engine.connect() as conn:
                started = time.perf_counter()
                for each in spread:
                    lookup_derived_txn(conn, each, variant)
                timings["lookup_derived, 500 bulk rows at random (mean)"] = round(
                    (time.perf_counter() - started) / len(spread) * 1000, 3
                )
                conn.rollback()
        for name, body in bodies.items():
            best = math.inf
            for _ in range(5):
                with engine.connect() as conn:
                    started = time.perf_counter()
                    body(conn)
                    best = min(best, time.perf_counter() - started)
                    conn.rollback()
            timings[name] = round(best * 1000, 3)
    finally:
        engine.dispose()
    return timings


# ---------------------------------------------------------------- growth: lookups and start-up by size


def seed_real(server: Server, images: list[bytes], prefix: str) -> list[str]:
    """Uploads real originals and derives their three renditions."""
    uploads = run_counted("seed upload", upload_requests([server], images, prefix), 2)
    ids = [f"{prefix}{index:04d}" for index in range(len(images))]
    derive = run_counted(
        "seed derive",
        [Request("GET", server.base_url + path) for path in derived_paths(ids, SIZES)],
        2,
    )
    problems = uploads.errors + derive.errors
    if problems:
        raise SystemExit(f"seeding failed: {problems[:3]}")
    return ids


def phase_growth(arguments: argparse.Namespace, work: Path) -> str:
    images = photos(arguments.real, 800, 600)
    results: dict[str, list[dict[str, object]]] = {}
    for database in arguments.database:
        with contextlib.ExitStack() as stack:
            directory = work / f"growth-{database}"
            if database == "sqlite":
                url = f"sqlite:///{directory / 'data' / 'pymager.sqlite3'}"
                server_url = ""
            else:
                url = stack.enter_context(postgres_database("pymager_scale_growth"))
                server_url = url
            server, _ = start(directory, database_url=server_url)
            try:
                ids = seed_real(server, images, "real")
            finally:
                server.stop()
            present = 0
            for target in arguments.originals:
                added = target - present
                log(f"{database}: inserting {added} originals and {3 * added} renditions")
                seconds = insert_rows(url, present, added)
                present = target
                row: dict[str, object] = {
                    "database": database,
                    "originals": target + len(ids),
                    "insert_s": round(seconds, 1),
                    "database_mb": round(database_bytes(url) / 2**20, 1),
                }
                startups = []
                for attempt in range(arguments.starts):
                    server, startup = start(directory, database_url=server_url, records=0)
                    startups.append(startup)
                    if attempt < arguments.starts - 1:
                        server.stop()
                row["startup_s"] = [round(value, 2) for value in startups]
                variant = _raw_rows(url)[3][0][1]
                row["queries_ms"] = time_queries(server_url or url, ids[0], str(variant))
                try:
                    paths = derived_paths(ids, SIZES)
                    # One at a time: the latency of a lookup without queueing.
                    serial = [
                        Request("GET", server.base_url + path, expect_size=None)
                        for path in paths * arguments.serial_rounds
                    ]
                    one = measure(partial(run_counted, "serial", serial, 1), [server])
                    row["serial"] = one.row()
                    warm = [
                        measure(
                            partial(run_wrk, "warm", server.base_url, paths, 4, arguments.seconds), [server]
                        )
                        for _ in range(arguments.rounds)
                    ]
                    row["warm"] = combine([each.row() for each in warm])
                    meta = measure(
                        partial(
                            run_wrk,
                            "meta",
                            server.base_url,
                            [f"/meta/{i}" for i in ids],
                            4,
                            arguments.seconds,
                        ),
                        [server],
                    )
                    row["meta"] = meta.row()
                    listing = measure(
                        partial(
                            run_wrk,
                            "list",
                            server.base_url,
                            [f"/originals?limit=20&after=scale{present // 2:08d}", "/originals?limit=20"],
                            4,
                            arguments.seconds,
                        ),
                        [server],
                    )
                    row["list"] = listing.row()
                finally:
                    server.stop()
                results.setdefault(database, []).append(row)
                log(json.dumps(row))
                (OUT / "growth.json").write_text(json.dumps(results, indent=1))
    return growth_report(results, arguments)


def growth_report(results: dict[str, list[dict[str, object]]], arguments: argparse.Namespace) -> str:
    lines = [
        "### Warm lookups and start-up against the store's size\n",
        f"{arguments.real} real originals (800x600) with their {3 * arguments.real} renditions, among "
        "bulk-inserted rows; memory cache off and no rows remembered (`max_bytes = 0`, `max_records = 0`), "
        "so every request is a database lookup and a file read. "
        "serial: each rendition one at a time; warm: wrk -c4 over the renditions "
        f"({arguments.rounds} x {arguments.seconds:.0f} s, medians); meta: GET /meta of the real originals; "
        "list: GET /originals?limit=20 (from the start, and from the middle). Start-up: exec to the first "
        "answer, each start.\n",
        "| database | originals | rows inserted in | database size | start-up s | serial p50 / p99 ms | "
        "serial CPU ms/req | warm req/s | warm p50 / p99 ms | warm CPU ms/req | meta p50 ms, CPU ms | "
        "list p50 ms, CPU ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for database, rows in results.items():
        for row in rows:
            serial, warm, meta, listing = (row[key] for key in ("serial", "warm", "meta", "list"))
            lines.append(
                f"| {database} | {row['originals']:,} | {row['insert_s']} s | {row['database_mb']} MB | "
                f"{', '.join(map(str, row['startup_s']))} | "  # type: ignore[call-overload]
                f"{serial['p50_ms']} / {serial['p99_ms']} | {serial['pymager_cpu_ms']} | "  # type: ignore[index]
                f"{warm['req_per_s']} | {warm['p50_ms']} / {warm['p99_ms']} | {warm['pymager_cpu_ms']} | "  # type: ignore[index]
                f"{meta['p50_ms']}, {meta['pymager_cpu_ms']} | "  # type: ignore[index]
                f"{listing['p50_ms']}, {listing['pymager_cpu_ms']} |"  # type: ignore[index]
            )
    lines += [
        "",
        "The project's own transaction bodies alone (`make_engine` as the server makes it), "
        "best of 5, in ms:\n",
    ]
    names = list(
        dict.fromkeys(name for rows in results.values() for row in rows for name in row["queries_ms"])
    )  # type: ignore[attr-defined]
    lines.append("| database | originals | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for database, rows in results.items():
        for row in rows:
            queries = row["queries_ms"]
            cells = " | ".join(str(queries.get(name, "")) for name in names)  # type: ignore[attr-defined]
            lines.append(f"| {database} | {row['originals']:,} | {cells} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- check: memory and time by size


def rusage_run(command: list[str], environment: dict[str, str], log_path: Path) -> tuple[int, float, int]:
    """Runs command under GNU time; its exit status, wall seconds and peak
    RSS (KiB). Not wait4's rusage of our own child: Linux carries the
    parent's high-water mark into a child across fork and exec, so a child
    of this (large) process would report at least this process's RSS.
    time is small, so the mark of its child is the command's own."""
    report = log_path.with_suffix(".time")
    started = time.perf_counter()
    with log_path.open("wb") as output:
        status = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(report), *command],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        ).returncode
    seconds = time.perf_counter() - started
    peak_kb = int(report.read_text().split()[-1])
    return status, seconds, peak_kb


def phase_check(arguments: argparse.Namespace, work: Path) -> str:
    images = photos(1, 800, 600)
    results: list[dict[str, object]] = []
    with seaweed(work) as weed, postgres_database("pymager_scale_check") as url:
        make_bucket(weed, "scale")
        directory = work / "check"
        storage = weed.storage_config("scale", "check")
        server, _ = start(directory, database_url=url, storage=storage)
        try:
            seed_real(server, images, "real")
        finally:
            server.stop()
        pool = ThreadPoolExecutor(arguments.writers)
        local = threading.local()
        written = [0, 0.0]

        def put(key: str) -> None:
            # Through weed's filer, on kept-alive connections: the same
            # object as an S3 PutObject into the bucket (weed keeps buckets
            # under /buckets/), at a quarter of boto3's client CPU.
            for attempt in (1, 2):
                connection = getattr(local, "connection", None)
                if connection is None:
                    connection = local.connection = http.client.HTTPConnection(
                        "127.0.0.1", weed.filer_port, timeout=60
                    )
                try:
                    connection.request("PUT", f"/buckets/scale/check/{key}", body=b"x")
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    # The filer closes idle kept-alive connections: once more on a new one.
                    connection.close()
                    local.connection = None
                    if attempt == 2:
                        raise
                    continue
                if response.status >= 300:
                    raise RuntimeError(f"filer PUT {key}: {response.status}")
                return

        def write(keys: list[str]) -> None:
            started = time.perf_counter()
            list(pool.map(put, keys))
            written[0] += len(keys)
            written[1] += time.perf_counter() - started

        present = 0
        for objects in arguments.objects:
            originals_wanted = objects // 4  # each original: itself and three renditions
            added = originals_wanted - present
            log(f"check: {added} originals and {3 * added} renditions, rows and objects")
            insert_rows(url, present, added, on_keys=write)
            present = originals_wanted
            log(
                f"bucket writes: {written[0]} objects in {written[1]:.0f} s ({written[0] / written[1]:.0f}/s)"
            )
            environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONDONTWRITEBYTECODE": "1"}
            runs = []
            for attempt in range(arguments.check_runs):
                status, seconds, peak_kb = rusage_run(
                    [str(VENV_BIN / "pymager-admin"), "check", "--config", str(directory / "pymager.toml")],
                    environment,
                    OUT / f"check-{objects}-{attempt}.log",
                )
                runs.append(
                    {"status": status, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}
                )
                log(f"check on {objects}: {runs[-1]}")
            parts = {}
            for part in ("baseline", "listing", "index"):
                status, seconds, peak_kb = rusage_run(
                    [
                        sys.executable,
                        __file__,
                        "part",
                        "--part",
                        part,
                        "--config",
                        str(directory / "pymager.toml"),
                    ],
                    environment,
                    OUT / f"part-{objects}-{part}.log",
                )
                parts[part] = {
                    "status": status,
                    "seconds": round(seconds, 1),
                    "peak_rss_mb": round(peak_kb / 1024, 1),
                }
            log(f"parts on {objects}: {parts}")
            results.append(
                {
                    "objects": present * 4 + 4,
                    "rows": present * 4 + 4,
                    "runs": runs,
                    "parts": parts,
                    "bucket_writes_per_s": round(written[0] / written[1], 0),
                }
            )
            (OUT / "check.json").write_text(json.dumps(results, indent=1))
        pool.shutdown()
    lines = [
        "### pymager-admin check against the bucket's size\n",
        "Objects: originals and three renditions each, one row per object in PostgreSQL, one "
        "1-byte object per row in SeaweedFS (the check compares keys, not bytes), so every "
        "run ends `consistent`. Peak RSS from GNU time (`%M`: the command's own high-water mark).\n",
        "| objects in the bucket (and rows) | exit | seconds | peak RSS MB "
        "| KB per object added since the row above |",
        "|---|---|---|---|---|",
    ]
    previous: tuple[int, float] | None = None
    for result in results:
        objects = int(result["objects"])  # type: ignore[call-overload]
        for run in result["runs"]:  # type: ignore[attr-defined]
            growth = (
                f"{(run['peak_rss_mb'] - previous[1]) * 1024 / (objects - previous[0]):.2f}"
                if previous
                else ""
            )
            lines.append(
                f"| {objects:,} | {run['status']} | {run['seconds']} | {run['peak_rss_mb']} | {growth} |"
            )
        previous = (objects, result["runs"][0]["peak_rss_mb"])  # type: ignore[index]
    lines += [
        "",
        "Where the memory goes: the same store, each part of check alone in a process of its own "
        "(`bench/scale.py part`): the process with its store built and nothing read (baseline), "
        "`every_key` over originals/ and derived/ (listing), one `store_index` (index; check "
        "holds two at once, `before` and `after`, beside the listing).\n",
        "| objects | baseline MB | + listing MB | + one index MB | listing KB/object | index KB/object |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        parts = result["parts"]  # type: ignore[assignment]
        base = parts["baseline"]["peak_rss_mb"]  # type: ignore[index]
        listing = parts["listing"]["peak_rss_mb"]  # type: ignore[index]
        index = parts["index"]["peak_rss_mb"]  # type: ignore[index]
        objects = int(result["objects"])  # type: ignore[call-overload]
        lines.append(
            f"| {objects:,} | {base} | {listing - base:.1f} | {index - base:.1f} | "
            f"{(listing - base) * 1024 / objects:.2f} | {(index - base) * 1024 / objects:.2f} |"
        )
    return "\n".join(lines) + "\n"


def part_alone(arguments: argparse.Namespace) -> None:
    """One part of `pymager-admin check`, built as check builds its store:
    what it alone holds shows in this process's peak RSS."""
    from twisted.internet.defer import Deferred

    from pymager_tx.admin.command import target_of
    from pymager_tx.app.consistency import _now
    from pymager_tx.app.service import claimed_key
    from pymager_tx.ports import every_key
    from pymager_tx.process.wiring import Offloads, build_store

    target = target_of(arguments.config, None, None)
    store = build_store(target.settings, Offloads.at_once(), pool_size=1)
    held: object = None
    if arguments.part == "listing":
        keys: set[str] = set()
        for top in ("originals", "derived"):
            keys |= _now(Deferred.fromCoroutine(every_key(store.blobs, top)))
        held = keys
    elif arguments.part == "index":
        held = _now(store.database.store_index(claimed_key))
    print(arguments.part, "held", type(held).__name__)
    store.database.engine.dispose()


# ---------------------------------------------------------------- nodes: one database, one bucket, 1..3 nodes


def phase_nodes(arguments: argparse.Namespace, work: Path) -> str:
    images = photos(arguments.originals, 2400, 1600)
    results: dict[int, dict[str, object]] = {}
    with seaweed(work) as weed:
        make_bucket(weed, "scale")
        for count in arguments.nodes:
            name = f"pymager_scale_nodes{count}"
            with postgres_database(name) as url:
                threads = max(1, 2 // count)
                nodes = []
                try:
                    for index in range(count):
                        nodes.append(
                            start(
                                work / f"nodes{count}" / f"node{index}",
                                database_url=url,
                                storage=weed.storage_config("scale", f"nodes{count}"),
                                threads=threads,
                                records=0,
                                name=f"node{index}",
                                extra='[cluster]\nliveness = "database"\n',
                            )[0]
                        )
                    results[count] = run_nodes(nodes, images, weed, name, arguments)
                    results[count]["image_threads_each"] = threads
                finally:
                    for node in nodes:
                        node.stop()
                log(f"{count} nodes: {json.dumps(results[count])}")
                (OUT / "nodes.json").write_text(json.dumps(results, indent=1))
    return nodes_report(results, arguments)


def run_nodes(
    nodes: list[Server], images: list[bytes], weed: Weed, database: str, arguments: argparse.Namespace
) -> dict[str, object]:
    result: dict[str, object] = {}
    upload = measure(
        lambda: run_counted("upload", upload_requests(nodes, images, "n"), 4), nodes, weed, database
    )
    result["upload"] = upload.row()
    ids = [f"n{index:04d}" for index in range(len(images))]
    # Cold: every rendition once, the requests spread over the nodes in turn.
    cold = [
        Request(
            "GET", nodes[index % len(nodes)].base_url + path, expect_size=expect(path.rsplit("-", 1)[1][:-4])
        )
        for index, path in enumerate(derived_paths(ids, SIZES))
    ]
    derived_before = derivations_logged(nodes)
    result["cold"] = measure(lambda: run_counted("cold", cold, 4), nodes, weed, database).row()
    result["cold_derivations"] = derivations_logged(nodes) - derived_before
    # Dedupe: fanout first requests for one rendition nobody asked for yet,
    # spread over the nodes, one image at a time.
    derived_before = derivations_logged(nodes)
    dedupe_rows = []
    for image_id in ids[: arguments.dedupe_images]:
        requests = [
            Request(
                "GET",
                nodes[index % len(nodes)].base_url + f"/derived/{image_id}-{HELD_BACK}.jpg",
                expect_size=expect(HELD_BACK),
            )
            for index in range(arguments.fanout)
        ]
        dedupe_rows.append(
            measure(partial(run_counted, "dedupe", requests, arguments.fanout), nodes, weed, database).row()
        )
    result["dedupe"] = combine(dedupe_rows)
    result["dedupe_derivations"] = derivations_logged(nodes) - derived_before
    result["dedupe_urls"] = arguments.dedupe_images
    # Warm: one wrk per node at once, 4 connections in all, memory cache off.
    paths = derived_paths(ids, SIZES)
    warm_rows = []
    for _ in range(arguments.rounds):
        warm_rows.append(
            measure(lambda: parallel_wrk(nodes, paths, arguments.seconds), nodes, weed, database).row()
        )
    result["warm"] = combine(warm_rows)
    return result


def parallel_wrk(nodes: list[Server], paths: list[str], seconds: float) -> Phase:
    """wrk against every node at once, 4 connections in all; one Phase of the sums."""
    phases: list[Phase] = [Phase("warm", 0) for _ in nodes]
    connections = max(1, 4 // len(nodes)) if len(nodes) < 4 else 1

    def one(index: int) -> None:
        phases[index] = run_wrk(
            "warm", nodes[index].base_url, paths, connections + (index < 4 % len(nodes)), seconds
        )

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Phase("warm", 0)
    total.wall = max(phase.wall for phase in phases)
    total.errors = [error for phase in phases for error in phase.errors]
    total.client_cpu = sum(phase.client_cpu for phase in phases)
    total.reported["requests"] = sum(phase.done for phase in phases)
    total.reported["p50"] = statistics.median(phase.p(50) for phase in phases)
    total.reported["p99"] = max(phase.p(99) for phase in phases)
    return total


def nodes_report(results: dict[int, dict[str, object]], arguments: argparse.Namespace) -> str:
    lines = [
        "### 1, 2 and 3 nodes on one PostgreSQL and one bucket, on 2 cores\n",
        f"{arguments.originals} originals of 2400x1600; each node its own data directory, "
        '`liveness = "database"`, memory cache off and no rows remembered (every warm request a '
        "database lookup and a bucket read: the worst case for both); "
        "requests spread over the nodes in turn. "
        "CPU per request, in ms: the nodes, weed, PostgreSQL's backends of the database. "
        "DB transactions and bucket operations per request: the nodes' own counts (/metrics).\n",
        "| nodes (image threads each) | phase | req/s | p50 / p99 ms | nodes CPU | weed CPU "
        "| PostgreSQL CPU | "
        "DB tx / req | bucket ops / req | derivations | other cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for count, result in results.items():
        for phase in ("upload", "cold", "dedupe", "warm"):
            row = result[phase]
            derivations = {
                "cold": f"{result['cold_derivations']} for {row['requests']} URLs",  # type: ignore[index]
                "dedupe": f"{result['dedupe_derivations']} for "
                f"{result['dedupe_urls']} URLs x {arguments.fanout}",
            }.get(phase, "")
            lines.append(
                f"| {count} ({result['image_threads_each']}) | {phase} | {row['req_per_s']} | "  # type: ignore[index]
                f"{row['p50_ms']} / {row['p99_ms']} | {row['pymager_cpu_ms']} | {row['weed_cpu_ms']} | "  # type: ignore[index]
                f"{row.get('postgres_cpu_ms', '')} | {row['db_tx_per_request']} | "  # type: ignore[index,union-attr]
                f"{row['bucket_ops_per_request']} | "  # type: ignore[index]
                f"{derivations} | {row['other_cores']} |"  # type: ignore[index]
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("phase", choices=["storage", "growth", "check", "nodes", "part"])
    parser.add_argument("--part", choices=["baseline", "listing", "index"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="the Markdown fragment (default bench/out/scale/<phase>.md)")
    parser.add_argument(
        "--originals",
        type=int,
        action="append",
        help="storage, nodes: originals uploaded (24); "
        "growth: originals in the database, repeatable (10000, 1000000)",
    )
    parser.add_argument("--database", action="append", choices=["postgresql", "sqlite"], help="growth (both)")
    parser.add_argument("--real", type=int, default=20, help="growth: real originals requested (20)")
    parser.add_argument("--starts", type=int, default=3, help="growth: start-ups timed at each size (3)")
    parser.add_argument("--serial-rounds", type=int, default=5, help="growth: one-at-a-time rounds (5)")
    parser.add_argument("--objects", type=int, action="append", help="check: bucket sizes, repeatable")
    parser.add_argument("--writers", type=int, default=16, help="check: threads writing objects (16)")
    parser.add_argument("--check-runs", type=int, default=1, help="check: runs of check at each size (1)")
    parser.add_argument("--nodes", type=int, action="append", help="nodes: node counts, repeatable (1, 2, 3)")
    parser.add_argument("--dedupe-images", type=int, default=6)
    parser.add_argument("--fanout", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="warm rounds (2)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of each warm round (8)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    arguments = parser.parse_args()
    if arguments.phase == "part":
        part_alone(arguments)
        return
    if arguments.phase == "growth":
        arguments.originals = arguments.originals or [10_000, 1_000_000]
        arguments.database = arguments.database or ["postgresql", "sqlite"]
    else:
        arguments.originals = (arguments.originals or [24])[0]
    arguments.objects = arguments.objects or [100_000, 300_000, 1_000_000]
    arguments.nodes = arguments.nodes or [1, 2, 3]
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{arguments.phase}-", dir=OUT))
    started = time.perf_counter()
    try:
        report = {
            "storage": phase_storage,
            "growth": phase_growth,
            "check": phase_check,
            "nodes": phase_nodes,
        }[arguments.phase](arguments, work)
    finally:
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)
    header = (
        f"Machine: {machine_line()}; commit {commit()}; "
        f"`{' '.join(['bench/scale.py', *sys.argv[1:]])}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{time.perf_counter() - started:.0f} s.\n\n"
    )
    out = arguments.out or OUT / f"{arguments.phase}.md"
    out.write_text(header + report)
    print(header + report)


if __name__ == "__main__":
    main()
