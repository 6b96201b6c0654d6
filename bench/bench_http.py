"""
pymager-tx over real HTTP on loopback, against a plain-Pillow floor, in one run.

    PYTHONPATH=. python bench/bench_http.py --concurrency 4

Starts `twistd pymager` as a separate process on an ephemeral 127.0.0.1 port
with a fresh temporary data directory, then measures:

  upload   PUT every original of the corpus (each copied --copies times)
  cold     GET every (original, size) pair once: each one a derivation
  warm     GET the same URLs again, --warm-rounds times: served from storage
  dedupe   --dedupe-fanout simultaneous first GETs of one new URL, for each of
           --dedupe-images originals: the server must derive each URL once
  floor    plain Pillow in this process, on a thread pool of the same
           concurrency: open -> ImageOps.fit(LANCZOS) -> save JPEG, for the
           same pairs; once decoding at full size ("naive") and once with
           JPEG draft decoding as pymager-tx does ("draft").  Run before the
           server starts and again after it stops, to show the drift.

The machine is shared and noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from io import BytesIO
from pathlib import Path
from statistics import median
from typing import Any

import treq
from PIL import Image, ImageOps, features
from twisted.internet import defer
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CorpusImage, corpus_digest, ensure

REPOSITORY = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "out"  # git-ignored
TWISTD = str(Path(sys.executable).parent / "twistd")
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
# "Derived <id> (<n> bytes) from the <source>: rendered in <r>s, <t>s in
# all"; the benchmark reads the whole span (queueing, image work, storing,
# recording).
DERIVED = re.compile(r"Derived (\S+) \((\d+) bytes\)[^:]*: rendered in [0-9.]+s, ([0-9.]+)s in all")
JPEG_QUALITY = 85  # pymager-tx's default [images] jpeg_quality, used by the floor too
REDUCING_GAP = 2.0  # as pymager_tx.imaging.render: decode at least twice the target size

Size = tuple[int, int]
# Other processes using more than this many cores during a phase make it noisy.
NOISY_CORES = 0.25


# Statistics


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile; with few samples p99 is the maximum."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Usage:
    """CPU counters at one moment, in seconds: this process, the server
    process, and the whole machine (from /proc/stat)."""

    bench_cpu: float
    server_cpu: float
    host_total: float
    host_idle: float  # idle and iowait
    host_steal: float  # taken by the hypervisor for other guests


def usage_now(server_cpu: float = 0.0) -> Usage:
    ticks = os.sysconf("SC_CLK_TCK")
    # The first line: cpu user nice system idle iowait irq softirq steal ...
    cpu_line = Path("/proc/stat").read_text().split("\n")[0]
    fields = [int(value) / ticks for value in cpu_line.split()[1:9]]
    idle, iowait, steal = fields[3], fields[4], fields[7]
    return Usage(time.process_time(), server_cpu, sum(fields), idle + iowait, steal)


@dataclass
class Measured:
    """One phase: how many requests (or images) were planned, their latencies
    in seconds, failures, and the wall time of the whole phase."""

    name: str
    planned: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    server_cpu: float = math.nan  # CPU seconds the server process used in the phase
    client_cpu: float = math.nan  # CPU seconds this process used in the phase
    others: float = math.nan  # cores that other processes on the machine kept busy meanwhile
    host_idle: float = math.nan  # share of the machine's CPU time left idle
    host_steal: float = math.nan  # share of the machine's CPU time stolen by the hypervisor

    def account(self, before: Usage, after: Usage) -> None:
        """Record the CPU used between two snapshots taken around the phase (after self.wall)."""
        self.server_cpu = after.server_cpu - before.server_cpu
        self.client_cpu = after.bench_cpu - before.bench_cpu
        total = after.host_total - before.host_total
        idle = after.host_idle - before.host_idle
        steal = after.host_steal - before.host_steal
        self.others = ratio(total - idle - steal - self.server_cpu - self.client_cpu, self.wall)
        self.host_idle = ratio(idle, total)
        self.host_steal = ratio(steal, total)

    @property
    def done(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.done / self.wall if self.wall > 0 else math.nan

    def cpu_ms_per_item(self, seconds: float) -> float:
        return seconds / self.done * 1000 if self.done else math.nan

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "done": self.done,
            "errors": len(self.errors),
            "wall_s": round(self.wall, 3),
            "per_s": round(self.rate, 2),
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "server_cpu_ms_per_item": round(self.cpu_ms_per_item(self.server_cpu), 2),
            "client_cpu_ms_per_item": round(self.cpu_ms_per_item(self.client_cpu), 2),
            "other_processes_cores": round(self.others, 2),
            "host_idle_percent": round(self.host_idle * 100, 1),
            "host_steal_percent": round(self.host_steal * 100, 1),
        }


# The plain-Pillow floor


def draft_size(source: Size, target: Size) -> Size:
    """The decode size pymager-tx asks JPEG draft mode for (without EXIF rotation)."""
    cover = max(target[0] / source[0], target[1] / source[1]) * REDUCING_GAP
    return max(1, math.ceil(source[0] * cover)), max(1, math.ceil(source[1] * cover))


def pillow_derive(data: bytes, size: Size, use_draft: bool) -> float:
    """Open, centre-crop and resize with LANCZOS, save as JPEG; seconds taken."""
    started = time.perf_counter()
    with Image.open(BytesIO(data)) as image:
        if use_draft and image.format == "JPEG":
            image.draft(None, draft_size(image.size, size))
        fitted = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
    if fitted.mode != "RGB":
        fitted = fitted.convert("RGB")  # JPEG has no alpha
    fitted.save(BytesIO(), format="JPEG", quality=JPEG_QUALITY)
    return time.perf_counter() - started


def run_floor(
    name: str, pairs: list[tuple[bytes, Size]], concurrency: int, use_draft: bool, limit: float
) -> Measured:
    measured = Measured(name, planned=len(pairs))
    before, started = usage_now(), time.perf_counter()
    executor = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = [executor.submit(pillow_derive, data, size, use_draft) for data, size in pairs]
        finished, unfinished = wait(futures, timeout=limit)
        measured.wall = time.perf_counter() - started
        for future in finished:
            if future.exception() is None:
                measured.latencies.append(future.result())
            else:
                measured.errors.append(repr(future.exception()))
        if unfinished:
            measured.errors.append(f"{len(unfinished)} not finished within {limit:.0f}s")
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    measured.account(before, usage_now())
    return measured


# The server, as a separate twistd process


class ServerProcess(ProcessProtocol):
    """A `twistd pymager` child: its log lines, its port, its end."""

    def __init__(self, log_path: Path) -> None:
        self.lines: list[str] = []
        self._partial = b""
        self._log = log_path.open("wb")
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.pid: int | None = None

    def outReceived(self, data: bytes) -> None:
        self._log.write(data)
        self._partial += data
        *complete, self._partial = self._partial.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            match = LISTENING.search(line)
            if match and not self.listening.called:
                self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self._log.close()
        if isinstance(reason.value, ProcessDone | ProcessTerminated):
            self.exit_code = reason.value.exitCode
            self.exit_signal = getattr(reason.value, "signal", None)
        if not self.listening.called:
            tail = "\n".join(self.lines[-20:])
            self.listening.errback(RuntimeError(f"twistd ended before listening:\n{tail}"))
        self.ended.callback(None)

    @property
    def running(self) -> bool:
        return not self.ended.called

    def derivations(self) -> list[tuple[str, float]]:
        """(derived ID, seconds) of every line logged so far that contains "Derived "."""
        found = []
        for line in self.lines:
            if "Derived " not in line:
                continue
            match = DERIVED.search(line)
            found.append((match.group(1), float(match.group(3))) if match else ("?", math.nan))
        return found

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far (all its threads)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = stat.rpartition(")")[2].split()
        user, system = int(fields[11]), int(fields[12])  # utime and stime, fields 14 and 15
        return (user + system) / os.sysconf("SC_CLK_TCK")

    def memory_kb(self) -> dict[str, int]:
        """VmHWM (peak resident set) and VmRSS of the process, in kB."""
        values: dict[str, int] = {}
        if self.pid is None:
            return values
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return values
        for line in status.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
        return values


def write_config(directory: Path, sizes: list[str]) -> Path:
    config = directory / "pymager.toml"
    quoted = ", ".join(f'"{size}"' for size in sizes)
    config.write_text(f"[images]\nallowed_sizes = [{quoted}]\n", encoding="utf-8")
    return config


def spawn_server(
    reactor: Any, directory: Path, sizes: list[str], log_path: Path
) -> tuple[ServerProcess, Any]:
    config = write_config(directory, sizes)
    arguments = [
        TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "pymager",
        "--listen", "tcp:0:interface=127.0.0.1",
        "--data-dir", str(directory / "data"),
        "--config", str(config),
    ]  # fmt: skip
    # This checkout's code and plugin; no bytecode written into the source tree.
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONDONTWRITEBYTECODE": "1"}
    protocol = ServerProcess(log_path)
    process = reactor.spawnProcess(protocol, TWISTD, arguments, env=environment, path=str(directory))
    protocol.pid = process.pid
    return protocol, process


def send_signal(process: Any, name: str) -> None:
    """Signal the process unless it has already exited (its pipes may still be open)."""
    with contextlib.suppress(ProcessExitedAlready):
        process.signalProcess(name)


async def stop_server(reactor: Any, protocol: ServerProcess, process: Any, grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within grace seconds."""
    send_signal(process, "TERM")
    if not await wait_until(reactor, lambda: not protocol.running, grace):
        print("  twistd did not end on SIGTERM; killing it", flush=True)
        send_signal(process, "KILL")
        await wait_until(reactor, lambda: not protocol.running, grace)


