"""
Light load generators: a few threads of http.client over kept-alive
connections (for counted phases: each URL exactly once), and wrk with a Lua
URL list (for timed warm phases, where a Python client would cost more CPU
than the server it measures).
"""

from __future__ import annotations

import http.client
import math
import os
import queue
import re
import resource
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image


def percentile(values: list[float], percent: float) -> float:
    """Nearest rank; with a few hundred samples p99 is near the maximum."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


@dataclass
class Phase:
    name: str
    planned: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: list[str] = field(default_factory=list)
    client_cpu: float = 0.0  # CPU seconds the load generator used
    server_cpu: float = math.nan
    bytes_sent: int = 0
    # wrk reports percentiles, not samples: these override the latencies.
    reported: dict[str, float] = field(default_factory=dict)
    peak_rss_kb: int = 0  # sum of the server's processes' VmHWM during the phase
    sampled_rss_kb: int = 0  # highest summed VmRSS seen by polling
    other_cores: float = math.nan  # CPU other processes on the machine used meanwhile, in cores

    @property
    def done(self) -> int:
        return int(self.reported.get("requests", len(self.latencies)))

    @property
    def rate(self) -> float:
        return self.done / self.wall if self.wall > 0 else math.nan

    def p(self, percent: int) -> float:
        """Latency percentile in milliseconds."""
        if f"p{percent}" in self.reported:
            return self.reported[f"p{percent}"]
        return percentile(self.latencies, percent) * 1000

    def per_request_ms(self, seconds: float) -> float:
        return seconds / self.done * 1000 if self.done else math.nan

    def summary(self) -> dict[str, object]:
        return {
            "planned": self.planned,
            "done": self.done,
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "wall_s": round(self.wall, 3),
            "per_s": round(self.rate, 2),
            "p50_ms": round(self.p(50), 1),
            "p99_ms": round(self.p(99), 1),
            "client_cpu_ms_per_request": round(self.per_request_ms(self.client_cpu), 3),
            "server_cpu_ms_per_request": round(self.per_request_ms(self.server_cpu), 2),
            "peak_rss_mb": round(self.peak_rss_kb / 1024, 1),
            "sampled_peak_rss_mb": round(self.sampled_rss_kb / 1024, 1),
            "other_processes_cores": round(self.other_cores, 2),
        }


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: bytes = b""
    content_type: str = ""
    expect_status: int = 200
    expect_size: tuple[int, int] | None = None  # checked from the image header


def _check(request: Request, status: int, body: bytes) -> str | None:
    if status != request.expect_status:
        expected = request.expect_status
        return f"{request.method} {request.url}: status {status}, expected {expected}: {body[:200]!r}"
    if request.expect_size is not None:
        try:
            with Image.open(BytesIO(body)) as image:
                size = image.size  # the header only: cheap for the client
        except Exception as error:  # any undecodable body is a failed request
            return f"GET {request.url}: not an image ({error})"
        if size != request.expect_size:
            width, height = request.expect_size
            return f"GET {request.url}: {size[0]}x{size[1]}, expected {width}x{height}"
    return None


def run_counted(
    name: str,
    requests: list[Request],
    concurrency: int,
    timeout: float = 120.0,
    server_cpu: Callable[[], float] | None = None,
) -> Phase:
    """Each request once, `concurrency` at a time, each thread on its own
    kept-alive connection (reopened after an error)."""
    phase = Phase(name, planned=len(requests))
    work: queue.SimpleQueue[Request] = queue.SimpleQueue()
    for request in requests:
        work.put(request)
    lock = threading.Lock()

    def worker() -> None:
        connection: http.client.HTTPConnection | None = None
        while True:
            try:
                request = work.get_nowait()
            except queue.Empty:
                break
            parts = urlsplit(request.url)
            headers = {"Content-Type": request.content_type} if request.content_type else {}
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                connection.request(request.method, parts.path, body=request.body or None, headers=headers)
                response = connection.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - started
                problem = _check(request, response.status, body)
            except (OSError, http.client.HTTPException) as error:
                elapsed, problem = time.perf_counter() - started, f"{request.url}: {error!r}"
                if connection is not None:
                    connection.close()
                connection = None
            with lock:
                if problem is None:
                    phase.latencies.append(elapsed)
                    phase.bytes_sent += len(request.body)
                else:
                    phase.errors.append(problem)
        if connection is not None:
            connection.close()

    cpu_before, server_before = time.process_time(), server_cpu() if server_cpu else math.nan
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.wall = time.perf_counter() - started
    phase.client_cpu = time.process_time() - cpu_before
    if server_cpu:
        phase.server_cpu = server_cpu() - server_before
    return phase


# wrk: a URL list read once per wrk thread, cycled through in order.
WRK_SCRIPT = """\
local urls = {}
for line in io.lines(os.getenv("BENCH_URLS")) do urls[#urls + 1] = line end
local next_url = 0
request = function()
  next_url = next_url % #urls + 1
  return wrk.format("GET", urls[next_url])
end
"""
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    return float(match[1]) * _UNITS[match[2]] if match else math.nan


def run_wrk(
    name: str,
    base_url: str,
    paths: list[str],
    concurrency: int,
    seconds: float,
    server_cpu: Callable[[], float] | None = None,
) -> Phase:
    """`wrk -t1 -c<concurrency> -d<seconds> --latency` over the paths in turn."""
    phase = Phase(name, planned=0)
    with tempfile.TemporaryDirectory() as directory:
        script, url_list = Path(directory) / "urls.lua", Path(directory) / "urls.txt"
        script.write_text(WRK_SCRIPT)
        url_list.write_text("\n".join(paths) + "\n")
        command = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds:.0f}s",
            "--timeout",
            "30s",
            "--latency",
        ]
        command += ["-s", str(script), base_url]
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = server_cpu() if server_cpu else math.nan
        started = time.perf_counter()
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "BENCH_URLS": str(url_list)}
        )
        phase.wall = time.perf_counter() - started
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if server_cpu:
        phase.server_cpu = server_cpu() - server_before
    phase.client_cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    output = result.stdout
    if result.returncode != 0:
        phase.errors.append(f"wrk exited {result.returncode}: {result.stderr.strip()}")
        return phase
    if match := re.search(r"(\d+) requests in ([0-9.]+)(ms|s|m)", output):
        phase.reported["requests"] = float(match[1])
        phase.wall = _milliseconds(match[2] + match[3]) / 1000  # wrk's own clock, without start-up
    for percent in (50, 99):
        if match := re.search(rf"^\s+{percent}%\s+(\S+)", output, re.MULTILINE):
            phase.reported[f"p{percent}"] = _milliseconds(match[1])
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        phase.errors.append(f"{match[1]} responses were not 2xx or 3xx")
    if match := re.search(r"Socket errors: (.*)", output):
        phase.errors.append(f"socket errors: {match[1]}")
    phase.planned = phase.done
    return phase
