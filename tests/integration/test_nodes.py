"""Three real `twistd pymager` nodes with data directories of their own, on
one PostgreSQL database and one bucket (SeaweedFS in CI), as on machines
that share no disk: one derivation per rendition across them, a killed
node's derivation finished by another, deletions seen everywhere at once,
one upload of an ID, a bucket that goes away and comes back, and a store
left consistent by kill -9."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest_twisted
from PIL import Image
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults
from twisted.web.client import HTTPConnectionPool

from pymager_tx.adapters.sql.database import make_engine
from pymager_tx.adapters.sql.schema_version import drop_txn
from tests.conftest import S3Server
from tests.images import encode, jpeg, opened
from tests.integration.cluster import Cluster, Node, node_settings, until, upstream_port
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_metrics import parse, value
from tests.integration.test_twistd import spawn

JPEG = {"Content-Type": "image/jpeg"}


@pytest_twisted.async_yield_fixture
async def cluster(tmp_path: Path, s3_server: S3Server, postgres_server_url: str) -> AsyncIterator[Cluster]:
    async with three_nodes(tmp_path, s3_server, postgres_server_url) as nodes:
        yield nodes


@pytest_twisted.async_yield_fixture
async def sweeping_cluster(
    tmp_path: Path, s3_server: S3Server, postgres_server_url: str
) -> AsyncIterator[Cluster]:
    """Nodes that sweep every second what dead nodes left."""
    async with three_nodes(tmp_path, s3_server, postgres_server_url, sweep_seconds=1.0) as nodes:
        yield nodes


@asynccontextmanager
async def three_nodes(
    tmp_path: Path, s3_server: S3Server, postgres_server_url: str, **changes: Any
) -> AsyncIterator[Cluster]:
    prefix = f"nodes-{uuid4().hex[:8]}"
    nodes: list[Node] = []
    for number in range(3):
        directory = tmp_path / f"node{number}"
        directory.mkdir()
        proxy = TcpProxy(upstream_port(s3_server))
        port = await proxy.listen()
        config = directory / "pymager.toml"
        config.write_text(node_settings(directory, s3_server, port, prefix, postgres_server_url, changes))
        nodes.append(Node(f"node{number}", directory, proxy, config))
    engine = make_engine(postgres_server_url, pool_size=2)
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        # All at once, as a deployment starts: one creates the schema.
        await gatherResults([defer(node.start()) for node in nodes], consumeErrors=True)
        yield Cluster(nodes, engine, s3_server, prefix, pool)
    finally:
        await pool.closeCachedConnections()
        for node in nodes:
            if node.process is not None:
                await node.stop()
            await node.proxy.close()
        # Each test starts from an empty schema on the session's database.
        with engine.begin() as connection:
            drop_txn(connection)
        engine.dispose()


def problem_type(body: bytes) -> str:
    kind: str = json.loads(body)["type"]
    return kind.rsplit("/", 1)[-1]


async def derivations(cluster: Cluster) -> tuple[float, float]:
    """Derivations and storage writes counted by every node's /metrics."""
    derived = written = 0.0
    for node in cluster.nodes:
        status, _, body = await cluster.fetch(node, "GET", "/metrics")
        assert status == 200
        samples = parse(body.decode())
        derived += value(samples, "pymager_derivations_total", outcome="original")
        written += value(samples, "pymager_storage_operation_duration_seconds_count", op="put")
    return derived, written


@pytest_twisted.ensureDeferred
async def test_first_requests_spread_over_the_nodes_derive_once(cluster: Cluster) -> None:
    first, *_ = cluster.nodes
    status, _, _ = await cluster.fetch(first, "PUT", "/original/photo", data=jpeg((400, 300)), headers=JPEG)
    assert status == 201
    asked = [
        cluster.fetch(cluster.nodes[number % 3], "GET", "/derived/photo-100x100.jpg") for number in range(15)
    ]
    answers = await gatherResults([defer(each) for each in asked], consumeErrors=True)
    assert {status for status, _, _ in answers} == {200}
    bodies = {body for _, _, body in answers}
    assert len(bodies) == 1
    assert opened(bodies.pop()).size == (100, 100)

    # One derivation, and one write of it: the original's and the rendition's
    # (the deriving node answers before it records: wait for its log line).
    async def recorded() -> bool:
        return sum(node.log_count("Derived photo-100x100.jpeg") for node in cluster.nodes) == 1

    await until(recorded, 10, "the rendition is recorded")
    assert await derivations(cluster) == (1, 2)
    assert len(await cluster.objects("derived/")) == 1


