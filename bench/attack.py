"""
Attacks on a pymager-tx server on its default settings, measured ("Bounded
under any load"): what each costs the server in memory, and whether other
clients are still served meanwhile.

    .venv/bin/python bench/attack.py [--scenario all|pipelined|overload|uploads|idle|hog ...]

Each scenario gets a fresh `twistd -n pymager` from this checkout's venv, on
127.0.0.1 at a free port, with a fresh --data-dir under bench/out/attack/,
--workers 1 and no configuration file (the embedded defaults), under the open
file limit of etc/pymager.service (LimitNOFILE=, else 1024). Everything is
over HTTP on loopback; every loop is bounded in count and in time.

  pipelined  a ~10 MB original (PNG of random pixels); one socket sends 200
             pipelined GET /original/<id> and never reads, for 10 s; then two
             such sockets. Server RSS growth per socket, and how fast RSS
             comes back once the sockets close.
  overload   200 IDs of ~20 MP JPEGs (a few distinct files uploaded under
             many IDs: each ID is its own original to the server), then 200
             concurrent cold GET /derived/<id>-800x600.jpg. Status and latency
             of every answer, /healthz every 100 ms (from another process),
             peak RSS.
  uploads    100 concurrent PUT /original/<id> announcing 30 MB that send all
             but the last byte, then hold 20 s. Peak RSS; refusals counted.
  idle       1,000 idle TCP connections, then a new client's GET /healthz.
  hog        one connection sending pipelined GET /derived/<id>-100x100.jpg at
             full speed (reading the answers, from another process) while a
             second client does keep-alive GETs of the same URL at 20/s: its
             p50/p99, against the same client alone just before.

It prints a table of measured value against target with PASS or FAIL, writes
bench/out/attack.json and a Markdown fragment (--out), and exits 0 whatever
the verdicts: it is a measurement, not a test. It exits 1 only when the run
itself broke (the server would not start, a set-up request failed).
Generated images are cached in bench/out/attack-cache/ between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import re
import resource
import select
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import servers
from loadgen import percentile

REPOSITORY = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "out"  # git-ignored
RUNS = OUT / "attack"
CACHE = OUT / "attack-cache"
SCENARIOS = ("pipelined", "overload", "uploads", "idle", "hog")
MB = 1024 * 1024


# The server


def unit_nofile() -> tuple[int, int, str]:
    """(soft, hard, where from): etc/pymager.service's LimitNOFILE=, else 1024."""
    unit = REPOSITORY / "etc" / "pymager.service"
    text = unit.read_text() if unit.exists() else ""
    found = re.findall(r"^\s*LimitNOFILE\s*=\s*(\S+)\s*$", text, re.MULTILINE)
    if not found:
        return 1024, 1024, "no LimitNOFILE in etc/pymager.service: 1024"
    value = found[-1]
    soft_text, _, hard_text = value.partition(":")
    hard_text = hard_text or soft_text
    ceiling = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def number(text: str) -> int:
        return ceiling if text == "infinity" else int(text)

    soft, hard = number(soft_text), number(hard_text)
    return soft, hard, f"LimitNOFILE={value} in etc/pymager.service"


def twistd_path() -> str:
    """The twistd of the checkout's own venv, else of the running Python's."""
    own = REPOSITORY / ".venv" / "bin" / "twistd"
    return str(own if own.exists() else Path(sys.executable).parent / "twistd")


def start_server(name: str, nofile: tuple[int, int]) -> servers.Server:
    """twistd -n pymager on the embedded defaults, but for the listening
    address, the data directory and one worker."""
    directory = RUNS / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    port = servers.free_port()
    log_path = RUNS / f"{name}.log"
    command = [
        twistd_path(),
        "--nodaemon",
        "--pidfile=",
        "--logfile=-",
        "pymager",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--data-dir",
        str(directory / "data"),
        "--workers",
        "1",
    ]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONDONTWRITEBYTECODE": "1"}
    process = subprocess.Popen(
        command,
        cwd=directory,
        env=environment,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=limit,
    )
    server = servers.Server("pymager-tx", process, port, log_path)
    servers._wait_ready(server, "/healthz")
    return server


def server_problems(server: servers.Server) -> dict[str, int]:
    """What in the log looks like a bug: tracebacks, 500s, unhandled errors."""
    text = server.log_path.read_text(errors="replace")
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "unhandled": text.count("Unhandled Error") + text.count("Unhandled error"),
        "status_500": len(re.findall(r'HTTP/1\.[01]" 500 ', text)),
        "internal_error": text.count("/problems/internal-error"),
    }


def stop_server(server: servers.Server, name: str) -> dict[str, object]:
    alive = server.process.poll() is None
    fds = count_fds(server.process.pid)
    server.stop()
    shutil.rmtree(RUNS / name / "data", ignore_errors=True)  # images; the log stays
    return {
        "alive_at_end": alive,
        "exit_status": server.process.returncode,
        "fds_at_end": fds,
        **server_problems(server),
    }


def count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Sampler:
    """Server RSS every `interval` seconds, as (seconds since start, MB)."""

    def __init__(self, server: servers.Server, interval: float = 0.1) -> None:
        self.server, self.interval = server, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> Sampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self.started, self.server.rss_kb() / 1024))
            if self._stop.wait(self.interval):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> float:
        return time.monotonic() - self.started

    def peak(self, since: float = 0.0, until: float = math.inf) -> float:
        return max((mb for t, mb in self.samples if since <= t <= until), default=math.nan)


def rss_mb(server: servers.Server) -> float:
    return server.rss_kb() / 1024


