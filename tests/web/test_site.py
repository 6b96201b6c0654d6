"""The Site, driven byte by byte over an in-memory transport."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent
from twisted.web.resource import Resource
from twisted.web.server import Request

from pymager_tx.http.guards import FORM_OVERHEAD_BYTES, WriteTokens
from pymager_tx.http.site import PymagerSite

LIMIT = 1000


class Echo(Resource):
    """Answers with the length of the body it was given."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.content.seek(0)
        return b"received %d" % len(request.content.read())


class Connection:
    def __init__(self, trust_forwarded_for: bool = False, tokens: tuple[str, ...] = ()) -> None:
        self.reactor = MemoryReactorClock()
        site = PymagerSite(
            Echo(),
            max_upload_bytes=LIMIT,
            reactor=self.reactor,
            trust_forwarded_for=trust_forwarded_for,
            tokens=WriteTokens(tokens),
        )
        self.channel: Any = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    @property
    def answer(self) -> bytes:
        return bytes(self.transport.value())


def problem(answer: bytes) -> dict[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/problem+json" in head
    document: dict[str, Any] = json.loads(body)
    return document


BODY_LIMIT = LIMIT + FORM_OVERHEAD_BYTES


def test_a_body_within_the_limit_reaches_the_resource() -> None:
    connection = Connection()
    body = b"x" * BODY_LIMIT
    connection.send(b"PUT /original/a HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert connection.answer.startswith(b"HTTP/1.1 200")
    assert connection.answer.endswith(b"received %d" % len(body))


def test_a_declared_length_over_the_limit_is_refused_before_any_body() -> None:
    connection = Connection()
    connection.send(
        b"PUT /original/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
        % (BODY_LIMIT + 1)
    )
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer
    assert b"Connection: close" in answer
    assert (
        problem(answer)["detail"]
        == f"the request body is {BODY_LIMIT + 1} bytes; uploads are limited to {LIMIT}"
    )


def test_a_streamed_body_is_refused_once_it_passes_the_limit() -> None:
    connection = Connection()
    connection.send(b"POST /original/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"y" * 40_000
    for _ in range(BODY_LIMIT // len(chunk)):
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert connection.answer == b""  # nothing said while within the limit
    connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert connection.answer.startswith(b"HTTP/1.1 413 ")
    assert problem(connection.answer)["status"] == 413


def test_the_rest_of_a_refused_body_is_dropped_then_the_connection_closes() -> None:
    connection = Connection()
    connection.send(b"PUT /original/a HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (BODY_LIMIT * 3))
    refusal = connection.answer
    connection.send(b"z" * (BODY_LIMIT * 3))
    # The resource never runs, nothing more is written, and the connection
    # ends gracefully (not aborted) once the client has sent everything.
    assert connection.answer == refusal
    assert connection.transport.disconnecting
    assert not connection.transport.disconnected


def test_a_client_that_keeps_sending_is_cut_off() -> None:
    connection = Connection()
    connection.send(b"PUT /original/a HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000000\r\n\r\n")
    connection.send(b"z" * 10_000)
    assert not connection.transport.disconnecting
    connection.reactor.advance(5)
    assert connection.transport.disconnected


def test_each_request_is_logged_as_a_structured_event(log_events: list[LogEvent]) -> None:
    connection = Connection()
    connection.send(b"GET /derived/a-1x1.jpg HTTP/1.1\r\nHost: h\r\nUser-Agent: treq\r\n\r\n")
    [event] = [e for e in log_events if e.get("log_namespace") == "pymager_tx.access"]
    assert (event["client"], event["method"], event["uri"], event["status"]) == (
        "192.0.2.7",
        "GET",
        "/derived/a-1x1.jpg",
        200,
    )
    assert event["agent"] == "treq"


@pytest.mark.parametrize(("trust", "client"), [(False, "192.0.2.7"), (True, "203.0.113.9")])
# The client claims 10.0.0.1; the proxy appends the address it saw.
def test_forwarded_for_is_logged_only_when_trusted(
    log_events: list[LogEvent], trust: bool, client: str
) -> None:
    connection = Connection(trust_forwarded_for=trust)
    connection.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1, 203.0.113.9\r\n\r\n")
    [event] = [e for e in log_events if e.get("log_namespace") == "pymager_tx.access"]
    assert event["client"] == client


def test_refusals_are_logged(log_events: list[LogEvent]) -> None:
    connection = Connection()
    connection.send(b"PUT /original/a HTTP/1.1\r\nHost: h\r\nContent-Length: 999999\r\n\r\n")
    [event] = [e for e in log_events if e.get("log_namespace") == "pymager_tx.access"]
    assert (event["method"], event["uri"], event["status"]) == ("PUT", "/original/a", 413)


@pytest.mark.parametrize(
    ("sent", "status", "method", "uri"),
    [
        # Malformed HTTP: a header line without a colon.
        (b"GET /x HTTP/1.1\r\nUser-Agent: probe/1\r\nno colon here\r\n\r\n", 400, "GET", "/x"),
        # A request line longer than the channel takes.
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n", 400, "-", "-"),
        # Not HTTP at all.
        (b"\x16\x03\x01 hello\r\n\r\n", 400, "-", "-"),
    ],
    ids=["bad-header", "line-too-long", "not-http"],
)
def test_every_refusal_before_routing_has_its_access_line(
    log_events: list[LogEvent], sent: bytes, status: int, method: str, uri: str
) -> None:
    connection = Connection()
    connection.send(sent)
    [event] = [e for e in log_events if e.get("log_namespace") == "pymager_tx.access"]
    assert (event["method"], event["uri"], event["status"]) == (method, uri, status)
    assert event["length"] == len(connection.transport.value())
    assert event["client"] == "192.0.2.7"
    assert event["agent"] == ("probe/1" if method == "GET" else "-")
    assert event["duration_ms"] >= 0


TOKEN = "site-token-0123456789"


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (b"", b'Bearer realm="pymager"'),
        (b"Authorization: Bearer guessed-token-0000\r\n", b'error="invalid_token"'),
    ],
)
def test_a_body_without_a_valid_token_is_refused_before_it_is_read(
    authorization: bytes, challenge: bytes
) -> None:
    connection = Connection(tokens=(TOKEN,))
    connection.send(
        b"PUT /original/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n%sContent-Length: 500\r\n\r\n"
        % authorization
    )
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"100 Continue" not in answer
    assert challenge in answer.partition(b"\r\n\r\n")[0]
    # Never cached, as the routes' refusals (the fuzzing of CI found it missing).
    assert b"\r\nCache-Control: no-store\r\n" in answer.partition(b"\r\n\r\n")[0]
    assert problem(answer)["status"] == 401


def test_a_body_with_a_valid_token_is_read() -> None:
    connection = Connection(tokens=(TOKEN,))
    connection.send(
        b"PUT /original/a HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\r\nContent-Length: 3\r\n\r\nabc"
        % TOKEN.encode()
    )
    assert connection.answer.startswith(b"HTTP/1.1 200")
    assert connection.answer.endswith(b"received 3")


def test_requests_without_a_body_pass_to_the_routes() -> None:
    # Reads never need a token; a DELETE's token is checked by its route.
    connection = Connection(tokens=(TOKEN,))
    connection.send(b"DELETE /original/a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert connection.answer.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["request line", "two lengths", "bad chunk", "long header", "long path"],
)
def test_malformed_http_gets_a_problem_document(request_bytes: bytes) -> None:
    connection = Connection()
    connection.send(request_bytes)
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nCache-Control: no-store\r\n" in answer.partition(b"\r\n\r\n")[0]
    assert problem(answer)["status"] == 400
    assert connection.transport.disconnecting


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"DELETE"])
def test_a_request_for_the_whole_server_is_options_only(method: bytes) -> None:
    connection = Connection()
    connection.send(method + b" * HTTP/1.1\r\nHost: h\r\n\r\n")
    answer = connection.answer
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nAllow: OPTIONS\r\n" in answer
    if method != b"HEAD":
        assert problem(answer)["status"] == 405


def test_options_for_the_whole_server_is_answered() -> None:
    connection = Connection()
    connection.send(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert connection.answer.startswith(b"HTTP/1.1 200 OK\r\n")
