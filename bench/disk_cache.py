"""
What the local disk cache in front of a bucket saves: two `twistd pymager`
side by side in one run, on one S3-compatible bucket (each under a prefix of
its own), identical but for `[storage.cache] max_bytes` (on, or 0), under
the same warm load: wrk over originals (never held in memory) and, with
--memory-cache off, renditions too, in alternating rounds so that drift on
a shared machine falls on both alike.

    PYTHONPATH=. .venv/bin/python bench/disk_cache.py --seconds 10 --rounds 3

The bucket comes from the environment the tests use (PYMAGER_TEST_S3_URL,
PYMAGER_TEST_S3_ACCESS_KEY_ID, PYMAGER_TEST_S3_SECRET_ACCESS_KEY; see
.ci/run for starting SeaweedFS's `weed mini`); a bucket of the run's own is
created there and removed after it.  Each server is scraped between rounds:
the bucket reads (GetObject: get and open) per warm request are counted,
which is what the cache is for (0 with it on, once warm), beside the rate,
the p99 and the server's CPU per request.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from uuid import uuid4

from PIL import Image

from bench import loadgen, servers
from bench.metrics_cost import call
from pymager_tx.adapters.storage.s3_client import make_client
from pymager_tx.config.storage import S3Settings

SIZES = ["100x100", "320x240"]


def photo(number: int) -> bytes:
    """A 1200x900 JPEG with some detail (about 300 KB: streamed, not read
    whole), different for each number."""
    image = Image.effect_mandelbrot((1200, 900), (-2.0 + number * 0.01, -1.2, 1.0, 1.2), 64).convert("RGB")
    image = Image.blend(image, Image.effect_noise((1200, 900), 24).convert("RGB"), 0.3)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def prepare(server: servers.Server, photos: list[bytes], renditions: bool) -> list[str]:
    """Upload the photos and derive each size once: the paths wrk asks for."""
    paths = []
    for number, data in enumerate(photos):
        status, _ = call(server, "PUT", f"/original/bench{number}", data)
        assert status == 201, status
        paths.append(f"/original/bench{number}")
        for size in SIZES:
            path = f"/derived/bench{number}-{size}.jpg"
            status, _ = call(server, "GET", path)
            assert status == 200, status
            if renditions:
                paths.append(path)
    return paths


def samples(server: servers.Server) -> dict[str, float]:
    status, body = call(server, "GET", "/metrics")
    assert status == 200, status
    wanted = {
        'pymager_storage_operation_duration_seconds_count{op="get"}': "get",
        'pymager_storage_operation_duration_seconds_count{op="open"}': "open",
        'pymager_disk_cache_requests_total{result="hit"}': "hit",
        'pymager_disk_cache_requests_total{result="miss"}': "miss",
    }
    found = dict.fromkeys(wanted.values(), 0.0)
    for line in body.decode().splitlines():
        name, _, number = line.rpartition(" ")
        if name in wanted:
            found[wanted[name]] = float(number)
    return found


def s3_config(prefix: str, bucket: str, cache_bytes: int) -> str:
    url = os.environ["PYMAGER_TEST_S3_URL"]
    lines = [
        "[storage.s3]",
        f'bucket = "{bucket}"',
        f'endpoint_url = "{url}"',
        f'prefix = "{prefix}"',
    ]
    if "PYMAGER_TEST_S3_ACCESS_KEY_ID" in os.environ:
        lines += [
            f'access_key_id = "{os.environ["PYMAGER_TEST_S3_ACCESS_KEY_ID"]}"',
            f'secret_access_key = "{os.environ["PYMAGER_TEST_S3_SECRET_ACCESS_KEY"]}"',
        ]
    lines += ["[storage.cache]", f"max_bytes = {cache_bytes}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server, alternating")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument(
        "--memory-cache",
        choices=["default", "off"],
        default="default",
        help="off: renditions are read from storage too, and are asked for beside the originals",
    )
    arguments = parser.parse_args()
    if "PYMAGER_TEST_S3_URL" not in os.environ:
        sys.exit("PYMAGER_TEST_S3_URL names no S3 server (see the docstring)")
    settings: dict[str, object] = {"bucket": "placeholder", "endpoint_url": os.environ["PYMAGER_TEST_S3_URL"]}
    if "PYMAGER_TEST_S3_ACCESS_KEY_ID" in os.environ:
        settings |= {
            "access_key_id": os.environ["PYMAGER_TEST_S3_ACCESS_KEY_ID"],
            "secret_access_key": os.environ["PYMAGER_TEST_S3_SECRET_ACCESS_KEY"],
        }
    client = make_client(S3Settings.model_validate(settings))
    bucket = f"pymager-bench-{uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    photos = [photo(number) for number in range(arguments.photos)]
    renditions = arguments.memory_cache == "off"
    problems: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="pymager-disk-cache-") as scratch:
            started: dict[str, servers.Server] = {}
            try:
                for name, cache_bytes in (("disk cache", 1 << 30), ("bucket only", 0)):
                    directory = Path(scratch) / name.replace(" ", "-")
                    directory.mkdir()
                    started[name] = servers.start_pymager(
                        directory,
                        SIZES,
                        1,
                        access_log=False,
                        memory_cache_bytes=0 if renditions else None,
                        name=name,
                        storage='backend = "s3"\n',
                        extra_config=s3_config(name.replace(" ", "-"), bucket, cache_bytes),
                    )
                paths = {name: prepare(server, photos, renditions) for name, server in started.items()}
                for name, server in started.items():
                    for path in paths[name]:  # the first reads: copies kept
                        status, _ = call(server, "GET", path)
                        assert status == 200, status
                rates: dict[str, list[float]] = {name: [] for name in started}
                p99: dict[str, list[float]] = {name: [] for name in started}
                cpu: dict[str, list[float]] = {name: [] for name in started}
                reads: dict[str, list[float]] = {name: [] for name in started}
                hits: dict[str, float] = dict.fromkeys(started, 0.0)
                for round_number in range(arguments.rounds):
                    order = list(started) if round_number % 2 == 0 else list(reversed(started))
                    for name in order:
                        server = started[name]
                        before = samples(server)
                        phase = loadgen.run_wrk(
                            "warm",
                            server.base_url,
                            paths[name],
                            arguments.concurrency,
                            arguments.seconds,
                            server_cpu=server.cpu_seconds,
                        )
                        after = samples(server)
                        problems += [f"{name}, round {round_number + 1}: {error}" for error in phase.errors]
                        done = max(1, phase.done)
                        rates[name].append(phase.rate)
                        p99[name].append(phase.reported.get("p99", float("nan")))
                        cpu[name].append(phase.server_cpu / done * 1e6)
                        bucket_reads = after["get"] + after["open"] - before["get"] - before["open"]
                        reads[name].append(bucket_reads / done)
                        hits[name] += after["hit"] - before["hit"]
            finally:
                for server in started.values():
                    server.stop()
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            names = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
            if names:
                client.delete_objects(Bucket=bucket, Delete={"Objects": names, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
        client.close()
    ratios = [on / off for on, off in zip(rates["disk cache"], rates["bucket only"], strict=True)]
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; bucket at {os.environ['PYMAGER_TEST_S3_URL']}"
    )
    also = " and their renditions" if renditions else ""
    print(
        f"warm GET of {len(paths['disk cache'])} paths ({arguments.photos} originals of about "
        f"{statistics.mean(map(len, photos)) / 1024:.0f} KiB{also}), "
        f"wrk -c{arguments.concurrency}, {arguments.rounds} rounds of {arguments.seconds:g} s per server, "
        f"memory cache {arguments.memory_cache}"
    )
    for name in started:
        each = ", ".join(f"{rate:.0f}" for rate in rates[name])
        print(
            f"  {name:11}  median {statistics.median(rates[name]):7.0f} req/s  (rounds: {each})  "
            f"p99 median {statistics.median(p99[name]):.1f} ms, "
            f"server CPU median {statistics.median(cpu[name]):.0f} µs/request, "
            f"bucket reads per request {statistics.median(reads[name]):.3f}"
        )
    print(
        f"  rate with the disk cache over without, median of paired rounds: {statistics.median(ratios):.2f}x"
    )
    if max(reads["disk cache"]) > 0:
        problems.append(f"the disk cache's server read the bucket while warm: {reads['disk cache']}")
    if hits["disk cache"] <= 0 or hits["bucket only"] != 0:
        problems.append(f"disk cache hits: {hits}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
