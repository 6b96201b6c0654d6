"""
The soak, as a command: nothing acknowledged is ever lost.

    python bench/soak.py --database sqlite --uploads 10000 --clients 6
    python bench/soak.py --database postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Several `twistd pymager` processes on one store take uploads, deletes,
re-uploads and derived requests from several client threads while extra
processes start (start-up recovery) and stop, one is killed with SIGKILL
and restarted, and `pymager-admin check --repair` runs beside them; then
every acknowledged upload is read back.  The engine is tests/soak.py (the
integration test runs it too); this file only parses options and prints.
Exit status 1 if anything acknowledged was lost or wrong, or if the final
`pymager-admin check` is not consistent.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.soak import SoakError, SoakOptions, fresh_postgres_database, run_soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database",
        default="sqlite",
        help="'sqlite' (a file in the data directory) or a PostgreSQL URL naming a server: the soak "
        "creates a database of its own there and drops it after (default: sqlite)",
    )
    parser.add_argument("--uploads", type=int, default=10_000, help="upload requests in all (default 10000)")
    parser.add_argument("--clients", type=int, default=6, help="client threads (default 6)")
    parser.add_argument("--processes", type=int, default=2, help="long-lived processes (default 2)")
    parser.add_argument(
        "--seconds-limit", type=float, default=900.0, help="no upload starts after this (default 900)"
    )
    parser.add_argument("--seed", type=int, default=None, help="for the clients' and chaos' choices")
    parser.add_argument(
        "--chaos-every", type=int, default=120, help="uploads between two chaos actions (default 120)"
    )
    parser.add_argument("--chaos-threads", type=int, default=1, help="chaos loops at once (default 1)")
    parser.add_argument("--max-extras", type=int, default=2, help="extra processes up at once (default 2)")
    parser.add_argument(
        "--repairs-at-once", type=int, default=1, help="concurrent `check --repair` runs (default 1)"
    )
    parser.add_argument(
        "--weights",
        default="start=4,stop=2,kill=1,repair=3",
        help="relative weights of the chaos actions (default start=4,stop=2,kill=1,repair=3)",
    )
    parser.add_argument("--delete-fraction", type=float, default=0.08)
    parser.add_argument("--derive-fraction", type=float, default=0.12)
    parser.add_argument(
        "--directory", type=Path, help="where data and logs go (default: a new temporary one)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the directory and database after a clean run too"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print chaos events as they happen")
    arguments = parser.parse_args()

    weights = {}
    for item in arguments.weights.split(","):
        name, _, value = item.partition("=")
        if name not in ("start", "stop", "kill", "repair"):
            parser.error(f"unknown chaos action {name!r}")
        weights[name] = int(value)
    directory = arguments.directory or Path(tempfile.mkdtemp(prefix="pymager-soak-"))
    failed = True
    with ExitStack() as stack:
        database_url = None
        if arguments.database != "sqlite":
            # Kept after a failed run, beside the logs, for a look at the rows.
            database_url = stack.enter_context(
                fresh_postgres_database(arguments.database, keep=lambda: arguments.keep or failed)
            )
        options = SoakOptions(
            directory=directory,
            database_url=database_url,
            uploads=arguments.uploads,
            clients=arguments.clients,
            processes=arguments.processes,
            seconds_limit=arguments.seconds_limit,
            seed=arguments.seed,
            delete_fraction=arguments.delete_fraction,
            derive_fraction=arguments.derive_fraction,
            chaos_every=arguments.chaos_every,
            chaos_threads=arguments.chaos_threads,
            max_extras=arguments.max_extras,
            repairs_at_once=arguments.repairs_at_once,
            weights=weights,
            log=(lambda line: None) if arguments.quiet else (lambda line: print(line, flush=True)),
        )
        began = time.monotonic()
        try:
            result = run_soak(options)
        except SoakError as error:
            print(f"the soak could not run: {error}", file=sys.stderr)
            print(f"logs in {directory / 'logs'}", file=sys.stderr)
            return 2
        failed = bool(result.problems())
        print(result.summary())
        print(f"  wall time, start-up to clean-up: {time.monotonic() - began:.1f} s")
        if failed and database_url:
            print(f"  the database is kept: {database_url}")
    if not failed and not arguments.keep and arguments.directory is None:
        shutil.rmtree(directory, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