@pytest_twisted.ensureDeferred
async def test_a_killed_node_s_derivation_is_finished_by_another_once_its_lease_lapses(
    cluster: Cluster,
) -> None:
    victim, other, _ = cluster.nodes
    status, _, _ = await cluster.fetch(other, "PUT", "/original/photo", data=jpeg((400, 300)), headers=JPEG)
    assert status == 201
    # The victim's bucket stalls: it claims the rendition, then waits for
    # the original's bytes for as long as the test lets it live.
    victim.proxy.hold()
    doomed = cluster.request(victim, "GET", "/derived/photo-100x100.jpg")
    doomed.addErrback(lambda _: None)  # its connection dies with it

    async def claimed() -> bool:
        rows = await cluster.query("SELECT owner FROM derivation_claims")
        return [row.owner for row in rows] == [victim.owner]

    await until(claimed, 30, "the victim claims the rendition")
    await victim.kill()
    victim.proxy.release()
    status, _, body = await cluster.fetch(other, "GET", "/derived/photo-100x100.jpg")
    assert status == 200
    assert opened(body).size == (100, 100)
    assert other.log_count(f"Ending the claim of {victim.owner}, which is gone") == 1

    async def recorded() -> bool:
        # Answered as soon as rendered; logged once stored and recorded.
        return other.log_count("Derived photo-100x100.jpeg") == 1

    await until(recorded, 10, "the other node records the rendition")
    assert victim.log_count("Derived photo-100x100.jpeg") == 0
    assert len(await cluster.objects("derived/")) == 1
    assert await cluster.query("SELECT owner FROM derivation_claims") == []


@pytest_twisted.ensureDeferred
async def test_a_delete_on_one_node_is_a_404_on_every_node_within_a_second(cluster: Cluster) -> None:
    deleter = cluster.nodes[1]
    status, _, _ = await cluster.fetch(deleter, "PUT", "/original/photo", data=jpeg((400, 300)), headers=JPEG)
    assert status == 201

    async def recorded() -> bool:
        # The deriving node sends it first and holds it in memory once recorded.
        return sum(node.log_count("Derived photo-100x100.jpeg") for node in cluster.nodes) == 1

    for node in cluster.nodes:
        for _ in range(2):  # the second from the node's memory
            status, _, _ = await cluster.fetch(node, "GET", "/derived/photo-100x100.jpg")
            assert status == 200
            await until(recorded, 10, "the rendition is recorded")
        # Served from memory, without asking the database: only the removal
        # signal can stop it (the counter poll is two minutes away).
        status, _, metrics = await cluster.fetch(node, "GET", "/metrics")
        assert value(parse(metrics.decode()), "pymager_rendition_cache_requests_total", result="hit") >= 1
    assert await cluster.objects()  # the original and its rendition
    status, _, _ = await cluster.fetch(deleter, "DELETE", "/original/photo")
    assert status == 204

    async def gone_from(node: Node) -> bool:
        derived, _, _ = await cluster.fetch(node, "GET", "/derived/photo-100x100.jpg")
        original, _, _ = await cluster.fetch(node, "GET", "/original/photo")
        return derived == original == 404

    async def gone_everywhere() -> bool:
        answers = await gatherResults([defer(gone_from(node)) for node in cluster.nodes])
        return all(answers)

    # One second from the delete's answer, for every node at once.
    await until(gone_everywhere, 1.0, "every node answers 404")
    assert await cluster.objects() == []


def noisy_jpeg(size: tuple[int, int]) -> bytes:
    """A JPEG of noise: large enough to be streamed, not sent whole."""
    return encode(Image.effect_noise(size, 64).convert("RGB"), "JPEG", quality=95)