async def wait_until(reactor: Any, done: Callable[[], bool], timeout: float) -> bool:
    """Poll done() every 50 ms for at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        await deferLater(reactor, 0.05)
    return True


async def settled_derivations(reactor: Any, server: ServerProcess, expected: int) -> list[tuple[str, float]]:
    """The derivations logged, once at least expected are in and a moment has
    passed without more (log lines travel on a pipe, responses on a socket)."""
    await wait_until(reactor, lambda: len(server.derivations()) >= expected, timeout=10.0)
    await deferLater(reactor, 0.5)
    return server.derivations()


# The HTTP client


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    body: bytes | None = None
    content_type: str | None = None
    expect_status: int = 200
    expect_size: Size | None = None  # check the derived image's dimensions


@dataclass(frozen=True)
class Answer:
    latency: float
    error: str | None
    digest: str


async def send(pool: HTTPConnectionPool, call: Call, timeout: float) -> Answer:
    headers: dict[bytes | str, bytes | str] = {}
    if call.content_type:
        headers["Content-Type"] = call.content_type
    started = time.perf_counter()
    try:
        response = await treq.request(
            call.method, call.url, data=call.body, headers=headers, pool=pool, timeout=timeout
        )
        body = await treq.content(response)
    except Exception as error:
        return Answer(time.perf_counter() - started, f"{call.url}: {type(error).__name__}: {error}", "")
    latency = time.perf_counter() - started
    return Answer(latency, check_answer(call, response.code, body), hashlib.sha256(body).hexdigest())


def check_answer(call: Call, status: int, body: bytes) -> str | None:
    if status != call.expect_status:
        return f"{call.method} {call.url}: status {status}, expected {call.expect_status}: {body[:200]!r}"
    if call.expect_size is not None:
        try:
            with Image.open(BytesIO(body)) as image:
                size = image.size
        except Exception as error:
            return f"{call.url}: not an image ({error})"
        if size != call.expect_size:
            return f"{call.url}: {size[0]}x{size[1]}, expected {call.expect_size[0]}x{call.expect_size[1]}"
    return None


async def run_bounded(
    server: ServerProcess,
    pool: HTTPConnectionPool,
    name: str,
    calls: list[Call],
    concurrency: int,
    limit: float,
    timeout: float,
) -> Measured:
    """Send calls with at most concurrency in flight; stop starting new ones after limit seconds."""
    measured = Measured(name, planned=len(calls))
    queue: Iterator[Call] = iter(calls)  # shared: each call goes to exactly one worker
    before, started = usage_now(server.cpu_seconds()), time.perf_counter()

    async def worker() -> None:
        for call in queue:
            if time.perf_counter() - started > limit:
                measured.errors.append(f"phase limit of {limit:.0f}s reached")
                return
            answer = await send(pool, call, timeout)
            if answer.error is None:
                measured.latencies.append(answer.latency)
            else:
                measured.errors.append(answer.error)

    await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(concurrency)])
    measured.wall = time.perf_counter() - started
    measured.account(before, usage_now(server.cpu_seconds()))
    return measured


@dataclass
class Dedupe:
    """Simultaneous first requests for one URL that nobody has asked for yet."""

    url: str
    derived_prefix: str  # how the server's "Derived ..." line names it, up to the format
    wall: float = 0.0
    errors: list[str] = field(default_factory=list)
    identical: bool = True  # every answer had the same body
    derivations: int = 0  # "Derived ..." lines the server logged for it
    derive_seconds: float = math.nan  # the time that line reports


async def run_dedupe(pool: HTTPConnectionPool, dedupe: Dedupe, fanout: int, timeout: float) -> None:
    call = Call("GET", dedupe.url)
    started = time.perf_counter()
    answers = await gatherResults([Deferred.fromCoroutine(send(pool, call, timeout)) for _ in range(fanout)])
    dedupe.wall = time.perf_counter() - started
    dedupe.errors = [answer.error for answer in answers if answer.error]
    dedupe.identical = len({answer.digest for answer in answers}) == 1


# The run


@dataclass
class Plan:
    uploads: list[Call]
    derived: list[Call]
    dedupe: list[Dedupe]
    kinds: dict[str, str]  # image ID -> "JPEG" or "PNG"


def make_plan(base_url: str, corpus: list[CorpusImage], arguments: argparse.Namespace) -> Plan:
    """IDs image_cN for every corpus image and copy N; every size of each; and
    the dedupe URLs, at a size no other phase asks for."""
    uploads: list[Call] = []
    kinds: dict[str, str] = {}
    for copy in range(arguments.copies):
        for image in corpus:
            image_id = f"{image.image_id}_c{copy}"
            kinds[image_id] = "PNG" if image.media_type == "image/png" else "JPEG"
            url = f"{base_url}/original/{image_id}"
            uploads.append(Call("PUT", url, image.path.read_bytes(), image.media_type, expect_status=201))
    derived = [
        Call("GET", f"{base_url}/derived/{image_id}-{size}.jpg", expect_size=parse_size(size))
        for image_id in kinds
        for size in arguments.sizes
    ]
    size = arguments.dedupe_size
    dedupe = [
        Dedupe(f"{base_url}/derived/{image_id}-{size}.jpg", f"{image_id}-{size}.")
        for image_id in list(kinds)[: arguments.dedupe_images]
    ]
    return Plan(uploads, derived, dedupe, kinds)


@dataclass
class ServerRun:
    upload: Measured
    cold: Measured
    warm: Measured
    dedupe: list[Dedupe]
    cold_logged: list[tuple[str, float]]  # (derived ID, seconds) of the cold phase's derivations
    warm_logged: int  # derivations logged during the warm phase: should be none
    memory_kb: dict[str, dict[str, int]]  # VmHWM and VmRSS after each phase
    upload_bytes: int
    kinds: dict[str, str]
    exit_code: int | None = None
    exit_signal: int | None = None
    traceback: bool = False


async def measure_server(
    reactor: Any,
    server: ServerProcess,
    pool: HTTPConnectionPool,
    arguments: argparse.Namespace,
    corpus: list[CorpusImage],
) -> ServerRun:
    try:
        port = await server.listening.addTimeout(30, reactor)
    except defer.TimeoutError:
        raise RuntimeError("twistd did not report listening within 30 s") from None
    base_url = f"http://127.0.0.1:{port}"
    print(f"twistd pymager (pid {server.pid}) listening on {base_url}", flush=True)
    plan = make_plan(base_url, corpus, arguments)
    concurrency, limit, timeout = arguments.concurrency, arguments.phase_limit, arguments.request_timeout
    memory = {"started": server.memory_kb()}

    print(f"Upload: {len(plan.uploads)} originals ...", flush=True)
    upload = await run_bounded(
        server, pool, "upload (PUT original)", plan.uploads, concurrency, limit, timeout
    )
    memory["after upload"] = server.memory_kb()

    print(f"Cold: {len(plan.derived)} derivations ...", flush=True)
    before = len(server.derivations())
    cold = await run_bounded(server, pool, "cold (GET, derives)", plan.derived, concurrency, limit, timeout)
    cold_logged = (await settled_derivations(reactor, server, before + cold.done))[before:]
    memory["after cold"] = server.memory_kb()

    warm_calls = plan.derived * arguments.warm_rounds
    print(f"Warm: {len(warm_calls)} requests ...", flush=True)
    before = len(server.derivations())
    warm = await run_bounded(server, pool, "warm (GET, stored)", warm_calls, concurrency, limit, timeout)
    warm_logged = len(await settled_derivations(reactor, server, before)) - before
    memory["after warm"] = server.memory_kb()

    print(
        f"Dedupe: {len(plan.dedupe)} URLs x {arguments.dedupe_fanout} simultaneous requests ...", flush=True
    )
    before = len(server.derivations())
    for dedupe in plan.dedupe:
        await run_dedupe(pool, dedupe, arguments.dedupe_fanout, timeout)
    logged = (await settled_derivations(reactor, server, before + len(plan.dedupe)))[before:]
    for dedupe in plan.dedupe:
        mine = [seconds for derived_id, seconds in logged if derived_id.startswith(dedupe.derived_prefix)]
        dedupe.derivations = len(mine)
        dedupe.derive_seconds = mine[0] if mine else math.nan
    memory["end"] = server.memory_kb()

    upload_bytes = sum(len(call.body or b"") for call in plan.uploads)
    return ServerRun(
        upload, cold, warm, plan.dedupe, cold_logged, warm_logged, memory, upload_bytes, plan.kinds
    )


async def run_server(
    reactor: Any, arguments: argparse.Namespace, corpus: list[CorpusImage], directory: Path
) -> ServerRun:
    """Start twistd with its data in directory, measure, and always stop it."""
    arguments.server_log.parent.mkdir(parents=True, exist_ok=True)
    sizes = [*arguments.sizes, arguments.dedupe_size]
    server, process = spawn_server(reactor, directory, sizes, arguments.server_log)
    # Should this process be stopped (Ctrl-C, SIGTERM), the reactor waits for
    # the server to stop before it stops itself.
    trigger = reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(stop_server(reactor, server, process))
    )
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max(arguments.concurrency, arguments.dedupe_fanout)
    try:
        run = await measure_server(reactor, server, pool, arguments, corpus)
    finally:
        await pool.closeCachedConnections()
        await stop_server(reactor, server, process)
        reactor.removeSystemEventTrigger(trigger)
    run.exit_code = server.exit_code
    run.exit_signal = server.exit_signal
    run.traceback = any("Traceback" in line for line in server.lines)
    return run


def run_in_reactor(arguments: argparse.Namespace, corpus: list[CorpusImage], directory: Path) -> ServerRun:
    """Run the server phases under the reactor and return their results."""
    from twisted.internet import reactor

    outcome: list[ServerRun | Failure] = []

    def start() -> None:
        done = Deferred.fromCoroutine(run_server(reactor, arguments, corpus, directory))
        done.addBoth(outcome.append)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    # The reactor's handlers stay installed after it stops; give Ctrl-C and
    # SIGTERM back their usual meaning for the rest of the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not outcome:
        raise RuntimeError("the run was interrupted")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    assert isinstance(outcome[0], ServerRun)
    return outcome[0]


def floor_pairs(corpus: list[CorpusImage], arguments: argparse.Namespace) -> list[tuple[bytes, Size]]:
    """The cold phase's work, for the floor: every copy of every image, at every size."""
    contents = [image.path.read_bytes() for image in corpus]
    sizes = [parse_size(size) for size in arguments.sizes]
    return [(data, size) for _ in range(arguments.copies) for data in contents for size in sizes]


