"""
What the Prometheus metrics cost, counted in instructions: the same
`twistd pymager` with `[metrics] enabled` true and false, each run under
valgrind's callgrind, answering the same number of warm requests for
derived images; the instructions the server's processes executed while
answering them (callgrind's counters zeroed just before, dumped just after),
divided by the requests.

Instructions are counted, not timed: the count is the same whatever else
the machine is doing, so this is the steady figure behind the timed one of
bench/metrics_cost.py, whose rounds a shared machine moves by up to 2x.
It counts what the processes execute in user space (Python, the C
libraries), not what the kernel does for their system calls.

    PYTHONPATH=. .venv/bin/python bench/metrics_instructions.py [--workers 2] [--memory-cache off]
"""

from __future__ import annotations

import argparse
import http.client
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import servers
from bench.metrics_cost import SIZES, photo, prepare

_CALLGRIND = ("valgrind", "--tool=callgrind", "--trace-children=yes", "--collect-atstart=yes")
_TOTAL = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.M)


def request_all(port: int, paths: list[str], count: int) -> None:
    """count GETs over the paths in turn, on one kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        for number in range(count):
            connection.request("GET", paths[number % len(paths)])
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
    finally:
        connection.close()


def instructions(out_directory: Path) -> int:
    """Instructions of every dump callgrind wrote there since the counters were zeroed."""
    total = 0
    for dump in out_directory.glob("callgrind.out.*"):
        found = _TOTAL.findall(dump.read_bytes())
        total += max((int(value) for value in found), default=0) if dump.name.count(".") > 2 else 0
    return total


def measure(scratch: Path, enabled: bool, arguments: argparse.Namespace) -> float:
    name = f"metrics-{'on' if enabled else 'off'}"
    directory = scratch / name
    dumps = directory / "callgrind"
    dumps.mkdir(parents=True)
    cache = None if arguments.memory_cache == "default" else 0
    server = servers.start_pymager(
        directory,
        SIZES,
        1,
        workers=arguments.workers,
        access_log=False,
        memory_cache_bytes=cache,
        name=name,
        extra_config=f"[metrics]\nenabled = {str(enabled).lower()}\n",
        wrapper=(*_CALLGRIND, f"--callgrind-out-file={dumps}/callgrind.out.%p"),
        ready_within=900.0,
    )
    try:
        paths = prepare(server, [photo(number) for number in range(arguments.photos)])
        # Warm every path once more (the memory cache, the lookups' statements).
        request_all(server.port, paths, len(paths) * 2)
        pids = [str(pid) for pid in server.pids()]
        subprocess.run(["callgrind_control", "--zero", *pids], check=True, capture_output=True)
        request_all(server.port, paths, arguments.requests)
        # Each process writes callgrind.out.<pid>.<n>: what it ran since the zeroing.
        subprocess.run(["callgrind_control", "--dump", *pids], check=True, capture_output=True)
        return instructions(dumps) / arguments.requests
    finally:
        server.stop(grace=120.0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--memory-cache", choices=["default", "off"], default="default")
    parser.add_argument(
        "--keep", type=Path, help="keep the servers' directories (the dumps, for callgrind_annotate) here"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pymager-metrics-instructions-") as scratch:
        where = arguments.keep or Path(scratch)
        on = measure(where, True, arguments)
        off = measure(where, False, arguments)
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}")
    print(
        f"{arguments.requests} warm GET /derived on one connection, workers={arguments.workers}, "
        f"memory cache {arguments.memory_cache}, under callgrind"
    )
    print(f"  instructions per request: metrics on {on:,.0f}, off {off:,.0f}: {on / off - 1:+.1%}")
    return 0 if on / off - 1 < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
