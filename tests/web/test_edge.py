"""The HTTP edge under hostile load: bodies on disk and limited in number,
deadlines, pipelines that wait for their client, connections bounded.

Driven through the real Site and HTTPChannel over in-memory transports, with
the site's clock advanced by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from pymager_tx.http.connections import with_backlog
from pymager_tx.http.requests import IN_MEMORY_BODY_BYTES
from pymager_tx.http.site import PymagerSite
from pymager_tx.http.turns import is_probe

LIMIT = 10 * 1024 * 1024
LARGE = 3 * IN_MEMORY_BODY_BYTES


class Echo(Resource):
    """Answers with the length of the body it was given, and remembers the
    paths it saw."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[bytes] = []

    def render(self, request: Request) -> bytes:
        self.paths.append(request.path)
        assert request.content is not None
        request.content.seek(0)
        return b"received %d" % len(request.content.read())


class Later(Resource):
    """Answers only when the test says so."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Request] = []

    def render(self, request: Request) -> Any:
        self.waiting.append(request)
        return NOT_DONE_YET

    def answer(self) -> None:
        request = self.waiting.pop(0)
        request.write(b"done " + request.path)
        request.finish()


class Site:
    def __init__(self, resource: Resource | None = None, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.resource = resource or Echo()
        self.site = PymagerSite(self.resource, max_upload_bytes=LIMIT, reactor=self.reactor, **options)

    def connect(self) -> Connection:
        return Connection(self)


class Connection:
    def __init__(self, site: Site) -> None:
        address = IPv4Address("TCP", "192.0.2.7", 40000)
        self.channel: Any = site.site.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    @property
    def answer(self) -> bytes:
        return bytes(self.transport.value())

    def close(self) -> None:
        self.channel.connectionLost(ConnectionError("gone"))


def problem(answer: bytes) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/problem+json" in head
    assert b"Connection: close" in head
    document: dict[str, Any] = json.loads(body)
    return document


def put_head(length: int, path: bytes = b"/original/a") -> bytes:
    return b"PUT %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (path, length)


def files_open_in(directory: Path) -> int:
    """Descriptors of this process open on files in directory (unnamed ones
    included: /proc shows them as "directory/#123 (deleted)")."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(f"{directory}/"):
            count += 1
    return count