def run_floors(pairs: list[tuple[bytes, Size]], concurrency: int, limit: float, when: str) -> list[Measured]:
    print(f"Plain-Pillow floor ({when}): {len(pairs)} derivations x 2, {concurrency} threads ...", flush=True)
    return [
        run_floor(f"floor naive ({when})", pairs, concurrency, use_draft=False, limit=limit),
        run_floor(f"floor draft ({when})", pairs, concurrency, use_draft=True, limit=limit),
    ]


# Reporting


def parse_size(text: str) -> Size:
    width, _, height = text.partition("x")
    return int(width), int(height)


def machine() -> dict[str, str]:
    model = memory = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": model,
        "memory": memory,
        "python": platform.python_version(),
        "pillow": version("pillow"),
        "libjpeg_turbo": str(features.version("libjpeg_turbo") or "no"),
        "zlib": str(features.version("zlib")),
        "twisted": version("twisted"),
        "treq": version("treq"),
        "klein": version("klein"),
        "sqlalchemy": version("sqlalchemy"),
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def floor_rate(floors: list[Measured], kind: str, when: str) -> float:
    """img/s of the floor of kind ("naive" or "draft") run when ("before" or "after")."""
    for floor in floors:
        if floor.name == f"floor {kind} ({when})":
            return floor.rate
    return math.nan


