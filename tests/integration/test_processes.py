"""Several `twistd pymager` processes on one database and one data directory,
as production runs them, and kill -9 in the middle of a storm of writes.

Derivations are counted from the log lines the processes really write.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, DeferredSemaphore
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import HTTPConnectionPool

from pymager_tx.adapters.sql.database import Database, make_engine, sqlite_url
from pymager_tx.client import Image, ProblemError, PymagerClient
from pymager_tx.core.model import Size
from pymager_tx.ports import immediate
from tests.images import BLUE, RED, close_to, jpeg, opened, png
from tests.integration.test_twistd import Twistd, spawn

DERIVED = re.compile(r"Derived (\S+) \(")
SIZES = ("100x100", "40x30", "800x600")


@dataclass
class Cluster:
    directory: Path
    config: Path
    database_url: str
    pool: HTTPConnectionPool
    processes: list[tuple[Twistd, Any]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    finished_output: str = ""

    async def start(self, count: int = 1) -> None:
        for _ in range(count):
            protocol, process = spawn(self.directory, "--config", str(self.config))
            self.processes.append((protocol, process))
            self.ports.append(await protocol.listening)

    def url(self, number: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[number % len(self.ports)]}{path}"

    def client(self, number: int) -> PymagerClient:
        """The project's client of one of the processes; no retries, so
        that what each process answered is seen as it was."""
        return PymagerClient(self.url(number, ""), pool=self.pool, retries=0)

    async def upload(self, number: int, image_id: str, data: bytes) -> tuple[int, bytes]:
        return await _outcome(self.client(number).upload(image_id, data), 201)

    async def original(self, number: int, image_id: str) -> tuple[int, bytes]:
        return await _outcome(self.client(number).get_original(image_id), 200)

    async def derived(self, number: int, image_id: str, size: str, ext: str) -> tuple[int, bytes]:
        wanted = Size.parse(size)
        return await _outcome(
            self.client(number).get_derived(image_id, wanted.width, wanted.height, ext), 200
        )

    async def delete(self, number: int, image_id: str) -> tuple[int, bytes]:
        return await _outcome(self.client(number).delete(image_id), 204)

    async def stop(self, how: int = signal.SIGTERM) -> None:
        for protocol, process in self.processes:
            if not protocol.ended.called:
                process.signalProcess(how)
        for protocol, _ in self.processes:
            await protocol.ended
            self.finished_output += protocol.output.decode(errors="replace")
        self.processes, self.ports = [], []

    def derivations(self) -> list[str]:
        return DERIVED.findall(self.finished_output)

    async def check(self) -> tuple[int, str]:
        """`pymager-admin check` on the cluster's store: its status and output."""
        out, err, status = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "pymager_tx.admin.cli", "check", "--config", str(self.config)],
            env=dict(os.environ),
            path=str(self.directory),
        )
        return status, (out + err).decode()


@pytest_twisted.async_yield_fixture
async def cluster(tmp_path: Path, database_url: str) -> AsyncIterator[Cluster]:
    url = database_url if database_url.startswith("postgresql") else sqlite_url(tmp_path / "shared.sqlite3")
    config = tmp_path / "pymager.toml"
    config.write_text(
        "[server]\n"
        'listen = "tcp:0:interface=127.0.0.1"\n'
        "[storage]\n"
        f'data_directory = "{tmp_path / "data"}"\n'
        "[database]\n"
        f'url = "{url}"\n'
        "[images]\n"
        f"allowed_sizes = {list(SIZES)!r}\n"
        "threads = 2\n"
        # Room for the bursts these tests send: they test races, not overload.
        "max_queue = 100\n"
    )
    pool = HTTPConnectionPool(reactor, persistent=False)
    running = Cluster(tmp_path, config, url, pool)
    yield running
    await running.stop(signal.SIGKILL)
    await pool.closeCachedConnections()
    if url.startswith("postgresql"):
        await deferToThread(_drop_everything, url)


