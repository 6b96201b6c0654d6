"""
The cost of one small derivation, one request at a time (issue 13).

    .venv/bin/python bench/small_derivations.py [--baseline REV] [--repetitions 8]

JPEG sources of 2, 8, 20 and 48 MP, each resized (LANCZOS, quality 90) from
the one 20 MP photograph kleiber.jpg of the photo corpus (bench/photos.py),
fitted into boxes of 200-420 px.  Side by side in one run, each server idle
while another is measured:

- pymager-tx with its defaults (one process, one image thread per core, the
  memory cache on), allowed_sizes = the boxes: a fresh upload per source and
  repetition, so its first size is a cold first derivation (from the
  original, making the working copy where one is worth it) and its later
  sizes come from the working copy (or the original where none is made);
- thumbor 7, one process, no result storage: every request decodes the
  source, as a first derivation does;
- with --baseline REV, also the pymager-tx of another commit (installed by
  bench/baseline.py), with the same settings and uploads of its own.

Every request goes to each server in turn (A, B, A, B; the order rotates
each request, and each repetition for uploads), one at a time over a
kept-alive connection; each answer is checked to be a JPEG within its box
with one side touching it.  Reported:
median wall ms of pymager-tx's first size, its later sizes and thumbor's
sizes, per source, with ratios, and server CPU ms per request (from
/proc, coarser but less moved by other load); and each pymager-tx's
uploads, whose check keeps a small photo's decode for its first size.
Medians of many repetitions:
the machine is shared.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageChops, ImageStat

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baseline
import compare
import photos
import servers

SOURCE_PHOTO = "kleiber.jpg"
MEGAPIXELS = (2, 8, 20, 48)
BOXES = ("200x200", "240x180", "260x260", "300x225", "320x320", "360x270", "400x300", "420x420")
THUMBOR_QUALITY = 85  # pymager-tx's default jpeg_quality
# Answers of the first repetition held for the quality check, in these boxes.
QUALITY_BOXES = ("200x200", "300x225", "360x270", "420x420")


@dataclass
class Samples:
    wall_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0

    def add(self, wall: float, cpu: float) -> None:
        self.wall_ms.append(wall * 1000)
        self.cpu_seconds += cpu

    @property
    def median(self) -> float:
        return statistics.median(self.wall_ms) if self.wall_ms else math.nan

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / len(self.wall_ms) if self.wall_ms else math.nan


def make_sources(directory: Path) -> dict[int, Path]:
    """kleiber.jpg resized to each size in MEGAPIXELS, once per run (a few seconds)."""
    corpus = photos.ensure()
    source = next(photo for photo in corpus if photo.name == SOURCE_PHOTO)
    with Image.open(photos.DEFAULT_DIRECTORY / source.name) as image:
        image.load()
        made = {}
        for megapixels in MEGAPIXELS:
            scale = math.sqrt(megapixels * 1e6 / (image.width * image.height))
            size = (round(image.width * scale), round(image.height * scale))
            path = directory / f"kleiber_{megapixels}mp.jpg"
            image.resize(size, Image.Resampling.LANCZOS).save(path, quality=90)
            made[megapixels] = path
    return made


class Client:
    """One kept-alive connection to one server, timed per request."""

    def __init__(self, server: servers.Server) -> None:
        self.server = server
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, float, float]:
        cpu = self.server.cpu_seconds()
        started = time.perf_counter()
        self.connection.request(method, path, body=body)
        response = self.connection.getresponse()
        data = response.read()
        wall = time.perf_counter() - started
        return response.status, data, wall, self.server.cpu_seconds() - cpu


def check_fits(data: bytes, box: str, what: str, problems: list[str]) -> None:
    width, height = compare.size_of(box)
    try:
        with Image.open(BytesIO(data)) as image:
            size, kind = image.size, image.format
    except Exception as error:
        problems.append(f"{what}: not an image ({error})")
        return
    fits = size[0] <= width and size[1] <= height and (width - size[0] <= 1 or height - size[1] <= 1)
    if kind != "JPEG" or not fits:
        problems.append(f"{what}: {kind} {size[0]}x{size[1]} does not fit {box}")


def run(arguments: argparse.Namespace, work: Path) -> dict[str, object]:
    sources = make_sources(work)
    previous = baseline.prepare(arguments.baseline) if arguments.baseline else None
    started: list[servers.Server] = []
    problems: list[str] = []
    try:
        (work / "now").mkdir()
        started.append(servers.start_pymager(work / "now", list(BOXES), threads=0, name="pymager-tx"))
        if previous is not None:
            (work / "base").mkdir()
            name = f"pymager-tx@{previous.commit[:7]}"
            started.append(
                servers.start_pymager(work / "base", list(BOXES), threads=0, venv=previous.venv, name=name)
            )
        (work / "thumbor").mkdir()
        started.append(
            servers.start_thumbor(
                work / "thumbor",
                arguments.thumbor_venv,
                work,
                processes=1,
                engine_threads=0,
                quality=THUMBOR_QUALITY,
                result_storage=False,
            )
        )
        clients = [Client(server) for server in started]
        samples: dict[tuple[str, int, str], Samples] = {}
        answers: dict[tuple[str, int, str], bytes] = {}
        turn = 0
        for repetition in range(arguments.repetitions):
            for megapixels, path in sources.items():
                data = path.read_bytes()
                image_id = f"k{megapixels}r{repetition}"
                # Uploads rotate too: the side that uploads first was seen
                # 0.7 ms slower in its uploads and first sizes, against itself.
                shift = repetition % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    if client.server.kind == "pymager-tx":
                        status, _, wall, cpu = client.request("PUT", f"/original/{image_id}", data)
                        if status != 201:
                            problems.append(f"{client.server.name}: PUT {image_id} answered {status}")
                        uploads = samples.setdefault((client.server.name, megapixels, "upload"), Samples())
                        uploads.add(wall, cpu)
                # Each repetition starts from another box, so "first" is not always one size.
                order = BOXES[repetition % len(BOXES) :] + BOXES[: repetition % len(BOXES)]
                for index, box in enumerate(order):
                    turn += 1
                    shift = turn % len(clients)
                    for client in clients[shift:] + clients[:shift]:
                        server = client.server
                        if server.kind == "pymager-tx":
                            url = f"/derived/{image_id}-{box}-fit.jpg"
                            which = "first" if index == 0 else "later"
                        else:
                            url = f"/unsafe/fit-in/{box}/{path.name}"
                            which = "each"
                        status, body, wall, cpu = client.request("GET", url)
                        if status != 200:
                            problems.append(f"{server.name}: GET {url} answered {status}")
                            continue
                        check_fits(body, box, f"{server.name} {url}", problems)
                        samples.setdefault((server.name, megapixels, which), Samples()).add(wall, cpu)
                        if repetition == 0 and box in QUALITY_BOXES:
                            answers[(server.name, megapixels, box)] = body
            print(f"  repetition {repetition + 1}/{arguments.repetitions} done", flush=True)
        sources_seen = {
            server.name: dict(compare.derivation_sources(server.log_path))
            for server in started
            if server.kind == "pymager-tx"
        }
        for server in started:
            server.stop()
        return {
            "servers": [server.name for server in started],
            "quality": fidelity(sources, answers),
            "samples": samples,
            "sources": sources_seen,
            "problems": problems,
            "baseline": None if previous is None else f"{previous.commit[:7]} {previous.subject}",
        }
    finally:
        for server in started:
            server.stop()


def psnr(first: Image.Image, second: Image.Image) -> float:
    difference = ImageStat.Stat(ImageChops.difference(first.convert("RGB"), second.convert("RGB")))
    mean_square = sum(difference.sum2) / (first.width * first.height * 3)
    return math.inf if mean_square == 0 else 10 * math.log10(255 * 255 / mean_square)


def fidelity(
    sources: dict[int, Path], answers: dict[tuple[str, int, str], bytes]
) -> dict[str, dict[int, float]]:
    """Each server's median PSNR (dB) per source against the ideal: the
    source decoded at full size and resized once with LANCZOS (no draft, no
    reduce()) to the answer's own size."""
    scores: dict[str, dict[int, list[float]]] = {}
    for megapixels, path in sources.items():
        with Image.open(path) as source:
            source.load()
            for (name, answered_megapixels, _box), body in answers.items():
                if answered_megapixels != megapixels:
                    continue
                with Image.open(BytesIO(body)) as answer:
                    answer.load()
                    ideal = source.resize(answer.size, Image.Resampling.LANCZOS)
                    scores.setdefault(name, {}).setdefault(megapixels, []).append(psnr(ideal, answer))
    return {
        name: {megapixels: statistics.median(values) for megapixels, values in by_source.items()}
        for name, by_source in scores.items()
    }