def both_floors(floors: list[Measured], kind: str) -> float:
    """The mean img/s of the floor run before and after the server."""
    return (floor_rate(floors, kind, "before") + floor_rate(floors, kind, "after")) / 2


def both_floors_cpu(floors: list[Measured], kind: str) -> float:
    """The mean CPU ms per image of the floor of kind, run before and after the server."""
    chosen = [floor for floor in floors if floor.name.startswith(f"floor {kind} ")]
    return sum(floor.cpu_ms_per_item(floor.client_cpu) for floor in chosen) / len(chosen)


def compute_ratios(run: ServerRun, floors: list[Measured]) -> dict[str, float]:
    dedupe = [ratio(item.wall, item.derive_seconds) for item in run.dedupe]
    return {
        "warm / cold throughput": ratio(run.warm.rate, run.cold.rate),
        "cold pymager / floor naive (img/s)": ratio(run.cold.rate, both_floors(floors, "naive")),
        "cold pymager / floor draft (img/s)": ratio(run.cold.rate, both_floors(floors, "draft")),
        "cold: server CPU per derivation / floor draft CPU per image": ratio(
            run.cold.cpu_ms_per_item(run.cold.server_cpu), both_floors_cpu(floors, "draft")
        ),
        "cold: server CPU used / wall (cores busy)": ratio(run.cold.server_cpu, run.cold.wall),
        "upload req/s / cold req/s": ratio(run.upload.rate, run.cold.rate),
        "dedupe wall per URL / its one server derivation": median(dedupe),
        "floor naive drift, after / before": ratio(
            floor_rate(floors, "naive", "after"), floor_rate(floors, "naive", "before")
        ),
        "floor draft drift, after / before": ratio(
            floor_rate(floors, "draft", "after"), floor_rate(floors, "draft", "before")
        ),
    }