def turn(clock: MemoryReactorClock) -> None:
    """One reactor turn: the calls due now, not those they schedule (which a
    real reactor runs on its next turn, and Clock.advance at once)."""
    due = [call for call in clock.calls if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


# Uploads on disk, bounded in number


@needs_proc
def test_a_large_body_is_spooled_to_an_unnamed_file_gone_when_the_request_ends(tmp_path: Path) -> None:
    site = Site(upload_directory=tmp_path)
    connection = site.connect()
    connection.send(put_head(LARGE) + b"x" * (LARGE - 1))
    assert files_open_in(tmp_path) == 1
    assert os.listdir(tmp_path) == []  # nothing named, so nothing left by a crash
    connection.send(b"x")
    assert connection.answer.endswith(b"received %d" % LARGE)
    assert files_open_in(tmp_path) == 0


@needs_proc
def test_a_small_body_stays_in_memory(tmp_path: Path) -> None:
    connection = Site(upload_directory=tmp_path).connect()
    connection.send(put_head(IN_MEMORY_BODY_BYTES) + b"x" * (IN_MEMORY_BODY_BYTES - 1))
    assert files_open_in(tmp_path) == 0


@needs_proc
def test_the_spooled_body_is_removed_when_the_client_goes(tmp_path: Path) -> None:
    site = Site(upload_directory=tmp_path)
    connection = site.connect()
    connection.send(put_head(LARGE) + b"x" * (LARGE - 1))
    connection.close()
    assert files_open_in(tmp_path) == 0
    assert site.site.gate.uploads == 0


def test_uploads_past_max_uploads_are_refused_at_once_with_503() -> None:
    site = Site(max_uploads=2)
    first, second, third = site.connect(), site.connect(), site.connect()
    first.send(put_head(10) + b"12345")
    second.send(put_head(10) + b"12345")
    third.send(b"PUT /original/c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
    answer = third.answer
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"100 Continue" not in answer
    assert b"\r\nRetry-After: 2\r\n" in answer
    document = problem(answer)
    assert document["type"] == "/problems/overloaded"
    assert "2 uploads" in document["detail"]
    # A body in progress is never refused for the ones after it.
    first.send(b"67890")
    assert first.answer.endswith(b"received 10")


def test_an_upload_slot_is_given_back_when_its_request_ends_however_it_ends() -> None:
    site = Site(max_uploads=1)
    finished = site.connect()
    finished.send(put_head(2) + b"ok")
    assert finished.answer.endswith(b"received 2")
    abandoned = site.connect()
    abandoned.send(put_head(10) + b"12345")
    abandoned.close()
    last = site.connect()
    last.send(put_head(2) + b"ok")
    assert last.answer.endswith(b"received 2")


def test_requests_without_a_body_take_no_upload_slot() -> None:
    site = Site(max_uploads=1)
    site.connect().send(put_head(10) + b"12345")
    reader = site.connect()
    reader.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reader.answer.startswith(b"HTTP/1.1 200 ")


# Deadlines


def test_headers_must_all_arrive_within_header_timeout_of_the_first_byte() -> None:
    site = Site(header_timeout=10.0, idle_timeout=60.0)
    connection = site.connect()
    # One byte every 5 seconds keeps the connection from being idle...
    connection.send(b"G")
    site.reactor.advance(5.0)
    connection.send(b"E")
    site.reactor.advance(4.9)
    assert connection.answer == b""
    site.reactor.advance(0.1)
    # ...but not from the header deadline.
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert problem(answer)["type"] == "/problems/request-timeout"
    assert connection.transport.disconnecting


def test_the_header_deadline_starts_with_a_request_not_with_the_connection() -> None:
    site = Site(header_timeout=10.0, idle_timeout=60.0)
    connection = site.connect()
    site.reactor.advance(30.0)
    connection.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    site.reactor.advance(30.0)  # idle between requests: idle_timeout's business
    assert connection.answer.startswith(b"HTTP/1.1 200 ")
    assert not connection.transport.disconnecting
    connection.send(b"GET /again HTTP/1.1\r\n")
    site.reactor.advance(10.0)
    assert b"HTTP/1.1 408 " in connection.answer


@needs_proc
def test_a_body_must_arrive_within_body_timeout_of_its_headers(tmp_path: Path) -> None:
    site = Site(body_timeout=300.0, upload_directory=tmp_path)
    connection = site.connect()
    connection.send(put_head(1024 * 1024))
    for _ in range(299):
        connection.send(b"x" * 1024)  # 1 KB/s
        site.reactor.advance(1.0)
    assert connection.answer == b""
    assert files_open_in(tmp_path) == 1
    site.reactor.advance(1.0)
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert "body" in problem(answer)["detail"]
    assert connection.transport.disconnecting
    assert files_open_in(tmp_path) == 0
    assert site.site.gate.uploads == 0


def test_a_body_that_arrives_in_time_is_answered_and_the_deadline_forgotten() -> None:
    site = Site(body_timeout=5.0)
    connection = site.connect()
    connection.send(put_head(4) + b"ab")
    site.reactor.advance(4.0)
    connection.send(b"cd")
    site.reactor.advance(10.0)
    assert connection.answer.endswith(b"received 4")
    assert not connection.transport.disconnecting


def test_a_request_refused_as_malformed_gets_no_timeout_answer_after_it() -> None:
    site = Site(body_timeout=5.0)
    connection = site.connect()
    connection.send(b"PUT /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    site.reactor.advance(10.0)
    assert connection.answer.startswith(b"HTTP/1.1 400 ")
    assert b" 408 " not in connection.answer


# Pipelines


def test_a_pipeline_is_answered_one_request_per_reactor_turn() -> None:
    site = Site()
    connection = site.connect()
    connection.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" * 3)
    assert connection.answer.count(b"HTTP/1.1 200") == 1
    turn(site.reactor)
    assert connection.answer.count(b"HTTP/1.1 200") == 2
    turn(site.reactor)
    assert connection.answer.count(b"HTTP/1.1 200") == 3


def test_buffered_requests_wait_while_the_client_reads_no_answers() -> None:
    later = Later()
    site = Site(later)
    connection = site.connect()
    connection.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r.path for r in later.waiting] == [b"/1"]
    # The transport's buffer is full: it pauses its producer, the channel.
    connection.channel.pauseProducing()
    later.answer()
    site.reactor.advance(0)
    assert later.waiting == []
    assert connection.transport.producerState == "paused"
    # Data arriving meanwhile stays behind the held request.
    connection.send(b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
    site.reactor.advance(0)
    assert later.waiting == []
    connection.channel.resumeProducing()
    assert later.waiting == []  # on a later turn, not inside the transport's call
    site.reactor.advance(0)
    assert [r.path for r in later.waiting] == [b"/2"]
    later.answer()
    site.reactor.advance(0)
    assert [r.path for r in later.waiting] == [b"/3"]
    later.answer()
    assert connection.answer.index(b"done /2") < connection.answer.index(b"done /3")


def test_a_client_that_never_reads_its_pipeline_is_timed_out() -> None:
    later = Later()
    site = Site(later, idle_timeout=60.0)
    connection = site.connect()
    connection.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    connection.channel.pauseProducing()
    later.answer()
    site.reactor.advance(60.0)
    assert connection.transport.disconnecting


# Connections


class Feed:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def test_past_max_connections_the_feed_pauses_until_one_closes() -> None:
    site = Site(max_connections=2)
    feed = Feed()
    site.site.connections.fed_by(feed)
    first = site.connect()
    first.send(b"GET / HTTP/1.1\r\n")  # a request under way: not idle
    assert feed.calls == []
    second = site.connect()
    second.send(b"GET / HTTP/1.1\r\n")
    assert feed.calls == ["pause"]
    # One taken in the same accept batch is closed at once (no protocol).
    assert site.site.buildProtocol(IPv4Address("TCP", "192.0.2.8", 40001)) is None
    first.close()
    assert feed.calls == ["pause", "resume"]
    assert site.connect().channel is not None


def test_at_max_connections_the_longest_idle_one_makes_room_for_a_new_one() -> None:
    site = Site(max_connections=3)
    feed = Feed()
    site.site.connections.fed_by(feed)
    silent = site.connect()  # never sends a byte
    working = site.connect()
    working.send(b"GET / HTTP/1.1\r\n")
    kept_alive = site.connect()
    kept_alive.send(b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n")  # answered, now idle
    assert b"200" in kept_alive.answer
    newcomer = site.connect()
    # The silent one, idle longest, was closed for it; nobody waits.
    assert silent.transport.disconnecting
    assert not working.transport.disconnecting and not kept_alive.transport.disconnecting
    silent.close()
    assert feed.calls == []
    site.connect()  # then the keep-alive connection between its requests
    assert kept_alive.transport.disconnecting
    assert not working.transport.disconnecting and not newcomer.transport.disconnecting


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("tcp:8000", "tcp:8000:backlog=1024"),
        ("tcp:8000:interface=127.0.0.1", "tcp:8000:interface=127.0.0.1:backlog=1024"),
        ("tcp6:8000", "tcp6:8000:backlog=1024"),
        ("unix:/run/pymager.sock", "unix:/run/pymager.sock:backlog=1024"),
        ("tcp:8000:backlog=64", "tcp:8000:backlog=64"),
        ("ssl:8443:privateKey=k.pem", "ssl:8443:privateKey=k.pem"),
    ],
)
def test_the_backlog_is_added_unless_the_endpoint_names_one(listen: str, expected: str) -> None:
    assert with_backlog(listen, 1024) == expected


# Smaller defects


@pytest.mark.parametrize(
    "codings",
    [
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
    ],
    ids=["chunked then identity", "identity then chunked", "identity", "gzip"],
)
def test_only_chunked_alone_is_a_transfer_coding(codings: bytes) -> None:
    site = Site()
    connection = site.connect()
    connection.send(b"PUT /a HTTP/1.1\r\nHost: h\r\n" + codings + b"\r\n2\r\nok\r\n0\r\n\r\n")
    assert connection.answer.startswith(b"HTTP/1.1 400 ")
    assert problem(connection.answer)["status"] == 400
    assert connection.transport.disconnecting
    assert site.resource.paths == []  # type: ignore[attr-defined]


def test_chunked_still_works() -> None:
    connection = Site().connect()
    connection.send(b"PUT /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert connection.answer.endswith(b"received 2")


@pytest.mark.parametrize(
    "head",
    [b"GET /a HTTP/1.1\r\n\r\n", b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"],
    ids=["none", "two"],
)
def test_an_http_1_1_request_needs_exactly_one_host(head: bytes) -> None:
    site = Site()
    connection = site.connect()
    connection.send(head + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert "Host" in problem(answer)["detail"]
    assert connection.transport.disconnecting
    assert site.resource.paths == []  # type: ignore[attr-defined]


def test_an_http_1_0_request_may_omit_host() -> None:
    connection = Site().connect()
    connection.send(b"GET /a HTTP/1.0\r\n\r\n")
    assert connection.answer.startswith(b"HTTP/1.0 200 ")


@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\n", b"GET / HTTP/1.1\r\nHost: h\nX: y\n\n"])
def test_a_bare_line_feed_is_refused_at_once(head: bytes) -> None:
    connection = Site().connect()
    connection.send(head)
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert "bare LF" in problem(answer)["detail"]
    assert connection.transport.disconnecting


def test_a_crlf_split_between_packets_is_no_bare_line_feed() -> None:
    connection = Site().connect()
    connection.send(b"GET / HTTP/1.1\r")
    connection.send(b"\nHost: h\r\n\r\n")
    assert connection.answer.startswith(b"HTTP/1.1 200 ")


def test_control_characters_reach_the_access_log_escaped(log_events: list[LogEvent]) -> None:
    connection = Site().connect()
    # Twisted refuses ESC in the request line itself, not DEL.
    connection.send(
        b"GET /a\x7f HTTP/1.1\r\nHost: h\r\nUser-Agent: evil\x1b]0;x\x07\r\nReferer: \x1b[2J\x01\r\n\r\n"
    )
    [event] = [e for e in log_events if e.get("log_namespace") == "pymager_tx.access"]
    assert event["uri"] == "/a\\x7f"
    assert event["agent"] == "evil\\x1b]0;x\\x07"
    assert event["referrer"] == "\\x1b[2J\\x01"


def test_the_private_twisted_hooks_overridden_still_exist() -> None:
    # ProblemChannel overrides or reads these; a Twisted upgrade that renames
    # one would silently undo a protection.
    for name in (
        "_maybeChooseTransferDecoder",
        "_failChooseTransferDecoder",
        "_respondToBadRequestAndDisconnect",
        "_waitingForTransport",
        "_savedTimeOut",
        "_busyReceiving",
    ):
        assert hasattr(HTTPChannel, name), name
    channel = HTTPChannel()
    for name in ("_handlingRequest", "_dataBuffer", "_buffer"):
        assert hasattr(channel, name), name


class TestTurns:
    """A burst is started a turn's budget at a time; later arrivals are not
    stuck behind it."""

    def test_a_burst_starts_at_most_a_budget_per_turn_in_arrival_order(self) -> None:
        site = Site(Echo())
        budget = site.site.turns.per_turn
        burst = [site.connect() for _ in range(2 * budget + 3)]
        for index, connection in enumerate(burst):
            connection.send(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % index)
        assert len(site.resource.paths) == budget
        turn(site.reactor)
        assert len(site.resource.paths) == 2 * budget
        turn(site.reactor)
        assert site.resource.paths == [b"/%d" % index for index in range(len(burst))]
        assert all(b" 200 OK" in connection.answer for connection in burst)

    def test_a_request_arriving_after_a_burst_starts_in_its_own_turn(self) -> None:
        site = Site(Echo())
        budget = site.site.turns.per_turn
        for index in range(3 * budget):
            site.connect().send(b"GET /burst/%d HTTP/1.1\r\nHost: h\r\n\r\n" % index)
        turn(site.reactor)
        assert site.site.turns.waiting == budget
        late = site.connect()
        late.send(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        assert site.resource.paths[-1] == b"/healthz"
        assert b"received 0" in late.answer

    def test_a_probe_in_a_bursts_turn_does_not_wait_behind_the_burst(self) -> None:
        site = Site(Echo())
        budget = site.site.turns.per_turn
        for index in range(3 * budget):
            site.connect().send(b"GET /burst/%d HTTP/1.1\r\nHost: h\r\n\r\n" % index)
        # The same turn: the burst's budget is spent, the probes' is not.
        probes = [site.connect() for _ in range(2)]
        probes[0].send(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        probes[1].send(b"HEAD /readyz?verbose HTTP/1.1\r\nHost: h\r\n\r\n")
        assert site.resource.paths[budget:] == [b"/healthz", b"/readyz"]
        assert site.site.turns.waiting == 2 * budget

    def test_a_flood_of_probes_is_bounded_and_goes_first_in_the_next_turn(self) -> None:
        site = Site(Echo())
        budget = site.site.turns.per_turn
        for index in range(budget + 1):
            site.connect().send(b"GET /burst/%d HTTP/1.1\r\nHost: h\r\n\r\n" % index)
        for _ in range(budget + 1):
            site.connect().send(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        assert len(site.resource.paths) == 2 * budget
        turn(site.reactor)
        assert site.resource.paths[2 * budget :] == [b"/healthz", b"/burst/%d" % budget]
        # Not a probe, though it starts like one.
        assert not is_probe(b"GET /healthzz HTTP/1.1") and not is_probe(b"POST /healthz HTTP/1.1")

    def test_a_waiting_connection_that_leaves_is_skipped(self) -> None:
        site = Site(Echo())
        budget = site.site.turns.per_turn
        for index in range(budget):
            site.connect().send(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % index)
        gone = site.connect()
        gone.send(b"GET /gone HTTP/1.1\r\nHost: h\r\n\r\n")
        gone.close()
        turn(site.reactor)
        assert b"/gone" not in site.resource.paths
        assert site.site.turns.waiting == 0


def test_an_upload_directory_gone_under_the_server_is_a_503_not_a_dropped_connection(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    site = Site(upload_directory=uploads)
    connection = site.connect()
    uploads.rmdir()  # as an operator's cleanup might, while serving
    connection.send(put_head(LARGE) + b"x" * (IN_MEMORY_BODY_BYTES + 1))
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nRetry-After: 5\r\n" in answer
    document = problem(answer)
    assert document["type"] == "/problems/storage-unavailable"
    assert str(tmp_path) not in document["detail"]  # paths go to the log only
    assert site.site.gate.uploads == 0
