"""
pymager-tx against thumbor 7 (and a plain-Pillow floor) on real photographs,
over HTTP on 127.0.0.1, in one run.

    python bench/compare.py --corpus-dir bench/photos --out bench/out/compare.md
    python bench/compare.py --baseline HEAD~1 --skip-thumbor --memory-cache off --quick

With --baseline REV a second pymager-tx runs beside this checkout's: REV's
tree, installed in a venv of its own (bench/baseline.py; cached by commit
under /tmp), started with the same settings, and measured in every phase with
the same URLs. The report then also gives each figure of both and the ratio
current / baseline. --skip-thumbor leaves thumbor out. --installed runs this
checkout's HEAD installed as a baseline is (a clean venv of its own) instead
of from the development venv, whose test and lint packages alone leave each
process 8-10 MB larger: compare resident memory across the two sides only so.

Phases, each server in turn, the same URLs in the same order:

  floor    plain Pillow here on --floor-threads threads: open, draft, ImageOps.fit
           (LANCZOS), save JPEG q85, for every cold (photo, size) pair; run
           before the servers start and after they stop
  upload   PUT every corpus file (--copies times) to each pymager-tx
  cold     every 8-20 MP JPEG at every --sizes size, crop mode, once, at
           --concurrency: nothing cached on either server
  warm     the same URLs again for --warm-seconds with wrk (pymager-tx serves
           its stored file, thumbor its result storage)
  memory   --memory-concurrency simultaneous cold derivations of the ~20 MP
           JPEGs at sizes not asked for before; peak RSS of each server.
           pymager-tx gets fresh copies of them (IDs <id>_m<n>, uploaded
           unmeasured just before), so that no working copy from the cold
           phase is reused: the first wave is 8 full decodes at once
  quality  bench/quality.py against this checkout's pymager-tx only
           (--skip-quality to skip)

Peak RSS per phase: VmHWM of every server process, reset before the phase
through /proc/PID/clear_refs and summed over processes (thumbor: the parent
and its workers), plus the highest summed VmRSS seen by polling every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageOps, features

sys.path.insert(0, str(Path(__file__).parent))
import baseline
import loadgen
import photos
import quality
import servers

REPOSITORY = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "out"  # git-ignored
THUMBOR_REQUIREMENT = "thumbor==7.8.0"  # the newest 7.x; installs on Python 3.11 with its own Pillow
JPEG_QUALITY = 85  # pymager-tx's default; thumbor is configured to match
REDUCING_GAP = 2.0  # as pymager_tx.imaging.render: decode at least twice the target size
COLD_SIZES = (
    "150x150", "160x120", "180x240", "200x200", "220x165", "240x320", "256x256", "280x210",
    "300x300", "320x180", "320x240", "340x255", "360x360", "375x250", "400x225", "400x300",
)  # fmt: skip
MEMORY_SIZES = ("152x152", "168x126", "212x212", "264x198", "296x296", "328x246", "352x264", "392x294")
# Fresh pymager-tx IDs per memory photo; each is asked at MEMORY_SIZES / MEMORY_COPIES sizes.
MEMORY_COPIES = 4
SEED = 20261121
NOISY_CORES = 0.25  # other processes above this during a phase make it noisy
# --quick: 80 cold URLs a server (every other size), no quality check; any
# option given on the command line still wins.
QUICK_SIZES = COLD_SIZES[::2]
QUICK = {
    "sizes": list(QUICK_SIZES),
    "copies": 1,
    "warm_seconds": 5.0,
    "warm_rounds": 2,
    "skip_quality": True,
}


# Set-up


def install_commands(venv: Path, thumbor: bool, wrk: bool) -> list[str]:
    commands = []
    if thumbor:
        commands += [f"python3 -m venv {venv}", f"{venv}/bin/pip install '{THUMBOR_REQUIREMENT}'"]
    if wrk:
        commands.append("apt-get update && apt-get install -y wrk")
    return commands


def check_tools(venv: Path, install: bool, need_thumbor: bool, need_wrk: bool) -> None:
    """thumbor in its own venv (its Pillow must not meet ours) and wrk, when needed."""
    thumbor = need_thumbor and not (venv / "bin" / "thumbor").exists()
    wrk = need_wrk and shutil.which("wrk") is None
    if not (thumbor or wrk):
        return
    commands = install_commands(venv, thumbor, wrk)
    if not install:
        sys.exit(
            "Missing thumbor or wrk. Run --install (or --skip-thumbor, --warm-client python), or:\n  "
            + "\n  ".join(commands)
        )
    for command in commands:
        print(f"$ {command}", flush=True)
        subprocess.run(command, shell=True, check=True)


# The plain-Pillow floor


def pillow_derive(data: bytes, size: tuple[int, int]) -> None:
    with Image.open(BytesIO(data)) as image:
        if image.format == "JPEG":
            cover = max(size[0] / image.width, size[1] / image.height) * REDUCING_GAP
            image.draft(None, (math.ceil(image.width * cover), math.ceil(image.height * cover)))
        fitted = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
    fitted.convert("RGB").save(BytesIO(), format="JPEG", quality=JPEG_QUALITY)


def run_floor(name: str, pairs: list[tuple[bytes, tuple[int, int]]], threads: int) -> loadgen.Phase:
    phase = loadgen.Phase(name, planned=len(pairs))

    def timed(data: bytes, size: tuple[int, int]) -> float:
        started = time.perf_counter()
        pillow_derive(data, size)
        return time.perf_counter() - started

    cpu_before, busy, started = time.process_time(), busy_seconds(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        phase.latencies = list(pool.map(lambda pair: timed(*pair), pairs))
    phase.wall = time.perf_counter() - started
    phase.client_cpu = time.process_time() - cpu_before
    account_others(phase, busy)
    return phase


# Measuring one server


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, iowait or steal)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4] - fields[7]) / os.sysconf("SC_CLK_TCK")


def account_others(phase: loadgen.Phase, busy_before: float) -> None:
    """Other sessions share this machine: record how many cores they took."""
    ours = phase.client_cpu + (0.0 if math.isnan(phase.server_cpu) else phase.server_cpu)
    phase.other_cores = ratio(busy_seconds() - busy_before - ours, phase.wall)


def measured(server: servers.Server, run: Callable[[Callable[[], float]], loadgen.Phase]) -> loadgen.Phase:
    """run(server_cpu) with the server's peak-RSS window reset around it."""
    server.reset_peaks()
    busy = busy_seconds()
    with servers.RssSampler([server]) as sampler:
        phase = run(server.cpu_seconds)
    account_others(phase, busy)
    phase.peak_rss_kb = server.peak_kb()
    phase.sampled_rss_kb = sampler.peaks[server.name]
    return phase