def table_row(measured: Measured, unit: str) -> str:
    server_cpu = measured.cpu_ms_per_item(measured.server_cpu)
    bench_cpu = measured.cpu_ms_per_item(measured.client_cpu)
    return (
        f"| {measured.name} | {measured.done}/{measured.planned} | {measured.wall:.2f} "
        f"| {measured.rate:.1f} {unit} | {measured.p50_ms:.0f} | {measured.p99_ms:.0f} "
        f"| {server_cpu:.1f} | {bench_cpu:.1f} | {measured.others:.2f} | {len(measured.errors)} |"
    )


def milliseconds(values: list[float]) -> str:
    if not values:
        return "none logged"
    return (
        f"median {median(values) * 1000:.0f} ms, p99 {percentile(values, 99) * 1000:.0f} ms (n={len(values)})"
    )


def report_lines(run: ServerRun, floors: list[Measured], ratios: dict[str, float]) -> list[str]:
    lines = [
        "| phase | done/planned | wall s | throughput | p50 ms | p99 ms "
        "| server CPU ms/item | bench CPU ms/item | other load, cores | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
        table_row(run.upload, "req/s"),
        table_row(run.cold, "req/s"),
        table_row(run.warm, "req/s"),
        *(table_row(floor, "img/s") for floor in floors),
        "",
        f"upload volume: {run.upload_bytes / 1e6:.1f} MB, "
        f"{ratio(run.upload_bytes / 1e6, run.upload.wall):.1f} MB/s",
        "cold, derivation time the server logged (image pool wait, decode, resize, encode, store, record):",
    ]
    for kind in ("JPEG", "PNG"):
        seconds = [
            s for derived_id, s in run.cold_logged if run.kinds.get(derived_id.rpartition("-")[0]) == kind
        ]
        lines.append(f"  {kind} originals: {milliseconds(seconds)}")
    lines.append(
        f"derivations logged: cold {len(run.cold_logged)} for {run.cold.done} URLs, warm {run.warm_logged}"
    )
    walls = [item.wall for item in run.dedupe]
    derives = [item.derive_seconds for item in run.dedupe]
    lines += [
        f"dedupe: {len(run.dedupe)} URLs, each asked for by simultaneous GETs",
        f"  wall per URL: {milliseconds(walls)}",
        f"  its one derivation, as logged: {milliseconds(derives)}",
        f"  derivations logged {sum(item.derivations for item in run.dedupe)} for {len(run.dedupe)} URLs; "
        f"identical bodies: {'yes' if all(item.identical for item in run.dedupe) else 'NO'}; "
        f"errors {sum(len(item.errors) for item in run.dedupe)}",
    ]
    peak = max(values.get("VmHWM", 0) for values in run.memory_kb.values()) / 1024
    rss = ", ".join(f"{phase} {values.get('VmRSS', 0) / 1024:.0f}" for phase, values in run.memory_kb.items())
    lines += [f"server peak RSS (VmHWM): {peak:.0f} MB; RSS MB: {rss}", "", "Ratios (same run):"]
    width = max(len(name) for name in ratios)
    lines += [f"  {name:<{width}}  {value:.2f}" for name, value in ratios.items()]
    busy = [m for m in [run.upload, run.cold, run.warm, *floors] if m.others > NOISY_CORES]
    if busy:
        phases = ", ".join(f"{m.name} {m.others:.1f}" for m in busy)
        lines += [
            "",
            f"NOISE: other processes kept cores busy during: {phases}.",
            "  Throughput ratios that involve these phases are skewed; CPU ms per item is not.",
        ]
    return lines


