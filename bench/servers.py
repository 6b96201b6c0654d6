"""
The two servers under test, as child processes on 127.0.0.1, and their memory.

pymager-tx: `twistd -n pymager` with a TOML file in a temporary directory.
thumbor: `thumbor --processes N` (tornado forks N workers that share one
listening socket) with a Python configuration file: PIL engine, file loader on
the corpus directory, file result storage that also keeps unsafe URLs.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


@dataclass
class Server:
    name: str  # unique in a run: "pymager-tx", "pymager-tx@0a96ae2", "thumbor"
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: object = None
    kind: str = ""  # what answers: "pymager-tx" or "thumbor"; empty: the name

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server process and all its descendants (thumbor's workers)."""
        pids, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            pids.append(pid)
            queue += _children(pid)
        return pids

    def reset_peaks(self) -> None:
        """Start a new VmHWM window: writing 5 to clear_refs resets the peak
        RSS to the current RSS (Linux >= 4.0; needs to own the process)."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_kb(self) -> int:
        """Sum of every process's VmHWM since reset_peaks: an upper bound of
        the simultaneous peak, and it counts shared pages once per process."""
        return sum(_status_kb(pid, "VmHWM") for pid in self.pids())

    def rss_kb(self) -> int:
        return sum(_status_kb(pid, "VmRSS") for pid in self.pids())

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the server and its workers, SIGKILL after grace seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            try:
                self.process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class RssSampler:
    """Polls the summed VmRSS of some servers: the simultaneous peak that the
    VmHWM sum only bounds from above."""

    servers: list[Server]
    interval: float = 0.05
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.peaks = {server.name: 0 for server in self.servers}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for server in self.servers:
                self.peaks[server.name] = max(self.peaks[server.name], server.rss_kb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


def _wait_ready(server: Server, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-3000:]
            sys.exit(f"{server.name} ended at start-up:\n{tail}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            connection.request("GET", path)
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.1)
    server.stop()
    sys.exit(f"{server.name} did not answer on port {server.port} within {timeout:.0f}s")


def start_pymager(
    directory: Path,
    sizes: list[str],
    threads: int,
    workers: int = 1,
    access_log: bool = True,
    memory_cache_bytes: int | None = None,
    venv: Path | None = None,
    name: str = "pymager-tx",
    extra_config: str = "",
    wrapper: tuple[str, ...] = (),
    ready_within: float = 60.0,
    storage: str = "",
) -> Server:
    """twistd pymager: workers processes on one socket, each with threads
    image threads and memory_cache_bytes of derived images held in memory
    (None: the default).  From this checkout with the bench venv's twistd, or
    with venv's twistd and the pymager-tx installed there (another commit's).
    extra_config: more TOML sections, appended as they are; wrapper: a
    command the server runs under (valgrind ...), which may slow its start
    past the usual ready_within seconds; storage: more keys of [storage]
    (backend = "s3")."""
    port = free_port()
    config = directory / "pymager.toml"
    quoted = ", ".join(f'"{size}"' for size in sizes)
    config.write_text(
        f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\n'
        f"workers = {workers}\naccess_log = {str(access_log).lower()}\n"
        f'[storage]\ndata_directory = "{directory / "data"}"\n{storage}'
        f"[images]\nallowed_sizes = [{quoted}]\nthreads = {threads}\n"
        + ("" if memory_cache_bytes is None else f"[memory_cache]\nmax_bytes = {memory_cache_bytes}\n")
        + extra_config,
        encoding="utf-8",
    )
    log_path = directory / "pymager.log"
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if venv is None:
        twistd = str(Path(sys.executable).parent / "twistd")
        environment["PYTHONPATH"] = str(REPOSITORY)
    else:
        # No PYTHONPATH: this checkout must not shadow the venv's own pymager_tx.
        twistd = str(venv / "bin" / "twistd")
        environment.pop("PYTHONPATH", None)
    process = subprocess.Popen(
        [*wrapper, twistd, "--nodaemon", "--pidfile=", "--logfile=-", "pymager", "--config", str(config)],
        cwd=directory,
        env=environment,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(name, process, port, log_path, kind="pymager-tx")
    _wait_ready(server, "/", ready_within)
    # The first process answers before its workers are up; wait for them.
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if log_path.read_text(errors="replace").count(" serving the connections ") >= workers - 1:
            break
        time.sleep(0.1)
    else:
        server.stop()
        sys.exit(f"{name}: not all {workers} workers listening after {ready_within:.0f} s")
    return server


THUMBOR_CONFIG = """\
# Written by bench/servers.py for one benchmark run.
ENGINE = "thumbor.engines.pil"
LOADER = "thumbor.loaders.file_loader"
FILE_LOADER_ROOT_PATH = {corpus!r}
# Originals are read from the corpus on each miss; pymager-tx also reads its
# stored original for each derivation, so neither keeps a second copy.
STORAGE = "thumbor.storages.no_storage"
{result_storage}ALLOW_UNSAFE_URL = True
QUALITY = {quality}
RESPECT_ORIENTATION = True  # pymager-tx always applies the EXIF orientation
ENGINE_THREADPOOL_SIZE = {engine_threads}
"""
# thumbor keeps what it derived, as pymager-tx does.
THUMBOR_RESULT_STORAGE = """\
RESULT_STORAGE = "thumbor.result_storages.file_storage"
RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = {results!r}
RESULT_STORAGE_STORES_UNSAFE = True
"""


def start_thumbor(
    directory: Path,
    venv: Path,
    corpus: Path,
    processes: int,
    engine_threads: int,
    quality: int,
    result_storage: bool = True,
) -> Server:
    """result_storage False: thumbor derives every request again (its
    default, without a RESULT_STORAGE)."""
    port = free_port()
    config = directory / "thumbor.conf"
    config.write_text(
        THUMBOR_CONFIG.format(
            corpus=str(corpus.resolve()),
            result_storage=THUMBOR_RESULT_STORAGE.format(results=str(directory / "thumbor-results"))
            if result_storage
            else "",
            quality=quality,
            engine_threads=engine_threads,
        ),
        encoding="utf-8",
    )
    log_path = directory / "thumbor.log"
    process = subprocess.Popen(
        [
            str(venv / "bin" / "thumbor"),
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--conf",
            str(config),
            "--processes",
            str(processes),
            "--log-level",
            "warning",
        ],
        cwd=directory,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server("thumbor", process, port, log_path)
    _wait_ready(server, "/healthcheck")
    # The workers fork after the socket is bound; wait until all are there.
    deadline = time.monotonic() + 30
    while len(server.pids()) < processes + (1 if processes > 1 else 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    return server


def venv_package_version(venv: Path, package: str) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        return "unknown"
    code = f"from importlib.metadata import version; print(version({package!r}))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"
