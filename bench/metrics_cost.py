"""
What the Prometheus metrics cost: two `twistd pymager` side by side in one
run, identical but for `[metrics] enabled`, under the same warm load (wrk
over derived images already made, the service's fastest and so most
sensitive path), in alternating rounds so that drift on a shared machine
falls on both alike.  With --workers 2 it measures multiprocess mode, where
every update writes a memory-mapped file.

    PYTHONPATH=. .venv/bin/python bench/metrics_cost.py --seconds 10 --rounds 3

The cost is read from pairs of rounds next to each other in time: the
server CPU per request with metrics over that without (what the warm rate
loses where the server is CPU-bound, and steadier than the rate on a shared
machine), and the rate lost, each the median over the pairs; issue 15 asks
for under 5% of the warm rate.  --control runs both without metrics, to
show the method's own noise: on a quiet machine the server started first
reads about 2% dearer, so run it with --first on and --first off and take
the mean of the two.  Between rounds each
server with metrics is scraped, and the scrape's count of the warm requests
is checked against what wrk reported (exact with --memory-cache off; wrk may
leave a few requests unanswered when it stops).
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from PIL import Image

from bench import loadgen, servers

SIZES = ["100x100", "200x150"]


def photo(number: int) -> bytes:
    """A 1200x900 JPEG with some detail, different for each number."""
    image = Image.effect_mandelbrot((1200, 900), (-2.0 + number * 0.01, -1.2, 1.0, 1.2), 64).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def call(server: servers.Server, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, path, body=body or None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def prepare(server: servers.Server, photos: list[bytes]) -> list[str]:
    """Upload the photos and derive each size once: the paths wrk asks for."""
    paths = []
    for number, data in enumerate(photos):
        status, _ = call(server, "PUT", f"/original/bench{number}", data)
        assert status == 201, status
        for size in SIZES:
            path = f"/derived/bench{number}-{size}.jpg"
            status, _ = call(server, "GET", path)
            assert status == 200, status
            paths.append(path)
    return paths


def warm_count(server: servers.Server) -> float:
    """GET /derived/<name> answered 200, as a scrape counts them."""
    status, body = call(server, "GET", "/metrics")
    assert status == 200, status
    prefix = 'pymager_http_requests_total{method="GET",route="/derived/<name>",status="200"} '
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server, alternating")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="processes per server (2+: multiprocess mode)")
    parser.add_argument("--threads", type=int, default=1, help="image threads per process")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument(
        "--memory-cache",
        choices=["default", "off"],
        default="default",
        help="off: every request reads the database and a file (more transactions and blob operations "
        "recorded per request)",
    )
    parser.add_argument(
        "--control", action="store_true", help="both servers without metrics: the noise of the method"
    )
    parser.add_argument(
        "--first",
        choices=("on", "off"),
        default="on",
        help="which server starts first (and is measured first in odd rounds): the control shows the "
        "first one reads about 2%% dearer on a quiet machine, so run both orders and take the mean",
    )
    arguments = parser.parse_args()
    photos = [photo(number) for number in range(arguments.photos)]
    cache = None if arguments.memory_cache == "default" else 0
    with tempfile.TemporaryDirectory(prefix="pymager-metrics-cost-") as scratch:
        started: dict[str, servers.Server] = {}
        try:
            order = (("metrics on", True), ("metrics off", False))
            for name, enabled in order if arguments.first == "on" else reversed(order):
                directory = Path(scratch) / name.replace(" ", "-")
                directory.mkdir()
                started[name] = servers.start_pymager(
                    directory,
                    SIZES,
                    arguments.threads,
                    workers=arguments.workers,
                    access_log=False,
                    memory_cache_bytes=cache,
                    name=name,
                    extra_config=f"[metrics]\nenabled = {str(enabled and not arguments.control).lower()}\n",
                )
            paths = {name: prepare(server, photos) for name, server in started.items()}
            rates: dict[str, list[float]] = {name: [] for name in started}
            p99: dict[str, list[float]] = {name: [] for name in started}
            cpu: dict[str, list[float]] = {name: [] for name in started}  # server CPU µs per request
            problems: list[str] = []
            counted_before = 0.0 if arguments.control else warm_count(started["metrics on"])
            answered = 0.0
            for round_number in range(arguments.rounds):
                order = list(started) if round_number % 2 == 0 else list(reversed(started))
                for name in order:
                    server = started[name]
                    phase = loadgen.run_wrk(
                        "warm",
                        server.base_url,
                        paths[name],
                        arguments.concurrency,
                        arguments.seconds,
                        server_cpu=server.cpu_seconds,
                    )
                    cpu[name].append(phase.server_cpu / max(1, phase.done) * 1e6)
                    problems += [f"{name}, round {round_number + 1}: {error}" for error in phase.errors]
                    rates[name].append(phase.rate)
                    p99[name].append(phase.reported.get("p99", float("nan")))
                    if name == "metrics on":
                        answered += phase.done
            counted = answered if arguments.control else warm_count(started["metrics on"]) - counted_before
        finally:
            for server in started.values():
                server.stop()
    # Rounds next to each other in time are compared: the machine's drift
    # (other tenants) falls on both servers of a pair alike.
    rate_costs = [1 - on / off for on, off in zip(rates["metrics on"], rates["metrics off"], strict=True)]
    cpu_costs = [on / off - 1 for on, off in zip(cpu["metrics on"], cpu["metrics off"], strict=True)]
    cost = statistics.median(cpu_costs)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    print(
        f"warm GET /derived, wrk -c{arguments.concurrency}, {arguments.rounds} rounds of "
        f"{arguments.seconds:g} s per server, workers={arguments.workers}, "
        f"memory cache {arguments.memory_cache}{', CONTROL (both off)' if arguments.control else ''}"
    )
    for name in started:
        each = ", ".join(f"{rate:.0f}" for rate in rates[name])
        print(
            f"  {name:11}  median {statistics.median(rates[name]):7.0f} req/s  (rounds: {each})  "
            f"p99 median {statistics.median(p99[name]):.1f} ms, "
            f"server CPU median {statistics.median(cpu[name]):.0f} µs/request"
        )
    print(f"  rate lost to metrics, median of paired rounds: {statistics.median(rate_costs) * 100:+.1f}%")
    print(
        f"  server CPU per request added by metrics, median of paired rounds: {cost * 100:+.1f}% "
        "(the warm rate's cost where the server is CPU-bound; budget: under 5%)"
    )
    print(f"  warm requests wrk counted {answered:.0f}, the scrape counted {counted:.0f}")
    if abs(counted - answered) > arguments.concurrency * arguments.rounds:
        problems.append(f"the scrape counted {counted:.0f} warm requests, wrk {answered:.0f}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems or cost >= 0.05 else 0


if __name__ == "__main__":
    sys.exit(main())
