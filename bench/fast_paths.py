"""
Issue 13's three comparisons, side by side, in one run:

  1. warm from storage: bench/compare.py --quick --memory-cache off
     (pymager-tx reading its stored files against thumbor's result storage,
     and the cold phase beside it, to show it got no slower);
  2. small derivations: bench/small_derivations.py (one request at a time,
     pymager-tx's first and later sizes against thumbor's, 2-48 MP sources);
  3. behind nginx: bench/behind_nginx.py (nginx's cache as etc/nginx.conf
     sets it, X-Accel-Redirect and pymager-tx alone, against nginx serving
     the same files statically).

    PYTHONPATH=. .venv/bin/python bench/fast_paths.py [--out bench/out/fast-paths.md]

Each runs as its own process, one after the other (about 6 minutes in all
on two cores); the report gives the ratios against the issue's targets,
then each comparison's own table.  Needs thumbor (bench/compare.py
--install), wrk and nginx.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def run(title: str, command: list[str]) -> float:
    print(f"== {title}: {' '.join(command)}", flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=HERE.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=OUT / "fast-paths.md")
    parser.add_argument("--repetitions", type=int, default=6, help="small_derivations.py --repetitions")
    parser.add_argument("--thumbor-venv", type=Path, default=Path("/tmp/venv-thumbor"))
    arguments = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    python = sys.executable
    parts = {
        "warm": OUT / "fast-paths-warm.md",
        "small": OUT / "fast-paths-small.md",
        "nginx": OUT / "fast-paths-nginx.md",
    }
    seconds = {
        "warm": run(
            "warm from storage",
            [
                python,
                "bench/compare.py",
                "--quick",
                "--memory-cache",
                "off",
                "--thumbor-venv",
                str(arguments.thumbor_venv),
                "--out",
                str(parts["warm"]),
            ],
        ),
        "small": run(
            "small derivations",
            [
                python,
                "bench/small_derivations.py",
                "--repetitions",
                str(arguments.repetitions),
                "--thumbor-venv",
                str(arguments.thumbor_venv),
                "--out",
                str(parts["small"]),
            ],
        ),
        "nginx": run(
            "behind nginx",
            [
                python,
                "bench/behind_nginx.py",
                "--seconds",
                "3",
                "--rounds",
                "3",
                "--out",
                str(parts["nginx"]),
            ],
        ),
    }
    compared = json.loads((OUT / "compare.json").read_text())["ratios"]
    nginx = json.loads(parts["nginx"].with_suffix(".json").read_text())["versus_static"]
    warm = compared["warm req/s, pymager-tx / thumbor (target >= 2)"]
    cold = compared["cold req/s, pymager-tx / thumbor (target >= 2)"]
    cached = nginx["nginx + cache"]
    lines = [
        "# Fast on every path (issue 13), one run",
        "",
        f"`PYTHONPATH=. .venv/bin/python bench/fast_paths.py`; machine {platform.node()}, "
        f"{platform.machine()}, nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{seconds['warm']:.0f} + {seconds['small']:.0f} + {seconds['nginx']:.0f} s; "
        f"load average at the end {' '.join(f'{value:.1f}' for value in os.getloadavg())}.",
        "",
        "| comparison | ratio | target | met |",
        "|---|---|---|---|",
        f"| warm from storage, req/s pymager-tx / thumbor (memory cache off) | {warm:.2f} | >= 2 | "
        f"{'yes' if warm >= 2 else 'no'} |",
        f"| warm through nginx's cache, req/s / nginx static | {cached:.2f} | >= 0.8 | "
        f"{'yes' if cached >= 0.8 else 'no'} |",
        "| small derivations: see the table below (first size of a 2 MP JPEG <= thumbor's; "
        "later sizes < 15 ms) | | | |",
        f"| cold req/s pymager-tx / thumbor (no worse than before) | {cold:.2f} | | |",
        "",
        "## Warm from storage (bench/compare.py --quick --memory-cache off)",
        "",
        parts["warm"].read_text(),
        "## Small derivations (bench/small_derivations.py)",
        "",
        parts["small"].read_text(),
        "## Behind nginx (bench/behind_nginx.py)",
        "",
        parts["nginx"].read_text(),
    ]
    text = "\n".join(lines)
    arguments.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
