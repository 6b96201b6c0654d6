"""
pymager-tx from another git commit, installed in a venv of its own, so that
bench/compare.py can run it beside this checkout's (--baseline REV).

    python bench/baseline.py HEAD~1     # prepare (or find) the venv and print its path

The commit's tree is exported with `git archive` into a temporary directory
and installed from there with pip (not editable: the venv then needs nothing
of the export, which is deleted). The venv is kept, keyed by the full commit
hash and the Python version, under --cache (default /tmp/pymager-baseline),
and is reused by every later run against the same commit. A venv that has no
INSTALLED marker (an install that failed or was cut short) is made again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path("/tmp/pymager-baseline")
INSTALLED = "INSTALLED"  # written last: the venv is complete
# The dependencies whose versions weigh on the figures: the report shows
# those of the baseline's venv that differ from the running venv's.
DEPENDENCIES = ("pillow", "twisted", "klein", "sqlalchemy", "werkzeug", "pydantic")


@dataclass(frozen=True)
class Baseline:
    revision: str  # as given, e.g. HEAD~1
    commit: str  # full hash
    subject: str  # the commit message's first line
    venv: Path
    install_seconds: float  # 0 when the cached venv was reused

    @property
    def short(self) -> str:
        return self.commit[:7]

    @property
    def name(self) -> str:
        """The server's name in the report, beside this checkout's "pymager-tx"."""
        return f"pymager-tx@{self.short}"


def _git(*arguments: str) -> str:
    result = subprocess.run(["git", *arguments], cwd=REPOSITORY, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"`git {' '.join(arguments)}` failed: {result.stderr.strip()}")
    return result.stdout.strip()


def resolve(revision: str) -> tuple[str, str]:
    """The full hash of revision's commit, and its subject."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    return commit, _git("log", "-1", "--format=%s", commit)


def _say(command: list[str]) -> list[str]:
    print("$ " + " ".join(command), flush=True)
    return command


def prepare(revision: str, cache: Path = DEFAULT_CACHE) -> Baseline:
    """The venv of revision's pymager-tx, installed now unless cached."""
    commit, subject = resolve(revision)
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    venv = cache / f"{commit}-{python}" / "venv"
    if (venv / INSTALLED).exists():
        print(f"Baseline {commit[:7]} ({revision}): reusing {venv}", flush=True)
        return Baseline(revision, commit, subject, venv, 0.0)
    print(f"Baseline {commit[:7]} ({revision}): installing into {venv} ...", flush=True)
    started = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"pymager-{commit[:7]}-") as temporary:
        tree = Path(temporary) / "tree"
        tree.mkdir()
        archive = subprocess.run(
            _say(["git", "archive", "--format=tar", commit]), cwd=REPOSITORY, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        # This interpreter's version, from its base installation (not this venv).
        subprocess.run(_say([sys.executable, "-m", "venv", str(venv)]), check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(_say([*pip, str(tree)]), check=True)
    if not (venv / "bin" / "twistd").exists():
        sys.exit(f"{venv}: no twistd after installing {commit[:7]}")
    (venv / INSTALLED).write_text(f"{commit}\n{subject}\n", encoding="utf-8")
    seconds = time.perf_counter() - started
    print(f"Baseline {commit[:7]} installed in {seconds:.0f} s", flush=True)
    return Baseline(revision, commit, subject, venv, seconds)


def versions(venv: Path) -> dict[str, str]:
    """DEPENDENCIES' versions in venv ("-": not installed)."""
    code = (
        "import importlib.metadata as m, json\n"
        "def v(name):\n"
        "    try:\n"
        "        return m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        return '-'\n"
        f"print(json.dumps({{name: v(name) for name in {list(DEPENDENCIES)!r}}}))"
    )
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def differences(venv: Path) -> list[str]:
    """The DEPENDENCIES whose version in venv is not the running Python's."""
    theirs, found = versions(venv), []
    for name in DEPENDENCIES:
        try:
            ours = metadata.version(name)
        except metadata.PackageNotFoundError:
            ours = "-"
        if theirs.get(name, "?") != ours:
            found.append(f"{name} {theirs.get(name, '?')} (this venv: {ours})")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("revision", help="a git revision: 0a96ae2, HEAD~3, main ...")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    arguments = parser.parse_args()
    baseline = prepare(arguments.revision, arguments.cache)
    print(f"{baseline.commit} {baseline.subject}\n{baseline.venv}")
    for difference in differences(baseline.venv) or ["dependencies: the same versions as this venv"]:
        print(difference)


if __name__ == "__main__":
    main()
