"""
The soak: nothing acknowledged is ever lost.

Several `twistd pymager` processes share one data directory and one
database, each on its own loopback port.  Client threads upload small
distinct images under IDs of their own, delete some and upload them again,
and ask for derived images, spread over the processes, while a chaos loop
starts extra processes (their start-up recovery runs during the uploads),
stops them with SIGTERM, kills one with SIGKILL and restarts it, and runs
`pymager-admin check --repair` beside them.

Each ID belongs to one client, which never has two requests on it at once,
so the last answer it got is what the store must hold: 201 with the
sha256 the server gave, or 204.  A request that fails without an answer (a
reset connection, a timeout) or with a 5xx leaves the ID unknown; unknown
IDs are left alone from then on, counted, and excluded from the verdict.
At the end every other ID is read back, and `pymager-admin check` runs.

The engine lives here, under tests/, so that tests/integration/test_soak.py
imports it as a module of the test package; bench/soak.py is the command
around it.  It uses plain threads and http.client, and no reactor, so that
the same code runs from a command and from a synchronous test.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from PIL import Image

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
# Lines of a process's log worth showing next to a loss.
NOTABLE = re.compile(
    r"Finishing interrupted|Clearing the abandoned|Forgetting original|Removing orphan|"
    r"Ending the claim|Traceback|could not start|Unhandled|CRITICAL|Error",
)
SIZES = ("100x100", "800x600")
# Failures that leave the outcome of a request unknown: it may have been
# carried out or not.
AMBIGUOUS = (OSError, http.client.HTTPException, TimeoutError)


class SoakError(Exception):
    """The soak itself could not run (a process would not start, ...)."""


@dataclass
class SoakOptions:
    directory: Path  # data, configuration and logs go here
    database_url: str | None = None  # None: SQLite in the data directory
    uploads: int = 10_000  # upload requests (new IDs and re-uploads)
    clients: int = 6
    processes: int = 2  # long-lived processes
    seconds_limit: float = 600.0  # no new upload starts after this
    seed: int | None = None
    delete_fraction: float = 0.08  # of uploads: first delete an acknowledged ID
    reupload_fraction: float = 0.75  # of acknowledged deletes: upload the ID again
    derive_fraction: float = 0.12  # of uploads: also ask for a derived image
    chaos_every: int = 120  # uploads between chaos actions (each chaos thread)
    chaos_threads: int = 1
    max_extras: int = 2  # extra processes up at once
    repairs_at_once: int = 1  # concurrent `check --repair` runs
    # Relative weights of the chaos actions.
    weights: dict[str, int] = field(
        default_factory=lambda: {"start": 4, "stop": 2, "kill": 1, "repair": 3},
    )
    request_timeout: float = 30.0
    start_timeout: float = 60.0
    admin_timeout: float = 120.0
    log: Callable[[str], None] = lambda _line: None

    def __post_init__(self) -> None:
        # The processes run in it, and are given paths under it.
        self.directory = self.directory.absolute()


# Processes


class Process:
    """One `twistd pymager`, its output in a log file, its port once it listens."""

    def __init__(self, name: str, options: SoakOptions, config: Path) -> None:
        self.name = name
        self.log_path = options.directory / "logs" / f"{name}.log"
        self.port: int | None = None
        self.epoch = 0  # set by the fleet when it enters service
        self.started_at = time.monotonic()
        self.notable: list[str] = []
        self._listening = threading.Event()
        self._lines_lock = threading.Lock()
        self.popen = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "pymager", "--config", str(config)],
            cwd=options.directory,
            env=dict(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.log_path.open("w", encoding="utf-8") as log:
            for raw in self.popen.stdout:
                line = raw.decode(errors="replace")
                log.write(line)
                if self.port is None:
                    match = LISTENING.search(line)
                    if match:
                        self.port = int(match.group(1))
                        self._listening.set()
                if NOTABLE.search(line):
                    with self._lines_lock:
                        self.notable.append(line.rstrip())
        self._listening.set()  # ended: nobody waits for a port any more

    def wait_listening(self, timeout: float) -> int:
        self._listening.wait(timeout)
        if self.port is None:
            self.kill()
            raise SoakError(f"{self.name} did not start listening:\n{self.tail()}")
        return self.port

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it is still there after timeout seconds."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        try:
            return self.popen.wait(30)
        finally:
            self._reader.join(10)

    def finish(self) -> None:
        self._reader.join(10)

    def tail(self, lines: int = 40) -> str:
        self._reader.join(2)
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def lines_naming(self, words: list[str]) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if any(word in line for word in words)]


class Fleet:
    """The processes serving right now, for clients to pick from."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._serving: dict[str, Process] = {}
        self._epoch = 0

    def add(self, process: Process) -> None:
        with self._lock:
            self._epoch += 1
            process.epoch = self._epoch
            self._serving[process.name] = process
            self._lock.notify_all()

    def remove(self, process: Process) -> None:
        with self._lock:
            self._serving.pop(process.name, None)

    def serving(self) -> list[Process]:
        with self._lock:
            return list(self._serving.values())

    def pick(self, rng: random.Random, timeout: float, avoid: set[str] | None = None) -> Process | None:
        """A serving process (not one of avoid, if others serve); waits up to
        timeout for one to come up."""
        avoid = avoid or set()
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                choices = [p for p in self._serving.values() if p.name not in avoid] or list(
                    self._serving.values()
                )
                if choices:
                    return rng.choice(choices)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)

    def is_serving(self, process: Process) -> bool:
        with self._lock:
            return self._serving.get(process.name) is process