def _drop_everything(url: str) -> None:
    database = Database(make_engine(url, 1), immediate)
    try:
        database.drop_schema()
    finally:
        database.engine.dispose()


@pytest_twisted.ensureDeferred
async def test_of_many_first_requests_over_three_processes_one_derivation_runs(cluster: Cluster) -> None:
    await cluster.start(3)
    photo = jpeg((1600, 1200))
    assert (await cluster.upload(0, "photo", photo))[0] == 201
    answers = await _all(cluster.derived(number, "photo", "100x100", "jpg") for number in range(12))
    assert {code for code, _ in answers} == {200}
    assert len({hashlib.sha256(body).digest() for _, body in answers}) == 1
    assert opened(answers[0][1]).size == (100, 100)
    await cluster.stop()
    assert cluster.derivations() == ["photo-100x100.jpeg"]
    assert "Traceback" not in cluster.finished_output


@pytest_twisted.ensureDeferred
async def test_of_concurrent_uploads_to_one_id_over_three_processes_one_wins(cluster: Cluster) -> None:
    await cluster.start(3)
    images = [png((10 + number, 10)) for number in range(9)]
    answers = await _all(cluster.upload(number, "contested", data) for number, data in enumerate(images))
    codes = sorted(code for code, _ in answers)
    assert codes == [201] + [409] * 8
    winner = images[[code for code, _ in answers].index(201)]
    for number in range(3):
        assert await cluster.original(number, "contested") == (200, winner)
    assert_consistent(await cluster.check())


@pytest_twisted.ensureDeferred
async def test_a_delete_racing_derivations_on_other_processes_leaves_nothing(cluster: Cluster) -> None:
    await cluster.start(3)
    for round_number in range(3):
        assert (await cluster.upload(round_number, "photo", jpeg((1600, 1200))))[0] == 201
        requests = [cluster.derived(number, "photo", size, "jpg") for number in range(6) for size in SIZES]
        requests.insert(round_number * 5, cluster.delete(round_number, "photo"))
        answers = await _all(requests)
        assert {code for code, _ in answers} <= {200, 204, 404}
        for number in range(3):
            assert (await cluster.original(number, "photo"))[0] == 404
            assert (await cluster.derived(number, "photo", "100x100", "jpg"))[0] == 404
        assert _stored_files(cluster.directory) == []
        assert_consistent(await cluster.check())


@pytest_twisted.ensureDeferred
async def test_a_delete_through_one_process_voids_what_the_others_hold_in_memory(cluster: Cluster) -> None:
    # An hour between database checks: only the shared removal epoch can
    # tell the others that the image is gone.
    with cluster.config.open("a") as config:
        config.write("[memory_cache]\npoll_seconds = 3600.0\n")
    await cluster.start(3)
    assert (await cluster.upload(0, "photo", jpeg((400, 300), RED)))[0] == 201
    for number in range(3):
        code, body = await cluster.derived(number, "photo", "100x100", "png")
        assert code == 200 and close_to(opened(body).getpixel((50, 50)), RED)
    assert (await cluster.delete(1, "photo"))[0] == 204
    for number in range(3):
        assert (await cluster.derived(number, "photo", "100x100", "png"))[0] == 404
    assert (await cluster.upload(2, "photo", jpeg((400, 300), BLUE)))[0] == 201
    for number in range(3):
        code, body = await cluster.derived(number, "photo", "100x100", "png")
        assert code == 200 and close_to(opened(body).getpixel((50, 50)), BLUE)


def assert_consistent(check: tuple[int, str]) -> None:
    status, output = check
    assert status == 0 and output.rstrip().endswith("consistent"), output


def _stored_files(directory: Path) -> list[str]:
    files = directory / "data" / "files"
    return sorted(str(p.relative_to(files)) for p in files.rglob("*") if p.is_file())