def problems(run: ServerRun, floors: list[Measured]) -> list[str]:
    """What went wrong, in words; empty when the run is clean."""
    found: list[str] = []
    for measured in [run.upload, run.cold, run.warm, *floors]:
        found += [f"{measured.name}: {error}" for error in measured.errors[:3]]
        if measured.done < measured.planned:
            found.append(f"{measured.name}: only {measured.done} of {measured.planned} succeeded")
    for item in run.dedupe:
        found += [f"dedupe {item.url}: {error}" for error in item.errors[:3]]
        if item.derivations != 1:
            found.append(f"dedupe {item.url}: {item.derivations} derivations logged, expected 1")
        if not item.identical:
            found.append(f"dedupe {item.url}: simultaneous requests got different bodies")
    if len(run.cold_logged) != run.cold.done:
        found.append(f"cold: {len(run.cold_logged)} derivations logged for {run.cold.done} URLs")
    if run.warm_logged:
        found.append(f"warm: {run.warm_logged} derivations logged; expected none")
    if run.traceback:
        found.append("the server logged a traceback (see the server log)")
    if run.exit_signal != signal.SIGTERM and run.exit_code != 0:
        found.append(
            f"the server ended with exit code {run.exit_code}, signal {run.exit_signal}; not by SIGTERM"
        )
    return found