def table(result: dict[str, object]) -> list[str]:
    samples: dict[tuple[str, int, str], Samples] = result["samples"]  # type: ignore[assignment]
    names: list[str] = result["servers"]  # type: ignore[assignment]
    pymagers = [name for name in names if name != "thumbor"]
    header = ["source"]
    for name in pymagers:
        header += [f"{name}: first size", "later sizes"]
    header += ["thumbor: each size"]
    header += [f"{name} first / thumbor, later / thumbor" for name in pymagers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for megapixels in MEGAPIXELS:
        row = [f"{megapixels} MP"]
        thumbor = samples.get(("thumbor", megapixels, "each"), Samples())
        for name in pymagers:
            first = samples.get((name, megapixels, "first"), Samples())
            later = samples.get((name, megapixels, "later"), Samples())
            row += [_cell(first), _cell(later)]
        row.append(_cell(thumbor))
        for name in pymagers:
            first = samples.get((name, megapixels, "first"), Samples())
            later = samples.get((name, megapixels, "later"), Samples())
            row.append(f"{first.median / thumbor.median:.2f}, {later.median / thumbor.median:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    # An upload's check may decode more than it used to, for the first
    # size's sake: its cost belongs beside the first size's.
    lines.append("")
    lines.append("Uploads (PUT, the same sources), wall ms:")
    lines.append("")
    lines.append("| server | " + " | ".join(f"{megapixels} MP" for megapixels in MEGAPIXELS) + " |")
    lines.append("|" + "---|" * (len(MEGAPIXELS) + 1))
    for name in pymagers:
        cells = [_cell(samples.get((name, megapixels, "upload"), Samples())) for megapixels in MEGAPIXELS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    quality: dict[str, dict[int, float]] = result["quality"]  # type: ignore[assignment]
    lines.append("")
    lines.append(
        "Quality: median PSNR (dB) against the ideal (full decode, one LANCZOS resize), boxes "
        + ", ".join(QUALITY_BOXES)
        + ":"
    )
    lines.append("")
    lines.append("| server | " + " | ".join(f"{megapixels} MP" for megapixels in MEGAPIXELS) + " |")
    lines.append("|" + "---|" * (len(MEGAPIXELS) + 1))
    for name in names:
        scores = quality.get(name, {})
        lines.append(f"| {name} | " + " | ".join(f"{scores.get(m, math.nan):.2f}" for m in MEGAPIXELS) + " |")
    lines.append("")
    lines.append(
        "Wall ms: median (n requests); CPU: the server's CPU ms per request, from /proc (10 ms ticks, "
        "so only the mean over many requests means anything)."
    )
    return lines


def _cell(samples: Samples) -> str:
    return f"{samples.median:.1f} ms (n {len(samples.wall_ms)}; CPU {samples.cpu_ms:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=8, help="fresh uploads of each source (default 8)")
    parser.add_argument("--baseline", help="also run the pymager-tx of this git revision (bench/baseline.py)")
    parser.add_argument("--thumbor-venv", type=Path, default=Path("/tmp/venv-thumbor"))
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    arguments = parser.parse_args()
    if not (arguments.thumbor_venv / "bin" / "thumbor").exists():
        sys.exit(
            f"thumbor is not installed in {arguments.thumbor_venv}: python3 -m venv {arguments.thumbor_venv} "
            f"&& {arguments.thumbor_venv}/bin/pip install '{compare.THUMBOR_REQUIREMENT}'"
        )
    with tempfile.TemporaryDirectory(prefix="pymager-small-") as directory:
        result = run(arguments, Path(directory))
        out = Path(__file__).parent / "out"
        out.mkdir(exist_ok=True)
        for name in result["servers"]:  # type: ignore[attr-defined]
            log = Path(directory) / {"pymager-tx": "now", "thumbor": "thumbor"}.get(name, "base")
            for found in log.glob("*.log"):
                (out / f"small-{name}.log").write_bytes(found.read_bytes())
    machine = compare.machine(arguments.thumbor_venv, thumbor=True)
    lines = [
        f"Machine: {machine['nproc']} cores, {machine['cpu_model']}, {machine['memory']}; "
        f"Python {machine['python']}, Pillow {machine['pillow']} (thumbor's {machine['thumbor_pillow']}), "
        f"thumbor {machine['thumbor']}; commit {machine['commit']}"
        + (f"; baseline {result['baseline']}" if result["baseline"] else ""),
        f"Load average at the end: {' '.join(f'{value:.1f}' for value in os.getloadavg())}",
        "",
        *table(result),
        "",
        f"pymager-tx derivations by source (server logs): {json.dumps(result['sources'])}",
    ]
    problems: list[str] = result["problems"]  # type: ignore[assignment]
    text = "\n".join(lines)
    print("\n" + text)
    if arguments.out:
        arguments.out.write_text(text + "\n", encoding="utf-8")
    if problems:
        counts = Counter(problem.split(":")[0] for problem in problems)
        print(f"PROBLEMS: {len(problems)} ({dict(counts)}); first: {problems[:5]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