def counted(
    server: servers.Server, name: str, requests: list[loadgen.Request], concurrency: int
) -> loadgen.Phase:
    return measured(server, lambda cpu: loadgen.run_counted(name, requests, concurrency, server_cpu=cpu))


def warm(server: servers.Server, plan: Plan, arguments: argparse.Namespace) -> loadgen.Phase:
    """The cold URLs again: with wrk for --warm-seconds, or --warm-rounds times in Python."""
    make = URL_MAKERS[server.kind]
    if arguments.warm_client == "wrk":
        paths = [make("", *pair).url for pair in plan.cold]  # no base: the path
        return measured(
            server,
            lambda cpu: loadgen.run_wrk(
                "warm", server.base_url, paths, arguments.concurrency, arguments.warm_seconds, server_cpu=cpu
            ),
        )
    requests = [make(server.base_url, *pair) for pair in plan.cold] * arguments.warm_rounds
    return counted(server, "warm", requests, arguments.concurrency)


def size_of(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


@dataclass
class Plan:
    cold: list[tuple[photos.Photo, str]]  # (photo, size), shuffled the same way for both servers
    memory: list[tuple[photos.Photo, str]]
    uploads: list[tuple[str, photos.Photo]]  # (image ID, photo)
    # pymager-tx's image ID for each memory pair: a copy no earlier phase has
    # derived from, so it has no working copy yet.
    memory_ids: list[str] = field(default_factory=list)
    memory_uploads: list[tuple[str, photos.Photo]] = field(default_factory=list)


def make_plan(corpus: list[photos.Photo], sizes: list[str], copies: int) -> Plan:
    # 7.9: picos.jpg, 3264x2448, is 7.99 MP; kleiber.jpg is 20.4 MP.
    large = [photo for photo in corpus if photo.format == "JPEG" and 7.9 <= photo.megapixels <= 21]
    cold = [(photo, size) for photo in large for size in sizes]
    random.Random(SEED).shuffle(cold)  # no run of one photo: both servers see the same mix
    biggest = [photo for photo in large if photo.megapixels >= 17]
    # Size-major, so the first len(biggest) * MEMORY_COPIES requests (8) go to
    # distinct fresh copies: that many originals decoded in full at once. The
    # rest ask the same copies for other sizes (from their working copies).
    memory = [(photo, size) for size in MEMORY_SIZES for photo in biggest]
    memory_ids = [
        f"{photo.image_id}_m{index // len(biggest) % MEMORY_COPIES}"
        for index, (photo, _) in enumerate(memory)
    ]
    memory_uploads = [
        (f"{photo.image_id}_m{copy}", photo) for photo in biggest for copy in range(MEMORY_COPIES)
    ]
    uploads = [
        (photo.image_id if copy == 0 else f"{photo.image_id}_c{copy}", photo)
        for copy in range(copies)
        for photo in corpus
    ]
    return Plan(cold, memory, uploads, memory_ids, memory_uploads)


def pymager_request(
    base: str, photo: photos.Photo, size: str, image_id: str | None = None
) -> loadgen.Request:
    return loadgen.Request(
        "GET", f"{base}/derived/{image_id or photo.image_id}-{size}.jpg", expect_size=size_of(size)
    )


# "Derived <id> (<n> bytes) from the working copy: ..." / "... from the original: ...",
# and "Made the working copy of <id>: ..." (pymager_tx.app.service).
DERIVED_FROM = re.compile(r"Derived \S+ \(\d+ bytes\) from the (working copy|original):")
WORKING_COPY_MADE = "Made the working copy of "


def derivation_sources(log_path: Path) -> Counter[str]:
    """How many derivations so far came from each source, and how many working copies were made."""
    counts: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        found = DERIVED_FROM.search(line)
        if found:
            counts[found.group(1)] += 1
        elif WORKING_COPY_MADE in line:
            counts["working copies made"] += 1
    return counts


def thumbor_request(base: str, photo: photos.Photo, size: str) -> loadgen.Request:
    # Plain centre crop: thumbor's default when both sizes are given, no smart.
    return loadgen.Request("GET", f"{base}/unsafe/{size}/{photo.name}", expect_size=size_of(size))


URL_MAKERS = {"pymager-tx": pymager_request, "thumbor": thumbor_request}


@dataclass
class Results:
    phases: dict[str, dict[str, loadgen.Phase]] = field(default_factory=dict)  # phase -> server -> result
    quality: quality.QualityResult | None = None
    started_rss_kb: dict[str, int] = field(default_factory=dict)
    # pymager-tx server name -> phase -> derivation sources, from its log
    sources: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    setup_errors: list[str] = field(default_factory=list)

    def add(self, phase: str, server: str, result: loadgen.Phase) -> None:
        self.phases.setdefault(phase, {})[server] = result
        print(
            f"  {phase:7} {server:10} {result.done}/{result.planned} in {result.wall:.1f}s: "
            f"{result.rate:.1f}/s p50 {result.p(50):.0f} ms p99 {result.p(99):.0f} ms, "
            f"peak RSS {result.peak_rss_kb / 1024:.0f} MB, errors {len(result.errors)}",
            flush=True,
        )


def allowed_sizes(arguments: argparse.Namespace) -> list[str]:
    """pymager-tx's [images] allowed_sizes: exactly the sizes this run asks for
    (crop and fit share them). They also size its working copies: a copy is
    made when 2 * max over sizes of max(w/W, h/H) <= 0.5."""
    return sorted({*arguments.sizes, *MEMORY_SIZES, *quality.SIZES})


def working_scales(arguments: argparse.Namespace, corpus: list[photos.Photo]) -> dict[str, float]:
    from pymager_tx.core.model import Size
    from pymager_tx.imaging.geometry import working_scale

    sizes = [Size.parse(text) for text in allowed_sizes(arguments)]
    return {photo.name: working_scale((photo.width, photo.height), sizes) for photo in corpus}


def pymager_threads(arguments: argparse.Namespace) -> int:
    """Image threads per pymager-tx process: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // arguments.pymager_workers)


def upload_requests(
    server: servers.Server, uploads: list[tuple[str, photos.Photo]], corpus_dir: Path
) -> list[loadgen.Request]:
    return [
        loadgen.Request(
            "PUT",
            f"{server.base_url}/original/{image_id}",
            (corpus_dir / photo.name).read_bytes(),
            photo.media_type,
            expect_status=201,
        )
        for image_id, photo in uploads
    ]


def memory_requests(server: servers.Server, plan: Plan) -> list[loadgen.Request]:
    if server.kind == "pymager-tx":
        return [
            pymager_request(server.base_url, *pair, image_id)
            for pair, image_id in zip(plan.memory, plan.memory_ids, strict=True)
        ]
    return [thumbor_request(server.base_url, *pair) for pair in plan.memory]


def run_servers(
    arguments: argparse.Namespace,
    corpus: list[photos.Photo],
    plan: Plan,
    results: Results,
    previous: baseline.Baseline | None,
    installed: baseline.Baseline | None = None,
) -> None:
    """Every phase against every server in turn: this checkout's pymager-tx
    (from installed's venv, if given),
    the baseline's (if any; first with --baseline-first), then thumbor (unless
    --skip-thumbor)."""
    concurrency, corpus_dir = arguments.concurrency, arguments.corpus_dir
    sizes = allowed_sizes(arguments)
    started: list[servers.Server] = []
    with tempfile.TemporaryDirectory(prefix="pymager-compare-") as temporary:
        directory = Path(temporary)

        def start_pymager(name: str, venv: Path | None) -> servers.Server:
            home = directory / name
            home.mkdir()
            server = servers.start_pymager(
                home,
                sizes,
                threads=pymager_threads(arguments),
                workers=arguments.pymager_workers,
                access_log=arguments.pymager_access_log,
                memory_cache_bytes=arguments.pymager_memory_cache_bytes,
                venv=venv,
                name=name,
            )
            started.append(server)
            return server

        try:
            pymager = start_pymager("pymager-tx", None if installed is None else installed.venv)
            pymagers = [pymager]
            if previous is not None:
                pymagers.append(start_pymager(previous.name, previous.venv))
                if arguments.baseline_first:
                    pymagers.reverse()
            everyone = list(pymagers)
            if not arguments.skip_thumbor:
                (directory / "thumbor").mkdir()
                thumbor = servers.start_thumbor(
                    directory / "thumbor",
                    arguments.thumbor_venv,
                    corpus_dir,
                    arguments.thumbor_processes,
                    arguments.thumbor_engine_threads,
                    JPEG_QUALITY,
                )
                started.append(thumbor)
                everyone.append(thumbor)
            results.started_rss_kb = {server.name: server.rss_kb() for server in everyone}
            print(
                "; ".join(
                    f"{server.name} on {server.base_url} ({len(server.pids())} processes)"
                    for server in everyone
                ),
                flush=True,
            )
            for server in pymagers:
                requests = upload_requests(server, plan.uploads, corpus_dir)
                results.add("upload", server.name, counted(server, "upload", requests, concurrency))
            seen = {server.name: derivation_sources(server.log_path) for server in pymagers}

            def sources_of(phase: str, which: list[servers.Server] = pymagers) -> None:
                for server in which:
                    now = derivation_sources(server.log_path)
                    results.sources.setdefault(server.name, {})[phase] = now - seen[server.name]
                    seen[server.name] = now

            for server in everyone:
                requests = [URL_MAKERS[server.kind](server.base_url, *pair) for pair in plan.cold]
                results.add("cold", server.name, counted(server, "cold", requests, concurrency))
            sources_of("cold")
            for server in everyone:
                results.add("warm", server.name, warm(server, plan, arguments))
            sources_of("warm")
            for server in pymagers:
                fresh = upload_requests(server, plan.memory_uploads, corpus_dir)
                uploaded = loadgen.run_counted("memory uploads", fresh, concurrency)
                results.setup_errors += [f"{server.name}: {error}" for error in uploaded.errors]
            for server in everyone:
                memory = counted(
                    server, "memory", memory_requests(server, plan), arguments.memory_concurrency
                )
                results.add("memory", server.name, memory)
            sources_of("memory")
            if not arguments.skip_quality:
                print("  quality ...", flush=True)
                results.quality = quality.run_quality(pymager.base_url, corpus, corpus_dir)
                sources_of("quality", [pymager])
        finally:
            for server in started:
                server.stop()
            OUT.mkdir(exist_ok=True)
            for server in started:
                shutil.copyfile(server.log_path, OUT / f"{server.name}.log")


# Report


def machine(venv: Path, thumbor: bool) -> dict[str, str]:
    cpu_model, memory = "unknown", "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.partition(":")[2].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    wrk = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        if shutil.which("wrk")
        else subprocess.CompletedProcess([], 0, "wrk: not installed", "")
    )
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
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu_model": cpu_model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pillow": version("pillow"),
        "libjpeg_turbo": str(features.version("libjpeg_turbo") or "no"),
        "twisted": version("twisted"),
        "thumbor": servers.venv_package_version(venv, "thumbor") if thumbor else "not run",
        "thumbor_pillow": servers.venv_package_version(venv, "pillow") if thumbor else "-",
        "tornado": servers.venv_package_version(venv, "tornado") if thumbor else "-",
        "wrk": (wrk.stdout + wrk.stderr).split("\n")[0].strip(),
        "commit": commit.stdout.strip() + (" (tracked files modified)" if dirty.stdout.strip() else ""),
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def compute_ratios(results: Results, previous: baseline.Baseline | None) -> dict[str, float]:
    phases = results.phases
    cold, warm, memory = phases["cold"], phases["warm"], phases["memory"]
    floors = [phases["floor"][key] for key in ("before", "after")]
    floor_rate = sum(floor.rate for floor in floors) / len(floors)
    ratios: dict[str, float] = {}
    if previous is not None:
        other = previous.name
        ratios |= {
            f"cold req/s, pymager-tx / {other}": ratio(cold["pymager-tx"].rate, cold[other].rate),
            f"warm req/s, pymager-tx / {other}": ratio(warm["pymager-tx"].rate, warm[other].rate),
        }
    if "thumbor" in cold:
        ratios |= {
            "cold req/s, pymager-tx / thumbor (target >= 2)": ratio(
                cold["pymager-tx"].rate, cold["thumbor"].rate
            ),
            "cold p99, pymager-tx / thumbor (target <= 1)": ratio(
                cold["pymager-tx"].p(99), cold["thumbor"].p(99)
            ),
            "cold p50, pymager-tx / thumbor": ratio(cold["pymager-tx"].p(50), cold["thumbor"].p(50)),
            "warm req/s, pymager-tx / thumbor (target >= 2)": ratio(
                warm["pymager-tx"].rate, warm["thumbor"].rate
            ),
            "warm p99, pymager-tx / thumbor": ratio(warm["pymager-tx"].p(99), warm["thumbor"].p(99)),
        }
    ratios |= {
        f"cold req/s, {server} / Pillow floor img/s": ratio(cold[server].rate, floor_rate) for server in cold
    }
    if "thumbor" in cold:
        ratios |= {
            "cold peak RSS, pymager-tx / thumbor": ratio(
                cold["pymager-tx"].peak_rss_kb, cold["thumbor"].peak_rss_kb
            ),
            "memory-scenario peak RSS, pymager-tx / thumbor": ratio(
                memory["pymager-tx"].peak_rss_kb, memory["thumbor"].peak_rss_kb
            ),
        }
    ratios["floor drift, after / before"] = ratio(floors[1].rate, floors[0].rate)
    return ratios


# Against the baseline: (label, value of a phase, True if higher is better)
BASELINE_MEASURES: tuple[tuple[str, Callable[[loadgen.Phase], float], bool], ...] = (
    ("req/s", lambda phase: phase.rate, True),
    ("p50 ms", lambda phase: phase.p(50), False),
    ("p99 ms", lambda phase: phase.p(99), False),
    ("server CPU ms/req", lambda phase: phase.per_request_ms(phase.server_cpu), False),
    ("peak RSS MB (VmHWM sum)", lambda phase: phase.peak_rss_kb / 1024, False),
)


@dataclass
class Versus:
    """One figure of this checkout's pymager-tx beside the baseline's."""

    phase: str
    measure: str
    current: float
    baseline: float
    higher_is_better: bool
    other_cores: float  # the most other processes used during either phase

    @property
    def ratio(self) -> float:
        return ratio(self.current, self.baseline)

    def verdict(self, tolerance: float) -> str:
        """better, same (within tolerance) or WORSE, for the current one."""
        if math.isnan(self.ratio):
            return "-"
        better = self.ratio if self.higher_is_better else ratio(1.0, self.ratio)
        if better >= 1 + tolerance:
            return "better"
        return "same" if better >= 1 - tolerance else "WORSE"


def versus_baseline(results: Results, previous: baseline.Baseline) -> list[Versus]:
    rows = []
    for phase_name in ("upload", "cold", "warm", "memory"):
        by_server = results.phases.get(phase_name, {})
        if "pymager-tx" not in by_server or previous.name not in by_server:
            continue
        current, other = by_server["pymager-tx"], by_server[previous.name]
        others = max(current.other_cores, other.other_cores)
        for label, value, higher in BASELINE_MEASURES:
            rows.append(Versus(phase_name, label, value(current), value(other), higher, others))
    return rows


def versus_table(rows: list[Versus], previous: baseline.Baseline, tolerance: float) -> list[str]:
    lines = [
        f"| phase | measure | pymager-tx (this checkout) | {previous.name} (baseline) "
        f"| current / baseline | verdict (±{tolerance:.0%}) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        digits = 2 if row.measure in {"p50 ms", "p99 ms", "server CPU ms/req"} and row.baseline < 10 else 1
        cells = [row.phase, row.measure, f"{row.current:.{digits}f}", f"{row.baseline:.{digits}f}"]
        cells += [f"{row.ratio:.2f}", row.verdict(tolerance)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def worse_than_baseline(rows: list[Versus], tolerance: float) -> list[str]:
    """The issue's check: cold and warm figures no worse than before. On a
    shared machine, wall-clock figures move with the neighbours' load; server
    CPU per request much less, so a WORSE line says what it was."""
    cpu = {row.phase: row for row in rows if row.measure == "server CPU ms/req"}
    lines = []
    for row in rows:
        if row.phase not in {"cold", "warm"} or row.verdict(tolerance) != "WORSE":
            continue
        line = (
            f"WORSE: {row.phase} {row.measure} {row.current:.2f} against {row.baseline:.2f} in the "
            f"baseline (current / baseline {row.ratio:.2f}, beyond ±{tolerance:.0%})"
        )
        if row.measure != "server CPU ms/req" and row.phase in cpu:
            line += f"; server CPU ms/req {cpu[row.phase].ratio:.2f} of the baseline's"
        if row.other_cores > NOISY_CORES:
            line += f"; noisy: other processes used up to {row.other_cores:.2f} cores meanwhile"
        lines.append(line)
    return lines


def table(results: Results) -> list[str]:
    lines = [
        "| phase | server | done/planned | wall s | throughput | p50 ms | p99 ms | server CPU ms/req "
        "| client CPU ms/req | peak RSS MB (VmHWM sum) | peak RSS MB (polled) | other load, cores | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase_name, by_server in results.phases.items():
        for server, phase in by_server.items():
            unit = "img/s" if phase_name == "floor" else "req/s"
            who = "Pillow (in the client)" if phase_name == "floor" else server
            label = f"floor ({server})" if phase_name == "floor" else phase_name
            cpu = "-" if math.isnan(phase.server_cpu) else f"{phase.per_request_ms(phase.server_cpu):.1f}"
            rss = f"{phase.peak_rss_kb / 1024:.0f}" if phase.peak_rss_kb else "-"
            polled = f"{phase.sampled_rss_kb / 1024:.0f}" if phase.sampled_rss_kb else "-"
            client = f"{phase.per_request_ms(phase.client_cpu):.2f}"
            cells = [
                label,
                who,
                f"{phase.done}/{phase.planned}",
                f"{phase.wall:.2f}",
                f"{phase.rate:.1f} {unit}",
            ]
            cells += [f"{phase.p(50):.0f}", f"{phase.p(99):.0f}", cpu, client, rss, polled]
            cells += [f"{phase.other_cores:.2f}", str(len(phase.errors))]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def memory_cache_text(arguments: argparse.Namespace) -> str:
    cache = arguments.pymager_memory_cache_bytes
    if cache is None:
        return "memory cache at its default (64 MiB a process)"
    if cache == 0:
        return "memory cache off (max_bytes = 0: warm requests read the stored file)"
    return f"memory cache {cache} bytes a process"


def report(
    arguments: argparse.Namespace,
    corpus: list[photos.Photo],
    plan: Plan,
    results: Results,
    info: dict[str, str],
    ratios: dict[str, float],
    seconds: float,
    previous: baseline.Baseline | None,
) -> list[str]:
    cold_photos = sorted({photo.name for photo, _ in plan.cold})
    memory_photos = sorted({photo.name for photo, _ in plan.memory})
    started = ", ".join(f"{name} {kb / 1024:.0f} MB" for name, kb in results.started_rss_kb.items())
    scales = working_scales(arguments, corpus)
    thumbor = not arguments.skip_thumbor
    software = (
        f"Software: Python {info['python']}, Pillow {info['pillow']} "
        f"(libjpeg-turbo {info['libjpeg_turbo']}), Twisted {info['twisted']}; "
    )
    if thumbor:
        software += (
            f"thumbor {info['thumbor']} with Pillow {info['thumbor_pillow']}, tornado {info['tornado']}; "
        )
    software += f"{info['wrk']}."
    code = f"Code: commit {info['commit']}"
    if previous is not None:
        code += (
            f"; baseline {previous.name}: {previous.revision} = {previous.commit[:12]} "
            f'"{previous.subject}", installed in {previous.venv}'
        )
        different = baseline.differences(previous.venv)
        code += (
            f" (its {', '.join(baseline.DEPENDENCIES)}: "
            + ("DIFFERENT: " + "; ".join(different) if different else "the same versions as this venv's")
            + ")"
        )
    servers_text = f"pymager-tx and {previous.name}, each" if previous else "pymager-tx"
    settings = (
        f"{servers_text}: --workers {arguments.pymager_workers}, [images] threads = "
        f"{pymager_threads(arguments)} a process, access log "
        f"{'on' if arguments.pymager_access_log else 'off (as thumbor at --log-level warning)'}, "
        f"{memory_cache_text(arguments)}."
    )
    if thumbor:
        settings += (
            f" thumbor: --processes {arguments.thumbor_processes}, ENGINE_THREADPOOL_SIZE = "
            f"{arguments.thumbor_engine_threads}, PIL engine, file loader, no original storage, "
            "file result storage (unsafe URLs stored), QUALITY = 85."
        )
    else:
        settings += " thumbor: not run (--skip-thumbor)."
    order = ", then ".join(results.started_rss_kb)
    lines = [
        f"Machine: nproc {info['nproc']}, {info['cpu_model']}, {info['memory']}, Linux {info['kernel']}.",
        software,
        f"{code}. Corpus digest {photos.digest(arguments.corpus_dir)}: "
        f"{len(corpus)} files, {sum(photo.bytes for photo in corpus) / 1e6:.0f} MB.",
        f"Command: `{' '.join(shlex.quote(part) for part in sys.argv)}` ({seconds:.0f} s).",
        f"Servers, measured in this order in every phase: {order}.",
        f"Cold: {len(plan.cold)} URLs per server ({len(cold_photos)} JPEGs of 8-20 MP "
        f"x {len(arguments.sizes)} sizes, crop), concurrency {arguments.concurrency}. Warm: "
        + (
            f"wrk -t1 -c{arguments.concurrency} for {arguments.warm_seconds:.0f} s over the same URLs."
            if arguments.warm_client == "wrk"
            else f"{arguments.warm_rounds} rounds over the same URLs."
        )
        + f" Memory: {len(plan.memory)} cold derivations of {', '.join(memory_photos)} at concurrency "
        f"{arguments.memory_concurrency} (pymager-tx: on {len(plan.memory_uploads)} fresh uploads of them, "
        "so the first wave decodes that many originals in full at once).",
        f"pymager-tx allowed_sizes: {len(allowed_sizes(arguments))} sizes (the run's only), so its "
        f"working-copy scale is {min(scales.values()):.2f}-{max(scales.values()):.2f} across the corpus "
        "(a copy is made at <= 0.50).",
        settings,
        f"RSS at start: {started}.",
        "",
        *table(results),
        "",
    ]
    if previous is not None:
        rows = versus_baseline(results, previous)
        lines += [
            f"Against the baseline {previous.name} ({previous.revision}), in the same run:",
            "",
            *versus_table(rows, previous, arguments.tolerance),
            "",
        ]
    lines += [
        "| ratio | value |",
        "|---|---|",
        *[f"| {name} | {value:.2f} |" for name, value in ratios.items()],
        "",
    ]
    memory = results.phases["memory"]
    lines.append(
        "Memory scenario (target < 1 GiB): "
        + "; ".join(
            f"{name} peak {phase.peak_rss_kb / 1024:.0f} MB (polled {phase.sampled_rss_kb / 1024:.0f} MB)"
            for name, phase in memory.items()
        )
        + "."
    )
    if results.quality is not None:
        lines += results.quality.lines()
    for server, by_phase in results.sources.items():
        lines.append(
            f"{server} derivations by source (server log): "
            + "; ".join(
                f"{phase}: {counts['working copy']} from the working copy, {counts['original']} from the "
                f"original, {counts['working copies made']} working copies made"
                for phase, counts in by_phase.items()
            )
            + "."
        )
    return lines


def noise(results: Results) -> list[str]:
    """Phases during which other processes kept more than NOISY_CORES busy."""
    return [
        f"NOISE: other processes used {phase.other_cores:.2f} cores during {name} ({server}); "
        "its numbers are not trustworthy"
        for name, by_server in results.phases.items()
        for server, phase in by_server.items()
        if phase.other_cores > NOISY_CORES
    ]


def problems(results: Results) -> list[str]:
    found = []
    for phase_name, by_server in results.phases.items():
        for server, phase in by_server.items():
            if phase.errors:
                found.append(f"{phase_name} {server}: {len(phase.errors)} errors, first: {phase.errors[0]}")
            if phase.done < phase.planned:
                found.append(f"{phase_name} {server}: {phase.done} of {phase.planned} done")
    if results.quality is not None and not results.quality.passed:
        found.append("quality: below target")
    found += [f"memory uploads: {error}" for error in results.setup_errors[:5]]
    for server, by_phase in results.sources.items():
        warm_derived = by_phase.get("warm", Counter())
        if warm_derived["working copy"] + warm_derived["original"]:
            found.append(f"warm: {server} derived during the warm phase: {dict(warm_derived)}")
    return found


def memory_cache(text: str) -> int | None:
    """--memory-cache: default (None), off (0) or a number of bytes."""
    if text == "default":
        return None
    if text == "off":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not default, off or a number of bytes: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a number of bytes must be >= 0")
    return value


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus-dir", type=Path, default=photos.DEFAULT_DIRECTORY)
    parser.add_argument(
        "--out", type=Path, default=OUT / "compare.md", help="the Markdown fragment for RESULTS.md"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run (about 1.5 minutes with a baseline and no thumbor): sizes "
        f"{' '.join(QUICK_SIZES)}, --copies {QUICK['copies']}, --warm-seconds "
        f"{QUICK['warm_seconds']:.0f}, --skip-quality; options given still win",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the pymager-tx of this git revision (0a96ae2, HEAD~1, main ...) with the same "
        "settings, in every phase, and report current / baseline",
    )
    parser.add_argument(
        "--baseline-cache",
        type=Path,
        default=baseline.DEFAULT_CACHE,
        help="where the baseline venvs are kept, one per commit (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline-first",
        action="store_true",
        help="measure the baseline before this checkout in each phase (to see order effects)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        help="current / baseline within 1 ± this is 'same', beyond it 'better' or 'WORSE' (default 0.10)",
    )
    parser.add_argument("--skip-thumbor", action="store_true", help="run no thumbor (nor need it installed)")
    parser.add_argument(
        "--installed",
        action="store_true",
        help="run this checkout's HEAD from a clean venv of its own, as a baseline runs",
    )
    parser.add_argument("--thumbor-venv", type=Path, default=Path("/tmp/venv-thumbor"))
    parser.add_argument("--thumbor-processes", type=int, default=2)
    parser.add_argument(
        "--pymager-workers", type=int, default=2, help="pymager-tx processes (as thumbor's --processes)"
    )
    parser.add_argument(
        "--pymager-access-log",
        action="store_true",
        help="log every request (thumbor, at --log-level warning, logs none)",
    )
    parser.add_argument(
        "--memory-cache",
        dest="pymager_memory_cache_bytes",
        type=memory_cache,
        default=None,
        metavar="{default,off,BYTES}",
        help="[memory_cache] max_bytes of each pymager-tx process: default (the service's, 64 MiB), "
        "off (0: every warm request reads storage, as thumbor's result storage does) or bytes",
    )
    parser.add_argument(
        "--pymager-memory-cache-bytes",
        dest="pymager_memory_cache_bytes",
        type=int,
        default=None,
        help="the same as --memory-cache BYTES",
    )
    parser.add_argument(
        "--thumbor-engine-threads", type=int, default=0, help="thumbor's ENGINE_THREADPOOL_SIZE"
    )
    parser.add_argument(
        "--install", action="store_true", help="create the thumbor venv and apt-get install wrk"
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sizes", nargs="+", default=list(COLD_SIZES))
    parser.add_argument("--copies", type=int, default=3, help="uploads of each corpus file")
    parser.add_argument("--warm-client", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--warm-seconds", type=float, default=10.0)
    parser.add_argument("--warm-rounds", type=int, default=5, help="with --warm-client python")
    parser.add_argument("--memory-concurrency", type=int, default=8)
    parser.add_argument("--floor-threads", type=int, default=2)
    parser.add_argument("--skip-quality", action="store_true")
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    started = time.perf_counter()
    check_tools(
        arguments.thumbor_venv,
        arguments.install,
        need_thumbor=not arguments.skip_thumbor,
        need_wrk=arguments.warm_client == "wrk",
    )
    previous = installed = None
    if arguments.baseline:
        previous = baseline.prepare(arguments.baseline, arguments.baseline_cache)
    if arguments.installed:
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=baseline.REPOSITORY,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if changed:
            sys.exit("--installed runs HEAD as committed: commit or stash the changes first")
        installed = baseline.prepare("HEAD", arguments.baseline_cache)
    corpus = photos.ensure(arguments.corpus_dir)
    plan = make_plan(corpus, arguments.sizes, arguments.copies)
    results = Results()
    pairs = [((arguments.corpus_dir / photo.name).read_bytes(), size_of(size)) for photo, size in plan.cold]
    results.add("floor", "before", run_floor("floor", pairs, arguments.floor_threads))
    run_servers(arguments, corpus, plan, results, previous, installed)
    results.add("floor", "after", run_floor("floor", pairs, arguments.floor_threads))
    seconds = time.perf_counter() - started
    info = machine(arguments.thumbor_venv, thumbor=not arguments.skip_thumbor)
    ratios = compute_ratios(results, previous)
    lines = report(arguments, corpus, plan, results, info, ratios, seconds, previous)
    lines += noise(results)
    versus = versus_baseline(results, previous) if previous is not None else []
    lines += worse_than_baseline(versus, arguments.tolerance)
    found = problems(results)
    if found:
        lines += ["", "PROBLEMS:", *[f"- {problem}" for problem in found]]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text, encoding="utf-8")
    summary = {
        "machine": info,
        "baseline": None
        if previous is None
        else {
            "revision": previous.revision,
            "commit": previous.commit,
            "subject": previous.subject,
            "name": previous.name,
            "venv": str(previous.venv),
            "install_seconds": round(previous.install_seconds, 1),
        },
        "versus_baseline": [
            {
                "phase": row.phase,
                "measure": row.measure,
                "current": row.current,
                "baseline": row.baseline,
                "ratio": row.ratio,
                "verdict": row.verdict(arguments.tolerance),
            }
            for row in versus
        ],
        "ratios": ratios,
        "phases": {
            name: {server: phase.summary() for server, phase in by.items()}
            for name, by in results.phases.items()
        },
        "quality": None
        if results.quality is None
        else {
            "median_db": results.quality.median,
            "min": results.quality.minimum,
            "straight_rgba_scores": results.quality.straight,
            "scores": results.quality.scores,
            "errors": results.quality.errors,
        },
        "derivation_sources": {
            server: {phase: dict(counts) for phase, counts in by_phase.items()}
            for server, by_phase in results.sources.items()
        },
        "problems": found,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "compare.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