# What the clients were told


@dataclass
class Outcome:
    """The last acknowledged operation on one ID."""

    status: int  # 201 or 204
    sha256: str | None
    client: int
    history: list[str] = field(default_factory=list)


@dataclass
class Tally:
    uploads_attempted: int = 0
    uploads_acknowledged: int = 0
    reuploads_acknowledged: int = 0
    deletes_attempted: int = 0
    deletes_acknowledged: int = 0
    derived_requests: int = 0
    derived_ok: int = 0
    derived_503: int = 0
    refused_connections: int = 0  # connect() refused: nothing sent, tried elsewhere
    unknown_answers: Counter[str] = field(default_factory=Counter)  # why IDs became unknown
    anomalies: list[str] = field(default_factory=list)  # answers that should not happen


@dataclass
class ChaosTally:
    started: int = 0  # extra processes started (their start-up recovery ran)
    restarted: int = 0  # long-lived processes started again after a kill
    stopped: int = 0  # SIGTERM
    killed: int = 0  # SIGKILL
    repairs: int = 0  # `check --repair` runs finished
    repairs_failed: int = 0  # ... that exited other than 0
    failed_starts: list[str] = field(default_factory=list)
    repair_findings: list[str] = field(default_factory=list)  # what the repairs reported, timed
    events: list[str] = field(default_factory=list)