@pytest_twisted.ensureDeferred
async def test_kill_9_in_a_storm_of_writes_then_restart_leaves_a_consistent_store(cluster: Cluster) -> None:
    rng = random.Random(20261121)
    uploaded: dict[str, bytes] = {}
    for round_number in range(3):
        await cluster.start(2)
        storm = Storm(cluster, rng, uploaded, round_number)
        await storm.until_killed(after=rng.randrange(10, 60))
        # The survivor may still be writing; the restarted process and it
        # must then agree, as they would in production.
        await cluster.start(1)
        await storm.verify()
        await cluster.stop()
        assert_consistent(await cluster.check())
        assert "Traceback" not in cluster.finished_output


@dataclass
class Storm:
    """Uploads, derivations and deletions, eight at a time, on two processes;
    one ID is never written twice at once, so what the client was told is
    what the store must hold."""

    cluster: Cluster
    rng: random.Random
    uploaded: dict[str, bytes]  # what each ID holds, as acknowledged
    round_number: int
    attempted: set[str] = field(default_factory=set)
    killed: bool = False

    async def until_killed(self, after: int) -> None:
        victim_protocol, victim = self.cluster.processes[0]
        locks: dict[str, DeferredLock] = {}
        limit = DeferredSemaphore(8)
        done = 0

        async def one(number: int) -> None:
            nonlocal done
            image_id = f"r{self.round_number}-{self.rng.randrange(12)}"
            lock = locks.setdefault(image_id, DeferredLock())
            await lock.acquire()
            try:
                await self._act(image_id, number % 2)
            finally:
                lock.release()
            done += 1
            if done == after:
                self.killed = True
                victim.signalProcess(signal.SIGKILL)

        await _all(limit.run(lambda n=number: Deferred.fromCoroutine(one(n))) for number in range(after * 2))
        await victim_protocol.ended
        del self.cluster.processes[0], self.cluster.ports[0]

    async def _act(self, image_id: str, process: int) -> None:
        action = self.rng.choice(("upload", "upload", "derive", "derive", "delete"))
        try:
            if action == "upload":
                data = jpeg((self.rng.randrange(400, 1400), self.rng.randrange(300, 1000)))
                self.attempted.add(image_id)
                code, _ = await self.cluster.upload(process, image_id, data)
                if code == 201:
                    self.uploaded[image_id] = data
            elif action == "derive":
                size = self.rng.choice(SIZES)
                code, body = await self.cluster.derived(process, image_id, size, "jpg")
                if code == 200:
                    opened(body).load()
            else:
                code, _ = await self.cluster.delete(process, image_id)
                if code == 204:
                    self.uploaded.pop(image_id, None)
        except Exception:
            if not self.killed:
                raise
            # Lost with the killed process: what it did is not known.
            self.uploaded.pop(image_id, None)
            return
        assert code < 500, (action, image_id, code)

    async def verify(self) -> None:
        for image_id in sorted(self.attempted):
            code, body = await self.cluster.original(0, image_id)
            if code == 200:
                if image_id in self.uploaded:
                    assert body == self.uploaded[image_id]
                code, derived = await self.cluster.derived(1, image_id, "40x30", "jpg")
                assert code == 200 and opened(derived).size == (40, 30)
            else:
                # Absent, and so uploadable again.
                assert code == 404 and image_id not in self.uploaded
                assert (await self.cluster.upload(1, image_id, png()))[0] == 201


async def _outcome(work: Deferred[Any], success: int) -> tuple[int, bytes]:
    """What a call answered: its status, and the image it got, if any."""
    try:
        result = await work
    except ProblemError as refusal:
        return refusal.status, b""
    return success, result.data if isinstance(result, Image) else b""


async def _all(work: Iterable[Any]) -> list[Any]:
    """Run every coroutine or Deferred at once; their results, in order."""
    results = await DeferredList(
        [item if isinstance(item, Deferred) else Deferred.fromCoroutine(item) for item in work],
        consumeErrors=True,
    )
    for succeeded, result in results:
        if not succeeded:
            result.raiseException()
    return [result for _, result in results]