def write_json(
    path: Path,
    arguments: argparse.Namespace,
    run: ServerRun,
    floors: list[Measured],
    ratios: dict[str, float],
    found: list[str],
    total: float,
) -> None:
    document = {
        "machine": machine(),
        "arguments": {key: str(value) for key, value in vars(arguments).items()},
        "corpus_digest": corpus_digest(),
        "total_seconds": round(total, 1),
        "phases": {
            measured.name: measured.summary() for measured in [run.upload, run.cold, run.warm, *floors]
        },
        "cold_logged": run.cold_logged,
        "dedupe": [asdict(item) for item in run.dedupe],
        "memory_kb": run.memory_kb,
        "server_exit": {"code": run.exit_code, "signal": run.exit_signal},
        "ratios": ratios,
        "problems": found,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--concurrency", type=int, default=4, help="requests in flight, and floor threads (4)")
    add("--copies", type=int, default=5, help="upload each corpus image this many times, under new IDs (5)")
    add("--sizes", nargs="+", default=["150x150", "320x240", "400x300", "200x200"], help="derived sizes")
    add("--warm-rounds", type=int, default=10, help="times each derived URL is fetched warm (10)")
    add("--dedupe-size", default="300x300", help="a size kept back for the dedupe phase (300x300)")
    add("--dedupe-images", type=int, default=4, help="URLs in the dedupe phase (4)")
    add("--dedupe-fanout", type=int, default=16, help="simultaneous requests per dedupe URL (16)")
    add("--phase-limit", type=float, default=120.0, help="seconds after which a phase starts no more (120)")
    add("--request-timeout", type=float, default=60.0, help="seconds per request (60)")
    add(
        "--server-log", type=Path, default=OUT / "server.log", help="the twistd output (bench/out/server.log)"
    )
    add("--json", type=Path, default=OUT / "results.json", help="results as JSON (bench/out/results.json)")
    arguments = parser.parse_args()
    for size in [*arguments.sizes, arguments.dedupe_size]:
        if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", size):
            parser.error(f"a size is WxH, like 150x150; got {size!r}")
    if arguments.dedupe_size in arguments.sizes:
        parser.error("--dedupe-size must not be one of --sizes: its URLs must not be derived yet")
    counts = ("concurrency", "copies", "warm_rounds", "dedupe_images", "dedupe_fanout")
    if any(getattr(arguments, name) < 1 for name in counts):
        parser.error("counts must be at least 1")
    return arguments


def main() -> int:
    arguments = parse_arguments()
    if not Path(TWISTD).exists():
        print(
            f"no twistd beside this Python ({TWISTD}): run it with the project's virtualenv", file=sys.stderr
        )
        return 2
    began = time.perf_counter()
    corpus = ensure()
    if arguments.dedupe_images > len(corpus) * arguments.copies:
        print("--dedupe-images is larger than the number of uploaded originals", file=sys.stderr)
        return 2
    print(f"Corpus: {len(corpus)} images, digest {corpus_digest()}", flush=True)
    pairs = floor_pairs(corpus, arguments)
    floors = run_floors(pairs, arguments.concurrency, arguments.phase_limit, "before")
    try:
        with tempfile.TemporaryDirectory(prefix="pymager-bench-") as directory:
            run = run_in_reactor(arguments, corpus, Path(directory))
    except RuntimeError as error:  # the server did not start, or the run was interrupted
        print(f"\nFAILED: {error}", file=sys.stderr)
        return 1
    floors += run_floors(pairs, arguments.concurrency, arguments.phase_limit, "after")
    total = time.perf_counter() - began

    ratios = compute_ratios(run, floors)
    found = problems(run, floors)
    print()
    for key, value in machine().items():
        print(f"{key}: {value}")
    print(
        f"concurrency {arguments.concurrency}; {len(corpus)} corpus images x {arguments.copies} copies; "
        f"sizes {' '.join(arguments.sizes)}; total {total:.0f} s"
    )
    print()
    print("\n".join(report_lines(run, floors, ratios)))
    write_json(arguments.json, arguments, run, floors, ratios, found, total)
    print(f"\nResults as JSON: {arguments.json}; server log: {arguments.server_log}")
    if found:
        print("\nPROBLEMS:")
        for problem in found:
            print(f"  {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