@dataclass
class SoakResult:
    database: str
    directory: Path
    tally: Tally
    chaos: ChaosTally
    elapsed: float
    verified_present: int = 0
    verified_absent: int = 0
    unknown_ids: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged 201, now 404
    wrong: list[str] = field(default_factory=list)  # other bytes, or back after a 204
    unverifiable: list[str] = field(default_factory=list)  # no clean answer at the end
    check_status: int | None = None
    check_output: str = ""
    tracebacks: int = 0
    evidence: dict[str, list[str]] = field(default_factory=dict)
    causes: Counter[str] = field(default_factory=Counter)  # what removed the lost and wrong IDs
    recovery_lines: list[str] = field(default_factory=list)

    @property
    def check_consistent(self) -> bool:
        return self.check_status == 0 and self.check_output.rstrip().endswith("consistent")

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} acknowledged uploads lost: {', '.join(self.lost[:20])}")
        if self.wrong:
            found.append(
                f"{len(self.wrong)} IDs answer other than acknowledged: {', '.join(self.wrong[:20])}"
            )
        if self.unverifiable:
            found.append(f"{len(self.unverifiable)} IDs gave no clean answer at the end")
        if not self.check_consistent:
            found.append(f"the final `pymager-admin check` is not consistent (exit {self.check_status})")
        return found

    def summary(self) -> str:
        t, c = self.tally, self.chaos
        lines = [
            f"soak on {self.database}: uploads for {self.elapsed:.1f} s; data and logs in {self.directory}",
            f"  uploads: {t.uploads_attempted} attempted, {t.uploads_acknowledged} acknowledged (201)"
            f" of which {t.reuploads_acknowledged} re-uploads after a 204",
            f"  deletes: {t.deletes_attempted} attempted, {t.deletes_acknowledged} acknowledged (204)",
            f"  derived: {t.derived_requests} requests, {t.derived_ok} images, {t.derived_503} answered 503",
            f"  unknown IDs (no clear answer; excluded): {self.unknown_ids}"
            + (
                f"  [{', '.join(f'{k}: {v}' for k, v in t.unknown_answers.most_common())}]"
                if self.unknown_ids
                else ""
            ),
            f"  connections refused and tried elsewhere: {t.refused_connections}",
            f"  processes: {c.started} extra started, {c.stopped} stopped (SIGTERM),"
            f" {c.killed} killed (SIGKILL), {c.restarted} restarted, {len(c.failed_starts)} failed starts",
            f"  repairs: {c.repairs} `check --repair` run during the soak"
            f" ({c.repairs_failed} exited non-zero)",
            f"  verified: {self.verified_present} present with the acknowledged sha256,"
            f" {self.verified_absent} absent after a 204",
            f"  LOST: {len(self.lost)}   WRONG: {len(self.wrong)}   unverifiable: {len(self.unverifiable)}",
            f"  server tracebacks: {self.tracebacks}; anomalies: {len(t.anomalies)}",
        ]
        for anomaly in t.anomalies[:20]:
            lines.append(f"    anomaly: {anomaly}")
        if c.repair_findings:
            lines.append(
                f"  what the repairs during the soak reported ({len(c.repair_findings)} lines, first 10):"
            )
            lines += [f"    {line}" for line in c.repair_findings[:10]]
        if self.recovery_lines:
            lines.append(
                f"  start-up recoveries finished {len(self.recovery_lines)} uploads or deletions"
                " (`Finishing interrupted ...`, `Clearing the abandoned ...`)"
            )
        lines.append(f"  final `pymager-admin check` (exit {self.check_status}):")
        lines += [f"    {line}" for line in self.check_output.strip().splitlines()[:30]]
        for cause, count in self.causes.most_common():
            lines.append(f"  lost or wrong because {cause}: {count}")
        for image_id, evidence in list(self.evidence.items())[:10]:
            lines.append(f"  evidence for {image_id}:")
            lines += [f"    {line}" for line in evidence]
        if len(self.evidence) > 10:
            lines.append(f"  (evidence for all {len(self.evidence)}: {self.directory / 'soak-report.json'})")
        problems = self.problems()
        lines.append("PROBLEMS:" if problems else "OK: nothing acknowledged was lost")
        lines += [f"  {problem}" for problem in problems]
        return "\n".join(lines)


# The soak


def tiny_image(key: str, jpeg: bool) -> bytes:
    """A few hundred bytes of PNG or JPEG whose pixels come from key."""
    seed = hashlib.sha256(key.encode()).digest()
    if jpeg:
        pixels = (seed * 24)[: 16 * 16 * 3]
        image = Image.frombytes("RGB", (16, 16), pixels)
        buffer = BytesIO()
        image.save(buffer, "JPEG", quality=90)
    else:
        pixels = (seed * 6)[: 8 * 8 * 3]
        image = Image.frombytes("RGB", (8, 8), pixels)
        buffer = BytesIO()
        image.save(buffer, "PNG")
    return buffer.getvalue()


class Answer:
    def __init__(self, status: int, body: bytes, process: str) -> None:
        self.status = status
        self.body = body
        self.process = process


class Ambiguous(Exception):
    """The request may or may not have been carried out."""