def settle(server: servers.Server, seconds: float = 1.0) -> float:
    """The RSS once the server is idle: the lowest of a few samples."""
    low = math.inf
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        low = min(low, rss_mb(server))
        time.sleep(0.1)
    return low


# HTTP helpers


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, float, dict[str, str]]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - started, dict(response.getheaders())
    finally:
        connection.close()


def upload(port: int, image_id: str, data: bytes, attempts: int = 8) -> None:
    """PUT one original; waits out 503 overloaded (Retry-After), a bounded number of times."""
    for _ in range(attempts):
        status, body, _, headers = request(port, "PUT", f"/original/{image_id}", data, timeout=120)
        if status == 201:
            return
        if status != 503:
            raise SetupError(f"PUT /original/{image_id}: {status} {body[:300]!r}")
        time.sleep(float(headers.get("Retry-After", "2")))
    raise SetupError(f"PUT /original/{image_id}: still 503 after {attempts} attempts")


class SetupError(Exception):
    """The run itself broke (not a measured failure)."""


def health_while_held(port: int, seconds: float, every: float) -> list[tuple[object, float]]:
    """GET /healthz every `every` seconds for `seconds`, while an attack holds
    the server: (status, latency) of each answer; failures are skipped."""
    answers: list[tuple[object, float]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(every)
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, latency, _ = request(port, "GET", "/healthz", timeout=5)
            answers.append((status, latency))
    return answers


def health_poller(port: int, interval: float, seconds: float, stop, results) -> None:  # type: ignore[no-untyped-def]
    """In its own process (no GIL shared with the load): GET /healthz every
    `interval` on one kept-alive connection, for at most `seconds`.
    Sends back (time.monotonic() when sent, status or error, latency seconds).
    It runs at a higher CPU priority where it may (root): a load balancer
    probes from another machine, not from one whose cores the attacking
    clients (200 threads released at once) share, and the latency measured
    is the server's, not the poller's own wait for a core."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    samples: list[tuple[float, object, float]] = []
    connection: http.client.HTTPConnection | None = None
    started = time.monotonic()
    while time.monotonic() - started < seconds and not stop.is_set():
        tick = time.monotonic()
        sent = time.perf_counter()
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            samples.append((tick, response.status, time.perf_counter() - sent))
        except (OSError, http.client.HTTPException) as error:
            samples.append((tick, type(error).__name__, time.perf_counter() - sent))
            if connection is not None:
                connection.close()
            connection = None
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    if connection is not None:
        connection.close()
    results.put(samples)


@contextlib.contextmanager
def polling_health(port: int, seconds: float, interval: float = 0.1):  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    process = context.Process(target=health_poller, args=(port, interval, seconds, stop, results))
    process.start()
    holder: dict[str, list] = {"samples": []}
    try:
        yield holder
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            holder["samples"] = results.get(timeout=seconds + 15)
        process.join(10)
        if process.is_alive():
            process.kill()


def health_summary(samples: list[tuple[float, object, float]], origin: float) -> dict[str, object]:
    """origin: the time.monotonic() the slow polls are placed from (the
    burst's release: negative, they were sent before any request was)."""
    latencies = [latency for _, _, latency in samples]
    statuses = Counter(str(status) for _, status, _ in samples)
    return {
        "polls": len(samples),
        "statuses": dict(statuses),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "over_50ms": sum(1 for latency in latencies if latency > 0.05),
        # When the slow ones were sent (seconds from the burst's release): in
        # burst's arrival, or while the accepted work runs?
        "slow_at_s": [round(at - origin, 2) for at, _, latency in samples if latency > 0.05],
    }


# Images (cached between runs: bench/out/attack-cache/)


def random_png(width: int = 1900, height: int = 1800) -> bytes:
    """A PNG of random pixels: it does not compress, so ~10 MB."""
    from PIL import Image

    path = CACHE / f"random-{width}x{height}.png"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        pixels = random.Random(1).randbytes(width * height * 3)
        buffer = BytesIO()
        Image.frombytes("RGB", (width, height), pixels).save(buffer, format="PNG", compress_level=1)
        path.write_bytes(buffer.getvalue())
    return path.read_bytes()


def photo_jpeg(index: int, width: int = 5472, height: int = 3648) -> Path:
    """A ~20 MP JPEG: smooth random blotches plus fine grain, about as
    compressible as a photograph (a few MB)."""
    from PIL import Image, ImageChops

    path = CACHE / f"photo-{width}x{height}-{index}.jpg"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    generator = random.Random(1000 + index)
    small = Image.frombytes(
        "RGB", (width // 96, height // 96), generator.randbytes(width // 96 * (height // 96) * 3)
    )
    base = small.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 6).convert("RGB")
    picture = ImageChops.add(base, grain, scale=1.0, offset=-100)
    temporary = path.with_suffix(".tmp")
    picture.save(temporary, format="JPEG", quality=85)
    temporary.rename(path)
    return path


# Scenario 1: pipelined requests on a socket that never reads


def pipelined(arguments: argparse.Namespace, nofile: tuple[int, int]) -> dict[str, object]:
    data = random_png()
    server = start_server("pipelined", nofile)
    result: dict[str, object] = {
        "original_bytes": len(data),
        "requests_per_socket": arguments.pipelined_requests,
    }
    try:
        upload(server.port, "big", data)
        pipeline = b"".join(
            b"GET /original/big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            for _ in range(arguments.pipelined_requests)
        )
        for sockets_count in (1, 2):
            baseline = settle(server)
            server.reset_peaks()
            with Sampler(server) as sampler:
                sockets = [
                    socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    for _ in range(sockets_count)
                ]
                for sock in sockets:
                    sock.sendall(pipeline)
                hold_health = health_while_held(server.port, arguments.hold_seconds, every=0.5)
                closed_at = sampler.now()
                held_peak = sampler.peak(until=closed_at)
                for sock in sockets:
                    sock.close()  # unread data: the kernel sends a reset
                growth = held_peak - baseline
                threshold = baseline + max(16.0, 0.1 * growth)
                returned_after = None
                recovery_end = time.monotonic() + arguments.recovery_seconds
                while time.monotonic() < recovery_end:
                    if rss_mb(server) <= threshold:
                        returned_after = sampler.now() - closed_at
                        break
                    time.sleep(0.1)
            after = rss_mb(server)
            result[f"sockets_{sockets_count}"] = {
                "baseline_mb": round(baseline, 1),
                "held_peak_mb": round(held_peak, 1),
                "vmhwm_mb": round(server.peak_kb() / 1024, 1),
                "growth_mb": round(growth, 1),
                "growth_per_socket_mb": round(growth / sockets_count, 1),
                "returned_within_s": None if returned_after is None else round(returned_after, 2),
                "return_threshold_mb": round(threshold, 1),
                "rss_after_mb": round(after, 1),
                "healthz_during_hold": {
                    "answers": len(hold_health),
                    "statuses": dict(Counter(status for status, _ in hold_health)),
                    "max_ms": round(max((latency for _, latency in hold_health), default=math.nan) * 1000, 1),
                },
                "rss_series": [(round(t, 1), round(mb, 1)) for t, mb in sampler.samples[::5]],
            }
        status, _, latency, _ = request(server.port, "GET", "/healthz", timeout=10)
        result["healthz_after"] = {"status": status, "ms": round(latency * 1000, 1)}
    finally:
        result["server"] = stop_server(server, "pipelined")
    return result


# Scenario 2: overload, 200 concurrent cold derivations of distinct originals


def overload(arguments: argparse.Namespace, nofile: tuple[int, int]) -> dict[str, object]:
    count, distinct = arguments.overload_requests, arguments.overload_distinct
    generated = time.monotonic()
    files = [photo_jpeg(index) for index in range(distinct)]
    generation_s = time.monotonic() - generated
    blobs = [path.read_bytes() for path in files]
    server = start_server("overload", nofile)
    result: dict[str, object] = {
        "requests": count,
        "distinct_files": distinct,
        "file_mb": [round(len(blob) / MB, 1) for blob in blobs],
        "generation_s": round(generation_s, 1),
    }
    try:
        started = time.monotonic()
        ids = [f"photo{index:03d}" for index in range(count)]
        work = list(enumerate(ids))
        lock = threading.Lock()
        failures: list[str] = []

        def uploader() -> None:
            while True:
                with lock:
                    if not work or failures:
                        return
                    index, image_id = work.pop()
                try:
                    upload(server.port, image_id, blobs[index % distinct])
                except (SetupError, OSError, http.client.HTTPException) as error:
                    with lock:
                        failures.append(repr(error))

        threads = [threading.Thread(target=uploader) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise SetupError(f"overload uploads: {failures[0]}")
        result["upload_s"] = round(time.monotonic() - started, 1)
        # The uploads' 800 MB still being written back would slow the
        # database's syncs during the burst: flush them first.
        os.sync()
        baseline = settle(server, 2.0)
        server.reset_peaks()

        answers: list[dict[str, object]] = [{} for _ in ids]
        barrier = threading.Barrier(count + 1)

        def fetch(slot: int, image_id: str) -> None:
            answer = answers[slot]
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=arguments.request_timeout)
            except OSError as error:
                answer.update(status=f"connect {type(error).__name__}", seconds=0.0)
                barrier.wait()
                return
            connection = http.client.HTTPConnection(
                "127.0.0.1", server.port, timeout=arguments.request_timeout
            )
            connection.sock = sock
            barrier.wait()
            sent = time.perf_counter()
            try:
                connection.request("GET", f"/derived/{image_id}-800x600.jpg")
                response = connection.getresponse()
                body = response.read()
                answer.update(
                    status=response.status, problem=_problem_type(body) if response.status != 200 else ""
                )
            except (OSError, http.client.HTTPException) as error:
                answer.update(status=type(error).__name__)
            answer["seconds"] = time.perf_counter() - sent
            connection.close()

        with (
            polling_health(server.port, seconds=arguments.request_timeout + 30) as health,
            Sampler(server) as sampler,
        ):
            time.sleep(1.0)  # a few idle health samples first
            threads = [
                threading.Thread(target=fetch, args=(slot, image_id)) for slot, image_id in enumerate(ids)
            ]
            for thread in threads:
                thread.start()
            barrier.wait(timeout=60)
            burst = time.monotonic()
            for thread in threads:
                thread.join(arguments.request_timeout + 10)
            burst_s = time.monotonic() - burst
            time.sleep(1.0)
        statuses = Counter(str(answer.get("status")) for answer in answers)
        problems = Counter(str(answer.get("problem")) for answer in answers if answer.get("problem"))
        within = 0
        late: dict[str, list[float]] = {}  # status (or error): the seconds of each answer outside the target
        for answer in answers:
            status, seconds = answer.get("status"), float(answer.get("seconds", math.inf))  # type: ignore[arg-type]
            if (status == 503 and seconds <= 2.0) or (status == 200 and seconds <= arguments.budget):
                within += 1
            else:
                late.setdefault(str(status), []).append(seconds)
        ok_latencies = [float(a["seconds"]) for a in answers if a.get("status") == 200]  # type: ignore[arg-type]
        busy_latencies = [float(a["seconds"]) for a in answers if a.get("status") == 503]  # type: ignore[arg-type]
        result.update(
            baseline_mb=round(baseline, 1),
            peak_rss_mb=round(server.peak_kb() / 1024, 1),
            sampled_peak_mb=round(sampler.peak(), 1),
            burst_s=round(burst_s, 1),
            statuses=dict(statuses),
            problems=dict(problems),
            answers_within_target=within,
            outside_target={
                status: {"count": len(values), "min_s": round(min(values), 1), "max_s": round(max(values), 1)}
                for status, values in late.items()
            },
            ok_p50_s=round(percentile(ok_latencies, 50), 2) if ok_latencies else None,
            ok_max_s=round(max(ok_latencies), 2) if ok_latencies else None,
            busy_max_s=round(max(busy_latencies), 2) if busy_latencies else None,
            healthz=health_summary(health["samples"], burst),
            server_logged=logged_durations(server, "/derived/"),
        )
        status, _, latency, _ = request(server.port, "GET", "/healthz", timeout=10)
        result["healthz_after"] = {"status": status, "ms": round(latency * 1000, 1)}
    finally:
        result["server"] = stop_server(server, "overload")
    return result


def logged_durations(server: servers.Server, prefix: str) -> dict[str, dict[str, float]]:
    """The server's own view, from its access log: per status, how long it
    took from the request's arrival to its answer (p50, max, in seconds)."""
    durations: dict[str, list[float]] = {}
    pattern = re.compile(r'"GET ' + re.escape(prefix) + r'\S* HTTP/1\.1" (\d{3}) .* ([\d.]+)ms$')
    for line in server.log_path.read_text(errors="replace").splitlines():
        match = pattern.search(line)
        if match:
            durations.setdefault(match[1], []).append(float(match[2]) / 1000)
    return {
        status: {
            "count": len(values),
            "p50_s": round(percentile(values, 50), 2),
            "max_s": round(max(values), 2),
        }
        for status, values in durations.items()
    }


def _problem_type(body: bytes) -> str:
    try:
        return str(json.loads(body).get("type", "?"))
    except (ValueError, AttributeError):
        return "?"


# Scenario 3: uploads held one byte short


def uploads(arguments: argparse.Namespace, nofile: tuple[int, int]) -> dict[str, object]:
    count, length = arguments.uploads, arguments.upload_bytes
    head = random_png()[: 64 * 1024]  # a valid PNG start, then noise
    filler = random.Random(2).randbytes(MB)
    server = start_server("uploads", nofile)
    result: dict[str, object] = {"uploads": count, "content_length": length}
    try:
        baseline = settle(server)
        server.reset_peaks()
        states: list[dict[str, object]] = [{} for _ in range(count)]
        sockets: list[socket.socket | None] = [None] * count
        send_deadline = time.monotonic() + arguments.send_seconds

        def sender(slot: int) -> None:
            state = states[slot]
            sent = 0
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sockets[slot] = sock
                sock.settimeout(0.5)
                sock.sendall(
                    f"PUT /original/held{slot:03d} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: image/png\r\nContent-Length: {length}\r\n\r\n".encode()
                )
                target = length - 1
                while sent < target:
                    if time.monotonic() > send_deadline:
                        state.update(state="stalled", sent=sent)
                        return
                    if select.select([sock], [], [], 0)[0]:
                        state.update(state="answered", sent=sent, status=_read_status(sock))
                        return
                    offset = sent % MB
                    chunk = head[sent:] if sent < len(head) else memoryview(filler)[offset:]
                    chunk = chunk[: min(len(chunk), target - sent, 256 * 1024)]
                    try:
                        sent += sock.send(chunk)
                    except TimeoutError:
                        continue
                state.update(state="held", sent=sent)
            except OSError as error:
                # A refusal may close the connection while we send: its answer
                # can still be waiting in our receive buffer.
                status = _read_status(sockets[slot]) if sockets[slot] is not None else None
                if isinstance(status, int):
                    state.update(state="answered", sent=sent, status=status)
                else:
                    state.update(state=f"error {type(error).__name__}", sent=sent)

        with Sampler(server) as sampler:
            threads = [threading.Thread(target=sender, args=(slot,)) for slot in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(arguments.send_seconds + 10)
            sent_at = sampler.now()
            hold_health = health_while_held(server.port, arguments.upload_hold_seconds, every=1.0)
            # Which the server answered or closed while they were held.
            closed_by_server: Counter[str] = Counter()
            for slot, sock in enumerate(sockets):
                held = sock is not None and states[slot].get("state") in ("held", "stalled")
                if held and select.select([sock], [], [], 0)[0]:
                    closed_by_server[str(_read_status(sock))] += 1  # type: ignore[arg-type]
            held_peak = sampler.peak()
            closed_at = sampler.now()
            for sock in sockets:
                if sock is not None:
                    sock.close()
            time.sleep(arguments.recovery_seconds / 3)
            after = rss_mb(server)
        status_counts = Counter(
            f"{s.get('state')}" + (f" {s.get('status')}" if s.get("state") == "answered" else "")
            for s in states
        )
        result.update(
            baseline_mb=round(baseline, 1),
            peak_rss_mb=round(server.peak_kb() / 1024, 1),
            sampled_peak_mb=round(held_peak, 1),
            send_phase_s=round(sent_at, 1),
            outcomes=dict(status_counts),
            bytes_sent_mb=round(sum(int(s.get("sent", 0)) for s in states) / MB, 1),  # type: ignore[call-overload]
            answered_or_closed_while_held=dict(closed_by_server),
            rss_after_close_mb=round(after, 1),
            rss_after_close_s=round(sampler.now() - closed_at, 1),
            healthz_during_hold={
                "answers": len(hold_health),
                "statuses": dict(Counter(status for status, _ in hold_health)),
                "max_ms": round(max((latency for _, latency in hold_health), default=math.nan) * 1000, 1),
            },
            rss_series=[(round(t, 1), round(mb, 1)) for t, mb in sampler.samples[::10]],
        )
        status, _, latency, _ = request(server.port, "GET", "/healthz", timeout=10)
        result["healthz_after"] = {"status": status, "ms": round(latency * 1000, 1)}
    finally:
        result["server"] = stop_server(server, "uploads")
    return result


def _read_status(sock: socket.socket) -> object:
    """The status of an answer waiting on the socket, or 'closed'/'reset'."""
    try:
        sock.settimeout(2)
        data = sock.recv(4096)
    except OSError as error:
        return type(error).__name__
    if not data:
        return "closed"
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match[1]) if match else "garbage"


# Scenario 4: idle connections under the unit's file limit


def idle(arguments: argparse.Namespace, nofile: tuple[int, int]) -> dict[str, object]:
    count = arguments.idle_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 200
    if soft < want:  # our own client needs the descriptors too
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    server = start_server("idle", nofile)
    result: dict[str, object] = {"connections": count, "server_nofile": nofile[0]}
    sockets: list[socket.socket] = []
    try:
        fds_before = count_fds(server.process.pid)
        # In batches below the listen backlog (50), each taken in by the server
        # before the next: a burst of 1,000 connects overflows the backlog, and
        # the kernel then completes the rest with SYN cookies that the server
        # never sees until they send something (they would not be held idle).
        connected, failed, batch = 0, 0, 25
        started = time.monotonic()
        while len(sockets) < count and time.monotonic() - started < 60:
            selector = selectors.DefaultSelector()
            for _ in range(min(batch, count - len(sockets))):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", server.port))
                sockets.append(sock)
                selector.register(sock, selectors.EVENT_WRITE)
            pending = len(selector.get_map())
            deadline = time.monotonic() + 5
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.5):
                    selector.unregister(key.fileobj)
                    pending -= 1
                    if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:  # type: ignore[union-attr]
                        connected += 1
                    else:
                        failed += 1
            failed += pending
            selector.close()
            wait_until = time.monotonic() + 0.5
            while (
                count_fds(server.process.pid) < fds_before + connected - 5 and time.monotonic() < wait_until
            ):
                time.sleep(0.01)
        result["connect_s"] = round(time.monotonic() - started, 2)
        time.sleep(1.0)
        result.update(connected=connected, failed=failed)
        result["server_fds_before"] = fds_before
        result["server_fds_with_idle"] = count_fds(server.process.pid)
        # The first new client waits as long as it takes, up to a bound past
        # the default idle timeout (60 s), so that a server that makes it
        # wait for an idle connection to close is timed, not just failed.
        probes = []
        for timeout in (arguments.idle_probe_timeout, 10.0):
            started_probe = time.perf_counter()
            try:
                status, _, latency, _ = request(server.port, "GET", "/healthz", timeout=timeout)
                probes.append({"status": status, "ms": round(latency * 1000, 1)})
            except (OSError, http.client.HTTPException) as error:
                elapsed = round((time.perf_counter() - started_probe) * 1000, 1)
                probes.append({"status": type(error).__name__, "ms": elapsed})
        result["new_client_healthz"] = probes
        closed = sum(1 for sock in sockets if _closed_by_peer(sock))
        result["idle_closed_by_server"] = closed
        for sock in sockets:
            sock.close()
        sockets.clear()
        time.sleep(1.0)
        try:
            status, _, latency, _ = request(server.port, "GET", "/healthz", timeout=10)
            result["healthz_after_close"] = {"status": status, "ms": round(latency * 1000, 1)}
        except (OSError, http.client.HTTPException) as error:
            result["healthz_after_close"] = {"status": type(error).__name__, "ms": None}
    finally:
        for sock in sockets:
            sock.close()
        result["server"] = stop_server(server, "idle")
    return result


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


# Scenario 5: a pipelining hog against a polite client


def hog_process(port: int, path: str, seconds: float, window: int, results) -> None:  # type: ignore[no-untyped-def]
    """In its own process: pipelined GETs of `path` on one connection, as fast
    as the server takes them, for `seconds`, reading every answer; at most
    `window` requests unanswered (so that the kernel's buffers do not hold
    tens of thousands when it stops)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    batch = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() * 64
    counts = {"sent": 0, "answers": 0, "bytes": 0, "window": window}
    stop = threading.Event()
    room = threading.Condition()
    deadline = time.monotonic() + seconds

    def reader() -> None:
        tail = b""
        marker = b"HTTP/1.1 "
        drain_deadline = math.inf
        while counts["answers"] < counts["sent"] or not stop.is_set():
            if stop.is_set() and drain_deadline == math.inf:
                drain_deadline = time.monotonic() + 15
            if time.monotonic() > drain_deadline:
                return
            try:
                data = sock.recv(1 << 18)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            counts["bytes"] += len(data)
            joined = tail + data
            counts["answers"] += joined.count(marker) - tail.count(marker)
            tail = joined[-(len(marker) - 1) :]
            with room:
                room.notify()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        while time.monotonic() < deadline:
            with room:
                if counts["sent"] - counts["answers"] > window - 64:
                    room.wait(0.1)
                    continue
            sock.sendall(batch)  # 64 requests; a timeout (2 s) ends the hog
            counts["sent"] += 64
    except OSError as error:
        counts["send_error"] = type(error).__name__
    stop.set()
    stopped = time.monotonic()
    thread.join(20)
    counts["drain_s"] = round(time.monotonic() - stopped, 2)
    sock.close()
    counts["seconds"] = seconds
    results.put(counts)


def polite(port: int, path: str, rate: float, seconds: float) -> list[float]:
    """Keep-alive GETs at `rate` per second for `seconds`: the latencies."""
    latencies: list[float] = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.monotonic()
    next_at = started
    while time.monotonic() - started < seconds:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += 1 / rate
        sent = time.perf_counter()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                latencies.append(time.perf_counter() - sent)
            else:
                latencies.append(math.inf)
        except (OSError, http.client.HTTPException):
            latencies.append(math.inf)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.close()
    return latencies


def hog(arguments: argparse.Namespace, nofile: tuple[int, int]) -> dict[str, object]:
    from PIL import Image

    buffer = BytesIO()
    Image.effect_noise((1200, 900), 40).convert("RGB").save(buffer, format="JPEG", quality=85)
    server = start_server("hog", nofile)
    path = "/derived/small-100x100.jpg"
    result: dict[str, object] = {"path": path, "polite_rate": arguments.polite_rate}
    try:
        upload(server.port, "small", buffer.getvalue())
        for _ in range(2):  # derive it, then it is served from memory
            status, body, _, _ = request(server.port, "GET", path)
            if status != 200:
                raise SetupError(f"GET {path}: {status} {body[:200]!r}")
        alone = polite(server.port, path, arguments.polite_rate, arguments.hog_seconds / 2)
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        process = context.Process(
            target=hog_process, args=(server.port, path, arguments.hog_seconds, arguments.hog_window, results)
        )
        process.start()
        time.sleep(1.0)  # the hog's process starts and gets going
        beside = polite(server.port, path, arguments.polite_rate, arguments.hog_seconds - 2)
        hog_counts: dict[str, object] = {}
        with contextlib.suppress(Exception):
            hog_counts = results.get(timeout=arguments.hog_seconds + 20)
        process.join(10)
        if process.is_alive():
            process.kill()

        def summary(latencies: list[float], seconds: float) -> dict[str, object]:
            return {
                "planned": round(seconds * arguments.polite_rate),
                "requests": len(latencies),
                "failed": sum(1 for latency in latencies if latency == math.inf),
                "p50_ms": round(percentile(latencies, 50) * 1000, 1),
                "p99_ms": round(percentile(latencies, 99) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1),
            }

        answers = int(hog_counts.get("answers", 0))  # type: ignore[call-overload]
        result.update(
            alone=summary(alone, arguments.hog_seconds / 2),
            beside_hog=summary(beside, arguments.hog_seconds - 2),
            hog={**hog_counts, "answers_per_s": round(answers / arguments.hog_seconds)},
        )
    finally:
        result["server"] = stop_server(server, "hog")
    return result


# Report


@dataclass
class Row:
    scenario: str
    measure: str
    value: str
    target: str
    verdict: str  # PASS, FAIL or "-" (recorded, no target)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, scenario: str, measure: str, value: str, target: str, passed: bool | None) -> None:
        verdict = "-" if passed is None else ("PASS" if passed else "FAIL")
        self.rows.append(Row(scenario, measure, value, target, verdict))


def server_rows(report: Report, scenario: str, server: dict[str, object], other_load: object = None) -> None:
    bugs = {
        key: server[key] for key in ("tracebacks", "unhandled", "status_500", "internal_error") if server[key]
    }
    alive = bool(server["alive_at_end"])
    value = ("up" if alive else f"DIED (exit {server['exit_status']})") + (
        ", " + ", ".join(f"{key} {count}" for key, count in bugs.items()) if bugs else ", log clean"
    )
    report.add(scenario, "server alive, log (tracebacks, 500s)", value, "up, none", alive and not bugs)
    if other_load is not None:
        report.add(scenario, "other processes on the machine meanwhile, cores", str(other_load), "-", None)


def judge(results: dict[str, dict[str, object]], arguments: argparse.Namespace) -> Report:
    report = Report()
    if "pipelined" in results:
        r = results["pipelined"]
        for n in (1, 2):
            s = r[f"sockets_{n}"]  # type: ignore[index]
            per = s["growth_per_socket_mb"]
            report.add(
                "pipelined",
                f"RSS growth per socket, {n} socket(s) x {r['requests_per_socket']} GET "
                f"of a 10 MB original, held {arguments.hold_seconds:.0f} s",
                f"{per} MB (baseline {s['baseline_mb']}, peak {s['held_peak_mb']})",
                "< 50 MB",
                per < 50,
            )
            back = s["returned_within_s"]
            report.add(
                "pipelined",
                f"RSS back near baseline after close, {n} socket(s)",
                f"{back} s (<= {s['return_threshold_mb']} MB)"
                if back is not None
                else f"not within {arguments.recovery_seconds:.0f} s ({s['rss_after_mb']} MB)",
                "within 5 s",
                back is not None and back <= 5,
            )
            hz = s["healthz_during_hold"]
            report.add(
                "pipelined",
                f"/healthz while held, {n} socket(s)",
                f"{hz['answers']} answers {hz['statuses']}, max {hz['max_ms']} ms",
                "-",
                None,
            )
        server_rows(report, "pipelined", r["server"], r.get("other_load_cores"))  # type: ignore[arg-type]
    if "overload" in results:
        r = results["overload"]
        n = r["requests"]
        report.add(
            "overload",
            f"peak RSS (VmHWM), {n} concurrent cold 800x600 of 20 MP JPEGs",
            f"{r['peak_rss_mb']} MB (baseline {r['baseline_mb']})",
            "< 1024 MB",
            r["peak_rss_mb"] < 1024,
        )  # type: ignore[operator]
        report.add(
            "overload",
            "answers: 503 within 2 s or 200 within the budget",
            f"{r['answers_within_target']}/{n}; {r['statuses']}",
            f"{n}/{n}",
            r["answers_within_target"] == n,
        )
        if r["outside_target"]:
            outside = "; ".join(
                f"{status}: {v['count']} after {v['min_s']}-{v['max_s']} s"
                for status, v in r["outside_target"].items()  # type: ignore[attr-defined]
            )
            report.add("overload", "answers outside the target", outside, "none", False)
        report.add(
            "overload",
            "200 latency p50 / max; 503 max",
            f"{r['ok_p50_s']} / {r['ok_max_s']} s; {r['busy_max_s']} s",
            "-",
            None,
        )
        logged = "; ".join(
            f"{status}: p50 {v['p50_s']} s, max {v['max_s']} s" for status, v in r["server_logged"].items()
        )  # type: ignore[attr-defined]
        report.add("overload", "the server's own durations (access log)", logged or "none logged", "-", None)
        hz = r["healthz"]
        report.add(
            "overload",
            "/healthz every 100 ms: max (p50, p99)",
            f"{hz['max_ms']} ms ({hz['p50_ms']}, {hz['p99_ms']}); "
            f"{hz['over_50ms']}/{hz['polls']} over 50 ms; {hz['statuses']}",
            "< 50 ms",
            hz["max_ms"] is not None and hz["max_ms"] < 50 and set(hz["statuses"]) == {"200"},
        )
        server_rows(report, "overload", r["server"], r.get("other_load_cores"))  # type: ignore[arg-type]
    if "uploads" in results:
        r = results["uploads"]
        report.add(
            "uploads",
            f"peak RSS (VmHWM), {r['uploads']} PUT of {r['content_length'] / 1e6:.0f} MB held 1 byte short",
            f"{r['peak_rss_mb']} MB (baseline {r['baseline_mb']})",
            "< 300 MB",
            r["peak_rss_mb"] < 300,
        )  # type: ignore[operator]
        report.add(
            "uploads",
            "outcomes (held / answered at once / stalled)",
            f"{r['outcomes']}; {r['bytes_sent_mb']} MB sent",
            "-",
            None,
        )
        report.add(
            "uploads",
            "answered or closed by the server while held",
            str(r["answered_or_closed_while_held"] or "none"),
            "-",
            None,
        )
        hz = r["healthz_during_hold"]
        report.add(
            "uploads",
            "/healthz while held",
            f"{hz['answers']} answers {hz['statuses']}, max {hz['max_ms']} ms",
            "-",
            None,
        )
        report.add(
            "uploads",
            "RSS after the clients closed",
            f"{r['rss_after_close_mb']} MB after {r['rss_after_close_s']} s",
            "-",
            None,
        )
        server_rows(report, "uploads", r["server"], r.get("other_load_cores"))  # type: ignore[arg-type]
    if "idle" in results:
        r = results["idle"]
        first = r["new_client_healthz"][0]  # type: ignore[index]
        report.add(
            "idle",
            f"{r['connections']} idle connections (server nofile {r['server_nofile']}): "
            "connected / server fds",
            f"{r['connected']} (failed {r['failed']}) in {r['connect_s']} s; "
            f"server fds {r['server_fds_before']} -> {r['server_fds_with_idle']}",
            "-",
            None,
        )
        probes = ", then ".join(f"{p['status']} in {p['ms']} ms" for p in r["new_client_healthz"])  # type: ignore[attr-defined]
        report.add(
            "idle",
            "a new client's GET /healthz, then another's",
            probes,
            "200 within 10 s",
            first["status"] == 200 and first["ms"] <= 10_000,
        )
        report.add(
            "idle", "idle connections closed by the server", str(r["idle_closed_by_server"]), "-", None
        )
        server_rows(report, "idle", r["server"], r.get("other_load_cores"))  # type: ignore[arg-type]
    if "hog" in results:
        r = results["hog"]
        alone, beside = r["alone"], r["beside_hog"]
        report.add(
            "hog",
            f"polite client at {r['polite_rate']}/s: p50 / p99, alone",
            f"{alone['p50_ms']} / {alone['p99_ms']} ms",
            "-",
            None,
        )  # type: ignore[index]
        report.add(
            "hog",
            "polite client beside the pipelining hog: p50 / p99 (max)",
            f"{beside['p50_ms']} / {beside['p99_ms']} ms ({beside['max_ms']}); "
            f"{beside['requests']} requests (planned {beside['planned']}), failed {beside['failed']}",
            "p99 < 50 ms",
            beside["p99_ms"] < 50 and not beside["failed"],
        )  # type: ignore[index,operator]
        report.add(
            "hog",
            "hog's answers",
            f"{r['hog'].get('answers_per_s')}/s ({r['hog'].get('answers')} of "
            f"{r['hog'].get('sent')} sent, window {r['hog'].get('window')})"
            + (f", ended by {r['hog']['send_error']}" if r["hog"].get("send_error") else ""),  # type: ignore[index]
            "-",
            None,
        )  # type: ignore[union-attr]
        server_rows(report, "hog", r["server"], r.get("other_load_cores"))  # type: ignore[arg-type]
    return report


def markdown(report: Report) -> list[str]:
    lines = ["| scenario | measure | value | target | verdict |", "|---|---|---|---|---|"]
    for row in report.rows:
        cells = [
            row.scenario,
            row.measure,
            row.value,
            row.target,
            f"**{row.verdict}**" if row.verdict == "FAIL" else row.verdict,
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return lines


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, iowait or steal)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4] - fields[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU of this process and of its children that ended (servers, pollers, the hog)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def interpreter() -> str:
    try:
        return str(Path(sys.executable).relative_to(REPOSITORY))
    except ValueError:
        return sys.executable


def machine() -> dict[str, str]:
    memory = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
    )
    return {
        "uname": " ".join(platform.uname()),
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "python": platform.python_version(),
        "pillow": version("pillow"),
        "twisted": version("twisted"),
        "commit": commit.stdout.strip() + (" (tracked files modified)" if dirty.stdout.strip() else ""),
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=("all", *SCENARIOS),
        help="scenario to run (repeat for several); default all",
    )
    parser.add_argument("--out", type=Path, default=OUT / "attack.md", help="Markdown fragment")
    parser.add_argument("--pipelined-requests", type=int, default=200)
    parser.add_argument(
        "--hold-seconds", type=float, default=10.0, help="pipelined: how long the sockets sit"
    )
    parser.add_argument(
        "--recovery-seconds", type=float, default=15.0, help="how long to wait for RSS to come back"
    )
    parser.add_argument("--overload-requests", type=int, default=200)
    parser.add_argument("--overload-distinct", type=int, default=12, help="distinct 20 MP files (cached)")
    parser.add_argument("--budget", type=float, default=20.0, help="derivation_time_budget (the default)")
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--upload-bytes", type=int, default=30_000_000)
    parser.add_argument("--send-seconds", type=float, default=60.0, help="uploads: longest send phase")
    parser.add_argument("--upload-hold-seconds", type=float, default=20.0)
    parser.add_argument("--idle-connections", type=int, default=1000)
    parser.add_argument(
        "--idle-probe-timeout", type=float, default=75.0, help="idle: how long the first new client waits"
    )
    parser.add_argument("--hog-seconds", type=float, default=12.0)
    parser.add_argument("--polite-rate", type=float, default=20.0)
    parser.add_argument("--hog-window", type=int, default=1024, help="hog: most requests unanswered")
    arguments = parser.parse_args()
    chosen = arguments.scenario or ["all"]
    arguments.scenarios = list(SCENARIOS) if "all" in chosen else [s for s in SCENARIOS if s in chosen]
    return arguments


def main() -> int:
    arguments = parse_arguments()
    RUNS.mkdir(parents=True, exist_ok=True)
    soft, hard, origin = unit_nofile()
    nofile = (soft, hard)
    info = machine()
    started = time.monotonic()
    print(
        f"attack.py at {info['commit']}: {', '.join(arguments.scenarios)}; "
        f"server nofile {soft}:{hard} ({origin})",
        flush=True,
    )
    runners = {"pipelined": pipelined, "overload": overload, "uploads": uploads, "idle": idle, "hog": hog}
    results: dict[str, dict[str, object]] = {}
    broken: list[str] = []
    for name in arguments.scenarios:
        began, busy, ours = time.monotonic(), busy_seconds(), own_cpu_seconds()
        print(f"-- {name} ...", flush=True)
        try:
            results[name] = runners[name](arguments, nofile)
        except (SetupError, OSError, http.client.HTTPException, threading.BrokenBarrierError) as error:
            broken.append(f"{name}: {error!r}")
            print(f"   broke: {error!r}", flush=True)
            continue
        wall = time.monotonic() - began
        results[name]["scenario_s"] = round(wall, 1)
        others = (busy_seconds() - busy) - (own_cpu_seconds() - ours)
        results[name]["other_load_cores"] = round(others / wall, 2)
        print(f"   {time.monotonic() - began:.0f} s", flush=True)
    report = judge(results, arguments)
    total = time.monotonic() - started
    header = [
        f"Machine: {info['uname']}; nproc {info['nproc']}, {info['memory']}. Python {info['python']}, "
        f"Pillow {info['pillow']}, Twisted {info['twisted']}.",
        f"Code: commit {info['commit']}. Server: `twistd -n pymager --listen tcp:PORT:interface=127.0.0.1 "
        f"--data-dir bench/out/attack/<scenario>/data --workers 1`, no configuration file, "
        f"open files {soft}:{hard} ({origin}).",
        f"Command: `{' '.join([interpreter(), 'bench/attack.py', *sys.argv[1:]])}` "
        f"({total:.0f} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
    ]
    lines = header + markdown(report)
    if broken:
        lines += ["", "BROKEN: " + "; ".join(broken)]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text)
    (OUT / "attack.json").write_text(
        json.dumps(
            {
                "machine": info,
                "nofile": [soft, hard],
                "results": results,
                "rows": [row.__dict__ for row in report.rows],
                "broken": broken,
            },
            indent=1,
            default=str,
        )
    )
    print(f"Written: {arguments.out}, {OUT / 'attack.json'}; server logs in {RUNS}/")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