def copies_on(node: Node) -> list[Path]:
    cache = node.directory / "data" / "cache"
    return [path for path in cache.rglob("*") if path.is_file() and path.name != "lock"]


@pytest_twisted.ensureDeferred
async def test_warm_reads_stay_off_the_bucket_and_a_delete_elsewhere_is_a_404_at_once(
    cluster: Cluster,
) -> None:
    uploader, reader, _ = cluster.nodes
    large, small = noisy_jpeg((800, 600)), jpeg((400, 300))
    assert len(large) > 256 * 1024  # streamed a part at a time, not read whole
    for name, data in (("large", large), ("small", small)):
        status, _, _ = await cluster.fetch(uploader, "PUT", f"/original/{name}", data=data, headers=JPEG)
        assert status == 201
    for name, data in (("large", large), ("small", small)):
        status, _, body = await cluster.fetch(reader, "GET", f"/original/{name}")
        assert (status, body) == (200, data)  # from the bucket, a copy kept

    async def copied() -> bool:
        return len(copies_on(reader)) == 2

    await until(copied, 5.0, "the reader keeps its copies")  # written after the answers
    assert copies_on(uploader) == []  # it stored them, never read them
    # The bucket cut: the reader still serves both, from its disk alone.
    reader.proxy.cut()
    connections = reader.proxy.accepted
    for name, data in (("large", large), ("small", small)):
        for _ in range(2):
            status, _, body = await cluster.fetch(reader, "GET", f"/original/{name}")
            assert (status, body) == (200, data)
    assert reader.proxy.accepted == connections  # not even a connection tried
    status, _, body = await cluster.fetch(reader, "GET", "/metrics")
    samples = parse(body.decode())
    assert value(samples, "pymager_disk_cache_requests_total", result="miss") == 2
    assert value(samples, "pymager_disk_cache_requests_total", result="hit") == 4
    # A delete on another node: a 404 here at once (NOTIFY voids what named
    # the copy), though the copy is still on this disk and the bucket cut.
    status, _, _ = await cluster.fetch(uploader, "DELETE", "/original/large")
    assert status == 204

    async def gone() -> bool:
        status, _, _ = await cluster.fetch(reader, "GET", "/original/large")
        return status == 404

    await until(gone, 1.0, "the reader answers 404")
    # Replaced on another node: the new bytes, under a new key, are read
    # from the bucket, never the old copy.
    reader.proxy.restore()
    replacement = jpeg((320, 240))
    status, _, _ = await cluster.fetch(
        uploader, "PUT", "/original/small", data=replacement, headers={**JPEG, "If-Match": "*"}
    )
    assert status == 200
    status, _, body = await cluster.fetch(reader, "GET", "/original/small")
    assert (status, body) == (200, replacement)


@pytest_twisted.ensureDeferred
async def test_concurrent_uploads_of_one_id_through_different_nodes_store_one(cluster: Cluster) -> None:
    images = [jpeg((300 + number, 200)) for number in range(6)]
    uploads = [
        cluster.fetch(cluster.nodes[number % 3], "PUT", "/original/same", data=data, headers=JPEG)
        for number, data in enumerate(images)
    ]
    answers = await gatherResults([defer(each) for each in uploads], consumeErrors=True)
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [201, 409, 409, 409, 409, 409], statuses
    assert {problem_type(body) for status, _, body in answers if status == 409} == {"id-taken"}
    stored = images[[status for status, _, _ in answers].index(201)]
    for node in cluster.nodes:
        status, _, body = await cluster.fetch(node, "GET", "/original/same")
        assert (status, body) == (200, stored)
    assert len(await cluster.objects("originals/")) == 1