class Soak:
    def __init__(self, options: SoakOptions) -> None:
        self.options = options
        options.directory.mkdir(parents=True, exist_ok=True)
        (options.directory / "logs").mkdir(exist_ok=True)
        self.seed = options.seed if options.seed is not None else random.randrange(1 << 30)
        self.run_id = f"{self.seed:08x}"[-8:]
        self.config = options.directory / "pymager.toml"
        self.fleet = Fleet()
        self.long_lived: list[Process] = []
        self.extras: list[Process] = []  # serving extra processes
        self.starting = 0  # extra processes not listening yet
        self.every_process: list[Process] = []
        self.stop = threading.Event()  # no new uploads, no new chaos
        self.lock = threading.Condition()
        self.outcomes: dict[str, Outcome] = {}
        self.unknown: dict[str, str] = {}
        self.tally = Tally()
        self.chaos = ChaosTally()
        self.digests: set[str] = set()
        self.next_upload = 0
        self.next_chaos = options.chaos_every
        self.repairs_running = threading.Semaphore(options.repairs_at_once)
        self.repair_threads: list[threading.Thread] = []
        self.process_lock = threading.Lock()
        self.names = Counter[str]()
        self.started_at = self.uploads_began = time.monotonic()

    # set-up

    def write_config(self) -> None:
        database = ""
        if self.options.database_url:
            database = f"[database]\nurl = {json.dumps(self.options.database_url)}\n"
        self.config.write_text(
            "[server]\n"
            'listen = "tcp:0:interface=127.0.0.1"\n'
            # Keep-alive connections outlive a quiet spell of one process.
            "idle_timeout = 600.0\n"
            "[storage]\n"
            f"data_directory = {json.dumps(str(self.options.directory / 'data'))}\n"
            f"{database}"
            "[images]\n"
            f"allowed_sizes = {json.dumps(list(SIZES))}\n"
            "threads = 1\n"
            # Room for every client at once on one process: a 503 for a full
            # queue leaves its ID unknown, and so out of what the soak checks
            # (the default, 4, refused 8-14% of the uploads).
            f"max_queue = {self.options.clients}\n"
        )

    def spawn(self, kind: str) -> Process:
        with self.process_lock:
            self.names[kind] += 1
            name = f"{kind}{self.names[kind]}"
            process = Process(name, self.options, self.config)
            self.every_process.append(process)
        self.event(f"start {name} (pid {process.popen.pid})")
        return process

    def event(self, what: str) -> None:
        line = f"{time.monotonic() - self.started_at:8.2f}s {what}"
        with self.lock:
            self.chaos.events.append(line)
        self.options.log(line)

    # the run

    def run(self) -> SoakResult:
        try:
            return self._run()
        finally:
            self.stop.set()
            for process in list(self.every_process):
                with contextlib.suppress(Exception):
                    process.kill()

    def _run(self) -> SoakResult:
        self.write_config()
        # One first, alone: it creates the schema; then the others.
        first = self.spawn("p")
        first.wait_listening(self.options.start_timeout)
        self.fleet.add(first)
        self.long_lived.append(first)
        for _ in range(self.options.processes - 1):
            process = self.spawn("p")
            process.wait_listening(self.options.start_timeout)
            self.fleet.add(process)
            self.long_lived.append(process)
        self.uploads_began = time.monotonic()
        deadline = self.uploads_began + self.options.seconds_limit
        clients = [
            threading.Thread(target=self._client, args=(n, deadline), name=f"client{n}", daemon=True)
            for n in range(self.options.clients)
        ]
        chaos = [
            threading.Thread(target=self._chaos, args=(n, deadline), name=f"chaos{n}", daemon=True)
            for n in range(self.options.chaos_threads)
        ]
        for thread in clients + chaos:
            thread.start()
        for thread in clients:
            thread.join(self.options.seconds_limit + 4 * self.options.request_timeout + 60)
        self.stop.set()
        with self.lock:
            self.lock.notify_all()
        for thread in chaos:
            thread.join(self.options.start_timeout + self.options.admin_timeout + 60)
        for thread in list(self.repair_threads):
            thread.join(self.options.admin_timeout + 10)
        if any(thread.is_alive() for thread in clients + chaos + self.repair_threads):
            raise SoakError("a client or chaos thread did not finish in time")
        uploads_over = time.monotonic()
        self.event("uploads and chaos over")
        # Quiet: the extras go, the long-lived ones are all up, and one
        # more process starts: its start-up recovery finishes whatever the
        # killed and stopped ones left, as it would in production.  No
        # repair here: the final check must find the store consistent as
        # the service itself leaves it.
        for process in list(self.extras):
            self._stop_extra(process)
        for index, process in enumerate(self.long_lived):
            if not process.alive():
                self.long_lived[index] = self._start_serving("p")
        self.long_lived.append(self._start_serving("final"))
        result = SoakResult(
            database=self.options.database_url or "sqlite (in the data directory)",
            directory=self.options.directory,
            tally=self.tally,
            chaos=self.chaos,
            elapsed=0.0,
        )
        self._verify(result)
        result.check_status, result.check_output = self.admin(repair=False)
        self.event(f"final check: exit {result.check_status}")
        result.elapsed = uploads_over - self.uploads_began
        for process in list(self.every_process):
            if process.alive():
                process.terminate()
            process.finish()
        self._gather_logs(result)
        self.write_report(result)
        return result

    # clients

    def _claim_upload(self) -> int | None:
        with self.lock:
            if self.stop.is_set() or self.next_upload >= self.options.uploads:
                return None
            self.next_upload += 1
            self.tally.uploads_attempted += 1
            if self.next_upload >= self.next_chaos:
                self.lock.notify_all()
            return self.next_upload

    def _client(self, number: int, deadline: float) -> None:
        rng = random.Random(f"{self.seed}-client-{number}")
        connections: dict[str, tuple[int, http.client.HTTPConnection]] = {}
        acknowledged: list[str] = []  # this client's IDs whose last answer was 201
        try:
            while time.monotonic() < deadline:
                if acknowledged and rng.random() < self.options.delete_fraction:
                    image_id = acknowledged.pop(rng.randrange(len(acknowledged)))
                    if not self._delete(image_id, rng, connections):
                        continue
                    if rng.random() >= self.options.reupload_fraction:
                        continue
                else:
                    image_id = f"s{self.run_id}-c{number}-{rng.getrandbits(40):010x}"
                slot = self._claim_upload()
                if slot is None:
                    break
                if self._upload(image_id, slot, number, rng, connections):
                    acknowledged.append(image_id)
                if acknowledged and rng.random() < self.options.derive_fraction:
                    self._derive(rng.choice(acknowledged), rng, connections)
        except Exception as error:  # a bug of the soak: say so, do not hang
            with self.lock:
                self.tally.anomalies.append(f"client {number} crashed: {error!r}")
            raise
        finally:
            for _, connection in connections.values():
                connection.close()

    def _request(
        self,
        method: str,
        path: str,
        rng: random.Random,
        connections: dict[str, tuple[int, http.client.HTTPConnection]],
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request on a serving process.  A refused connection carried
        nothing, so it is tried on another process; any other failure to get
        an answer raises Ambiguous."""
        refused: set[str] = set()
        for _ in range(20):
            process = self.fleet.pick(rng, self.options.start_timeout, avoid=refused)
            if process is None or process.port is None:
                raise Ambiguous("no process serving")
            cached = connections.get(process.name)
            if cached is not None and cached[0] != process.epoch:
                cached[1].close()
                cached = None
            if cached is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", process.port, timeout=self.options.request_timeout
                )
                try:
                    connection.connect()
                except ConnectionRefusedError:
                    refused.add(process.name)
                    with self.lock:
                        self.tally.refused_connections += 1
                    continue
                except AMBIGUOUS as error:
                    raise Ambiguous(f"connect to {process.name}: {error!r}") from error
                connections[process.name] = cached = (process.epoch, connection)
            connection = cached[1]
            try:
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                data = response.read()
                if response.will_close:
                    connection.close()
                    del connections[process.name]
                return Answer(response.status, data, process.name)
            except AMBIGUOUS as error:
                connection.close()
                connections.pop(process.name, None)
                raise Ambiguous(f"{method} on {process.name}: {type(error).__name__}") from error
        raise Ambiguous("every process refused the connection")

    def _make_unknown(self, image_id: str, why: str) -> None:
        with self.lock:
            self.unknown[image_id] = why
            self.outcomes.pop(image_id, None)
            self.tally.unknown_answers[why.split(":")[0]] += 1

    def _note(self, image_id: str, line: str) -> None:
        outcome = self.outcomes.get(image_id)
        if outcome is not None:
            outcome.history.append(f"{time.monotonic() - self.started_at:8.2f}s {line}")

    def _upload(
        self,
        image_id: str,
        slot: int,
        client: int,
        rng: random.Random,
        connections: dict[str, tuple[int, http.client.HTTPConnection]],
    ) -> bool:
        """Upload fresh bytes under image_id; whether it was acknowledged."""
        jpeg = slot % 2 == 0
        data = tiny_image(f"{self.run_id}:{slot}:{image_id}", jpeg)
        digest = hashlib.sha256(data).hexdigest()
        with self.lock:
            salt = 0
            while digest in self.digests:  # never twice the same bytes
                salt += 1
                data = tiny_image(f"{self.run_id}:{slot}:{image_id}:{salt}", jpeg)
                digest = hashlib.sha256(data).hexdigest()
            self.digests.add(digest)
        sent_at = time.monotonic() - self.started_at
        content_type = "image/jpeg" if jpeg else "image/png"
        try:
            answer = self._request(
                "PUT", f"/original/{image_id}", rng, connections, data, {"Content-Type": content_type}
            )
        except Ambiguous as error:
            self._make_unknown(image_id, f"PUT no answer: {error}")
            return False
        if answer.status == 201:
            try:
                acknowledged = json.loads(answer.body)["sha256"]
            except (ValueError, KeyError, TypeError):
                acknowledged = None
            with self.lock:
                self.tally.uploads_acknowledged += 1
                previous = self.outcomes.get(image_id)
                if previous is not None and previous.status == 204:
                    self.tally.reuploads_acknowledged += 1
                outcome = Outcome(201, acknowledged, client, previous.history if previous else [])
                self.outcomes[image_id] = outcome
                outcome.history.append(
                    f"{sent_at:8.2f}s PUT sent to {answer.process}; 201 sha256 {str(acknowledged)[:12]}"
                )
                if acknowledged != digest:
                    self.tally.anomalies.append(
                        f"PUT {image_id}: 201 with sha256 {acknowledged}, sent {digest}"
                    )
            return True
        if answer.status >= 500:
            self._make_unknown(image_id, f"PUT {answer.status}")
            return False
        # 409 for an ID this client alone uses and last saw deleted (or never
        # used) means the store kept something it should not have.
        with self.lock:
            self.tally.anomalies.append(
                f"PUT {image_id} on {answer.process}: {answer.status} {answer.body[:200]!r}"
            )
        self._make_unknown(image_id, f"PUT {answer.status}")
        return False

    def _delete(
        self,
        image_id: str,
        rng: random.Random,
        connections: dict[str, tuple[int, http.client.HTTPConnection]],
    ) -> bool:
        with self.lock:
            self.tally.deletes_attempted += 1
        sent_at = time.monotonic() - self.started_at
        try:
            answer = self._request("DELETE", f"/original/{image_id}", rng, connections)
        except Ambiguous as error:
            self._make_unknown(image_id, f"DELETE no answer: {error}")
            return False
        with self.lock:
            if answer.status == 204:
                self.tally.deletes_acknowledged += 1
                outcome = self.outcomes[image_id]
                outcome.history.append(f"{sent_at:8.2f}s DELETE sent to {answer.process}; 204")
                self.outcomes[image_id] = Outcome(204, None, outcome.client, outcome.history)
                return True
            if answer.status == 404:
                # Acknowledged 201, and gone before this client deleted it:
                # a loss seen during the run.  The final check counts it.
                self._note(image_id, f"DELETE sent to {answer.process}; 404 (lost already)")
                self.tally.anomalies.append(f"DELETE {image_id} on {answer.process}: 404 after a 201")
                return False
        if answer.status >= 500:
            self._make_unknown(image_id, f"DELETE {answer.status}")
            return False
        with self.lock:
            self.tally.anomalies.append(f"DELETE {image_id} on {answer.process}: {answer.status}")
        self._make_unknown(image_id, f"DELETE {answer.status}")
        return False

    def _derive(
        self,
        image_id: str,
        rng: random.Random,
        connections: dict[str, tuple[int, http.client.HTTPConnection]],
    ) -> None:
        size = rng.choice(SIZES)
        with self.lock:
            self.tally.derived_requests += 1
        try:
            answer = self._request("GET", f"/derived/{image_id}-{size}.jpg", rng, connections)
        except Ambiguous:
            return  # a read: the ID's state is unchanged
        with self.lock:
            if answer.status == 200:
                self.tally.derived_ok += 1
            elif answer.status == 503:
                self.tally.derived_503 += 1
            elif answer.status == 404:
                self._note(image_id, f"GET derived {size} on {answer.process}; 404")
                self.tally.anomalies.append(
                    f"GET derived {image_id}-{size} on {answer.process}: 404 after a 201"
                )
            else:
                self.tally.anomalies.append(
                    f"GET derived {image_id}-{size} on {answer.process}:"
                    f" {answer.status} {answer.body[:200]!r}"
                )
        if answer.status == 200:
            width, height = (int(side) for side in size.split("x"))
            try:
                with Image.open(BytesIO(answer.body)) as image:
                    got = image.size
            except Exception as error:
                got = (0, 0)
                with self.lock:
                    self.tally.anomalies.append(f"GET derived {image_id}-{size}: not an image ({error})")
            if got != (width, height):
                with self.lock:
                    self.tally.anomalies.append(f"GET derived {image_id}-{size}: {got[0]}x{got[1]}")

    # chaos

    def _chaos(self, number: int, deadline: float) -> None:
        rng = random.Random(f"{self.seed}-chaos-{number}")
        actions = list(self.options.weights)
        weights = [self.options.weights[action] for action in actions]
        # Every kind once first, so that even a short soak meets them all.
        first = [action for action in ("start", "repair", "kill", "stop") if self.options.weights.get(action)]
        limit = self.options.uploads // max(1, self.options.chaos_every) + len(first) + 1
        for count in range(limit):
            with self.lock:
                while (
                    self.next_upload < self.next_chaos
                    and not self.stop.is_set()
                    and time.monotonic() < deadline
                ):
                    self.lock.wait(max(0.01, deadline - time.monotonic()))
                if self.stop.is_set() or time.monotonic() >= deadline:
                    return
                self.next_chaos += self.options.chaos_every
            action = first[count] if count < len(first) and number == 0 else rng.choices(actions, weights)[0]
            try:
                getattr(self, f"_chaos_{action}")(rng)
            except SoakError as error:
                with self.lock:
                    self.chaos.failed_starts.append(str(error)[:2000])
                self.event(f"chaos {action} failed: {str(error).splitlines()[0]}")

    def _start_serving(self, kind: str) -> Process:
        process = self.spawn(kind)
        port = process.wait_listening(self.options.start_timeout)
        self.fleet.add(process)
        self.event(f"{process.name} listening on {port}")
        return process

    def _chaos_start(self, rng: random.Random, fallback: bool = True) -> None:
        if self.options.max_extras < 1:
            return
        with self.process_lock:
            full = len(self.extras) + self.starting >= self.options.max_extras
            if not full:
                self.starting += 1
        if full:
            if fallback:
                self._chaos_stop(rng, fallback=False)
            return
        try:
            process = self.spawn("extra")
            port = process.wait_listening(self.options.start_timeout)
            # Only now may another chaos loop stop or kill it: a process
            # stopped before it listens would count as a failed start.
            with self.process_lock:
                self.extras.append(process)
        finally:
            with self.process_lock:
                self.starting -= 1
        self.fleet.add(process)
        with self.lock:
            self.chaos.started += 1
        self.event(f"{process.name} listening on {port}")

    def _chaos_stop(self, rng: random.Random, fallback: bool = True) -> None:
        with self.process_lock:
            victim = self.extras[0] if self.extras else None
        if victim is None:
            if fallback:
                self._chaos_start(rng, fallback=False)
            return
        self._stop_extra(victim)

    def _stop_extra(self, process: Process) -> None:
        with self.process_lock:
            if process not in self.extras:
                return
            self.extras.remove(process)
        self.fleet.remove(process)
        code = process.terminate()
        with self.lock:
            self.chaos.stopped += 1
        self.event(f"{process.name} stopped with SIGTERM (exit {code})")

    def _chaos_kill(self, rng: random.Random) -> None:
        with self.process_lock:
            candidates = [p for p in self.long_lived + self.extras if p.alive() and self.fleet.is_serving(p)]
        if len(candidates) < 2:
            self._chaos_start(rng)
            return
        victim = rng.choice(candidates)
        self.fleet.remove(victim)
        code = victim.kill()
        with self.lock:
            self.chaos.killed += 1
        self.event(f"{victim.name} killed with SIGKILL (exit {code})")
        with self.process_lock:
            if victim in self.extras:
                self.extras.remove(victim)
                return
            index = self.long_lived.index(victim)
        # A long-lived one comes back at once; its start-up recovery
        # finishes what the killed one left.
        replacement = self._start_serving("p")
        with self.process_lock:
            self.long_lived[index] = replacement
        with self.lock:
            self.chaos.restarted += 1

    def _chaos_repair(self, rng: random.Random) -> None:
        if not self.repairs_running.acquire(blocking=False):
            self._chaos_start(rng)
            return

        def repair() -> None:
            try:
                began = time.monotonic() - self.started_at
                status, output = self.admin(repair=True)
                with self.lock:
                    self.chaos.repairs += 1
                    if status != 0:
                        self.chaos.repairs_failed += 1
                    for line in output.strip().splitlines():
                        if not line.rstrip().endswith("consistent"):
                            self.chaos.repair_findings.append(f"{began:8.2f}s repair: {line}")
                self.event(f"repair begun at {began:.2f}s: exit {status}")
            finally:
                self.repairs_running.release()

        thread = threading.Thread(target=repair, name="repair", daemon=True)
        with self.lock:
            self.repair_threads.append(thread)
        thread.start()

    def admin(self, repair: bool) -> tuple[int, str]:
        """The real `pymager-admin check` on this store: its status and output."""
        admin = BIN / "pymager-admin"
        command = [str(admin)] if admin.exists() else [sys.executable, "-m", "pymager_tx.admin.cli"]
        command += ["check", *(["--repair"] if repair else []), "--config", str(self.config)]
        try:
            done = subprocess.run(
                command,
                cwd=self.options.directory,
                capture_output=True,
                timeout=self.options.admin_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            return -1, f"timed out after {error.timeout} s"
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")

    # verdict

    def _verify(self, result: SoakResult) -> None:
        with self.lock:
            expected = dict(self.outcomes)
            result.unknown_ids = len(self.unknown)
        rng = random.Random(f"{self.seed}-verify")
        local = threading.local()

        def one(item: tuple[str, Outcome]) -> tuple[str, str]:
            image_id, outcome = item
            if not hasattr(local, "connections"):
                local.connections = {}
            for _ in range(3):
                try:
                    answer = self._request("GET", f"/original/{image_id}", rng, local.connections)
                except Ambiguous:
                    continue
                if answer.status >= 500:
                    continue
                if outcome.status == 201:
                    if answer.status == 404:
                        return image_id, "lost"
                    if answer.status == 200 and hashlib.sha256(answer.body).hexdigest() == outcome.sha256:
                        return image_id, "present"
                    return image_id, "wrong"
                return image_id, "absent" if answer.status == 404 else "wrong"
            return image_id, "unverifiable"

        with ThreadPoolExecutor(max(1, self.options.clients)) as pool:
            verdicts = list(pool.map(one, sorted(expected.items())))
        for image_id, verdict in verdicts:
            if verdict == "present":
                result.verified_present += 1
            elif verdict == "absent":
                result.verified_absent += 1
            else:
                getattr(result, verdict).append(image_id)

    def _gather_logs(self, result: SoakResult) -> None:
        """Tracebacks, recoveries, and every log line naming a lost or wrong ID."""
        suspects = set(result.lost + result.wrong)
        named: dict[str, list[str]] = {image_id: [] for image_id in suspects}
        ids = re.compile(rf"s{self.run_id}-c\d+-[0-9a-f]+")
        for process in self.every_process:
            result.tracebacks += sum(1 for line in process.notable if "Traceback" in line)
            result.recovery_lines += [
                f"{process.name}: {line}"
                for line in process.notable
                if "Finishing interrupted" in line or "Clearing the abandoned" in line
            ]
            if not suspects:
                continue
            try:
                text = process.log_path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                for image_id in set(ids.findall(line)) & suspects:
                    named[image_id].append(f"{process.name}: {line}")
        for image_id in sorted(suspects):
            outcome = self.outcomes.get(image_id)
            repairs = [line for line in self.chaos.repair_findings if image_id in line]
            result.evidence[image_id] = (list(outcome.history) if outcome else []) + named[image_id] + repairs
            if any("Finishing interrupted" in line for line in named[image_id]):
                cause = "a start-up recovery logged `Finishing interrupted ...` for it"
            elif repairs:
                cause = "a concurrent `check --repair` named it unfinished"
            else:
                cause = "no line names its removal (a `check --repair` logs none)"
            result.causes[cause] += 1

    def write_report(self, result: SoakResult) -> Path:
        """Everything the summary says, and every lost ID's evidence, as JSON."""
        path = self.options.directory / "soak-report.json"
        document = {
            "database": result.database,
            "seed": self.seed,
            "options": {
                key: value for key, value in vars(self.options).items() if key not in ("log", "directory")
            },
            "tally": {**vars(result.tally), "unknown_answers": dict(result.tally.unknown_answers)},
            "chaos": vars(result.chaos),
            "uploads_seconds": result.elapsed,
            "verified_present": result.verified_present,
            "verified_absent": result.verified_absent,
            "unknown_ids": sorted(self.unknown),
            "lost": result.lost,
            "wrong": result.wrong,
            "unverifiable": result.unverifiable,
            "causes": dict(result.causes),
            "evidence": result.evidence,
            "recovery_lines": result.recovery_lines,
            "check": [result.check_status, result.check_output],
            "problems": result.problems(),
        }
        path.write_text(json.dumps(document, indent=1, default=str))
        return path


def run_soak(options: SoakOptions) -> SoakResult:
    return Soak(options).run()


@contextlib.contextmanager
def fresh_postgres_database(server_url: str, keep: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """A database of its own on the server server_url names, dropped after
    unless keep() says otherwise."""
    from uuid import uuid4

    from sqlalchemy import create_engine, make_url

    admin = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"pymager_soak_{uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep():
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