@pytest_twisted.ensureDeferred
async def test_a_bucket_cut_is_a_503_and_serving_resumes_when_it_is_back(cluster: Cluster) -> None:
    first = cluster.nodes[0]
    status, _, _ = await cluster.fetch(first, "PUT", "/original/photo", data=jpeg((400, 300)), headers=JPEG)
    assert status == 201
    for node in cluster.nodes:
        node.proxy.cut()
    for number, node in enumerate(cluster.nodes):
        for method, path, options in (
            ("GET", "/derived/photo-40x30.jpg", {}),
            ("GET", "/original/photo", {}),
            ("PUT", f"/original/new{number}", {"data": jpeg((320, 240)), "headers": JPEG}),
        ):
            status, headers, body = await cluster.fetch(node, method, path, **options)
            assert status == 503, (node.name, method, path, status, body)
            assert problem_type(body) == "storage-unavailable"
            assert int(headers.getRawHeaders("retry-after")[0]) >= 1
            assert b"Signature" not in body and cluster.s3.url.encode() not in body
    for node in cluster.nodes:
        node.proxy.restore()
    # No restart: every node serves again at once.
    for number, node in enumerate(cluster.nodes):
        status, _, body = await cluster.fetch(node, "GET", "/derived/photo-40x30.jpg")
        assert status == 200
        assert opened(body).size == (40, 30)
        status, _, _ = await cluster.fetch(
            node, "PUT", f"/original/new{number}", data=jpeg((320, 240)), headers=JPEG
        )
        assert status == 201
    # Nothing half-written: every object is a row's, no upload left open.
    assert await cluster.unfinished_uploads() == []
    status, output = await cluster.admin("check")
    assert status == 0, output
    assert "consistent" in output
    assert len(await cluster.objects("originals/")) == 4


@pytest_twisted.ensureDeferred
async def test_check_after_a_kill_9_storm_finds_nothing_to_repair(cluster: Cluster) -> None:
    first, second, survivor = cluster.nodes
    doomed = (first, second)
    for number in range(6):
        status, _, _ = await cluster.fetch(
            survivor, "PUT", f"/original/old{number}", data=jpeg((640, 480)), headers=JPEG
        )
        assert status == 201
    # Uploads, derivations and deletions on every node at once; the doomed
    # nodes' bucket stalls, so that each is caught in the middle of each.
    for node in doomed:
        node.proxy.hold()
    storm = []
    for number in range(6):
        node = cluster.nodes[number % 3]
        new = jpeg((1200, 900))
        storm.append(cluster.request(node, "PUT", f"/original/new{number}", data=new, headers=JPEG))
        storm.append(cluster.request(node, "GET", f"/derived/old{number}-800x600.webp"))
        following, last = cluster.nodes[(number + 1) % 3], cluster.nodes[(number + 2) % 3]
        storm.append(cluster.request(following, "GET", f"/derived/old{number}-100x100.png"))
        if number % 2:
            storm.append(cluster.request(last, "DELETE", f"/original/old{number}"))
    names = {"a": first.owner, "b": second.owner}

    async def caught() -> bool:
        rows = await cluster.query(
            "SELECT status AS what FROM originals WHERE status != 'ready' AND owner IN (:a, :b) "
            "UNION SELECT 'claim' FROM derivation_claims WHERE owner IN (:a, :b)",
            **names,
        )
        return {row.what for row in rows} == {"pending", "deleting", "claim"}

    await until(caught, 30, "the doomed nodes are in the middle of an upload, a deletion and a derivation")
    await gatherResults([defer(node.kill()) for node in doomed])
    for node in doomed:
        node.proxy.cut()  # what they sent never reaches the bucket
    await DeferredList(storm, consumeErrors=True)

    async def lapsed() -> bool:
        rows = await cluster.query(
            "SELECT name FROM processes WHERE expires_at > now() AND name IN (:a, :b)", **names
        )
        return rows == []

    # Once their leases lapse (by the database's clock), check sees what the
    # dead left...
    await until(lapsed, 30, "the killed nodes' leases lapse")
    status, output = await cluster.admin("check", node=survivor)
    assert status == 1, output
    assert "inconsistencies" in output
    # ... and the nodes, started again, finish it, as start-up recovery does.
    for node in doomed:
        node.proxy.restore()
    await gatherResults([defer(node.start()) for node in doomed])
    recovered = "".join(node.protocol.output.decode() for node in doomed)
    assert "Finishing interrupted upload" in recovered
    assert "Finishing interrupted deletion" in recovered
    assert "Ending the claim of" in recovered
    status, output = await cluster.admin("check", node=survivor)
    assert status == 0, output
    assert "consistent" in output
    assert await cluster.unfinished_uploads() == []
    assert survivor.running


def defer(awaitable: Any) -> Deferred[Any]:
    return awaitable if isinstance(awaitable, Deferred) else ensureDeferred(awaitable)


@pytest_twisted.ensureDeferred
async def test_what_a_node_that_never_returns_left_is_finished_by_the_live_ones(
    sweeping_cluster: Cluster,
) -> None:
    cluster = sweeping_cluster
    doomed, first, second = cluster.nodes
    status, _, _ = await cluster.fetch(first, "PUT", "/original/kept", data=jpeg((640, 480)), headers=JPEG)
    assert status == 201
    # The doomed node's bucket stalls: it is caught in the middle of an
    # upload and of a derivation, and killed there for good.
    doomed.proxy.hold()
    caught_in = [
        cluster.request(doomed, "PUT", "/original/unfinished", data=jpeg((1200, 900)), headers=JPEG),
        cluster.request(doomed, "GET", "/derived/kept-100x100.png"),
    ]
    names = {"doomed": doomed.owner}

    async def caught() -> bool:
        rows = await cluster.query(
            "SELECT status AS what FROM originals WHERE owner = :doomed "
            "UNION SELECT 'claim' FROM derivation_claims WHERE owner = :doomed",
            **names,
        )
        return {row.what for row in rows} == {"pending", "claim"}

    await until(caught, 30, "the doomed node is in the middle of an upload and a derivation")
    await doomed.kill()
    doomed.proxy.cut()
    await DeferredList(caught_in, consumeErrors=True)

    # No node starts: once its lease lapses, one live node's sweep finishes it.
    async def finished() -> bool:
        left = await cluster.query(
            "SELECT image_id FROM originals WHERE status != 'ready' "
            "UNION SELECT image_id FROM derivation_claims "
            "UNION SELECT name FROM processes WHERE name = :doomed",
            **names,
        )
        return left == []

    await until(finished, 30, "the live nodes finish what the doomed node left")
    swept = [node for node in (first, second) if node.log_count("Finishing interrupted upload of unfinished")]
    assert len(swept) == 1  # one sweeper, not one per node
    assert swept[0].log_count(f"Ending the claim of {doomed.owner}") == 1
    # The acknowledged upload is there, served; nothing is left to repair.
    status, _, body = await cluster.fetch(second, "GET", "/original/kept")
    assert status == 200 and opened(body).size == (640, 480)
    status, output = await cluster.admin("check", node=first)
    assert status == 0, output
    assert "consistent" in output


@pytest_twisted.ensureDeferred
async def test_a_node_starting_against_a_stalled_bucket_gives_up_within_its_settings(
    tmp_path: Path, s3_server: S3Server, postgres_server_url: str
) -> None:
    # A bucket that takes connections and never answers: start-up's first
    # request to it (HeadBucket) is tried max_attempts times, read_timeout
    # each, and start-up fails saying so: not one attempt more.
    proxy = TcpProxy(upstream_port(s3_server))
    port = await proxy.listen()
    proxy.hold()
    config = tmp_path / "pymager.toml"
    config.write_text(
        node_settings(
            tmp_path, s3_server, port, "stalled", postgres_server_url, s3_changes={"read_timeout": 1.0}
        )
    )
    protocol, process = spawn(tmp_path, "--config", str(config))
    try:
        exit_code = await protocol.ended.addTimeout(60, reactor)
    finally:
        if not protocol.ended.called:
            process.signalProcess(signal.SIGKILL)
        await proxy.close()
    output = protocol.output.decode(errors="replace")
    assert exit_code == 1, output
    assert "pymager-tx could not start" in output and "HeadBucket" in output
    assert proxy.accepted == 2  # max_attempts = 2
