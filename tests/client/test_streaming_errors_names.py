"""Streamed reads, the problem-type table, and derived names and URLs."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from pymager_tx.client import (
    ERRORS,
    BadRequest,
    NotFound,
    OriginalLost,
    ProblemError,
    PymagerClient,
    ServiceUnavailable,
    TooManyPixels,
)
from pymager_tx.client.errors import error_for
from pymager_tx.core import errors as core
from pymager_tx.core import problems
from tests.client.harness import BASE, Harness
from tests.client.scripted import Scripted, held


def test_a_streamed_image_reaches_the_sink_as_it_arrives() -> None:
    answers: list[Request] = []
    harness = Harness(Scripted([held(answers)]))
    parts: list[bytes] = []
    streamed = harness.client.stream_derived("photo", 100, 100, "png", sink=parts.append)
    harness.settle()
    [answer] = answers
    answer.setHeader(b"Content-Type", b"image/png")
    answer.setHeader(b"Content-Length", b"6")
    answer.write(b"abc")
    harness.settle()
    # The first part is handed over while the rest is still to come.
    assert parts == [b"abc"] and not streamed.called
    answer.write(b"def")
    answer.finish()
    info = harness.result(streamed)
    assert parts == [b"abc", b"def"]
    assert (info.media_type, info.length) == ("image/png", 6)


def test_a_stream_into_a_file() -> None:
    answers: list[Request] = []
    harness = Harness(Scripted([held(answers)]))
    target = io.BytesIO()
    streamed = harness.client.stream_original("photo", target)
    harness.settle()
    answers[0].write(b"x" * 100_000)
    answers[0].finish()
    harness.result(streamed)
    assert target.getvalue() == b"x" * 100_000


def _all_core_problems() -> list[problems.Problem]:
    return [
        *problems.PROBLEMS.values(),
        *(p for p in vars(problems).values() if isinstance(p, problems.Problem)),
    ]


@pytest.mark.parametrize("problem", _all_core_problems(), ids=lambda p: p.slug)
def test_every_problem_type_of_the_core_has_its_exception(problem: problems.Problem) -> None:
    kind = ERRORS[problem.slug]
    assert kind.problem is not None and kind.problem.status == problem.status
    headers = Headers({"Content-Type": ["application/problem+json"], "Retry-After": ["7"]})
    body = (
        f'{{"type": "/problems/{problem.slug}", "title": "{problem.title}", '
        f'"status": {problem.status}, "detail": "why", "instance": "/x"}}'
    ).encode()
    error = error_for(problem.status, "", headers, body)
    assert type(error) is kind
    assert (error.status, error.title, error.detail) == (problem.status, problem.title, "why")
    assert error.document.extensions == {"instance": "/x"}
    assert error.document.slug == problem.slug
    if problem.status == 503:
        assert isinstance(error, ServiceUnavailable) and error.retry_after == 7


def test_client_errors_are_the_cores_domain_errors() -> None:
    for core_kind, problem in problems.PROBLEMS.items():
        if core_kind is core.DerivedNameInvalid:
            continue  # answered as not-found: the client's NotFound is an ImageNotFound
        assert issubclass(ERRORS[problem.slug], core_kind), problem.slug
    assert issubclass(OriginalLost, NotFound) and issubclass(TooManyPixels, core.InvalidImage)
    assert not issubclass(BadRequest, core.InvalidImage)


def answer(status: int, body: bytes, content_type: str = "application/problem+json") -> ProblemError:
    return error_for(status, "Bad Gateway", Headers({"Content-Type": [content_type]}), body)


def test_unknown_problem_types_and_other_answers_are_generic() -> None:
    unknown = answer(418, b'{"type": "/problems/teapot", "title": "Teapot", "status": 418, "detail": "t"}')
    assert type(unknown) is ProblemError and unknown.status == 418 and unknown.type == "/problems/teapot"
    # A known type with another status than the core gives it is not ours.
    odd = answer(500, b'{"type": "/problems/not-found", "title": "x", "status": 500, "detail": "d"}')
    assert type(odd) is ProblemError
    gateway = answer(502, b"<html>bad gateway</html>", "text/html")
    assert type(gateway) is ProblemError
    assert gateway.document.type == "about:blank"
    assert (gateway.status, gateway.title, gateway.detail) == (502, "Bad Gateway", "<html>bad gateway</html>")
    assert type(answer(503, b"busy", "text/plain")) is ServiceUnavailable
    assert type(answer(404, b"not json")) is ProblemError


def client(**options: Any) -> PymagerClient:
    return Harness(Scripted([]), **options).client


def test_derived_names_and_urls_follow_the_cores_grammar() -> None:
    c = client()
    assert c.derived_name("photo", 100, 100, "jpg") == "photo-100x100.jpg"
    assert c.derived_name("my-photo-2", 800, 600, "WEBP", "fit") == "my-photo-2-800x600-fit.WEBP"
    assert c.derived_url("photo", 40, 30, "png", "pad") == f"{BASE}/derived/photo-40x30-pad.png"
    assert c.derived_url("photo", 40, 30, "png", "crop") == f"{BASE}/derived/photo-40x30.png"
    assert c.original_url("photo") == f"{BASE}/original/photo"
    with pytest.raises(core.InvalidImageId):
        c.derived_url("bad id", 100, 100, "jpg")
    assert c.derived_url("photo", 100, 0, "jpg") == f"{BASE}/derived/photo-100x0.jpg"
    with pytest.raises(core.SizeOutOfBounds):
        c.derived_url("photo", 0, 0, "jpg")
    with pytest.raises(core.DerivedNameInvalid):
        c.derived_url("photo", -1, 100, "jpg")
    with pytest.raises(core.DerivedNameInvalid):
        c.derived_url("photo", 100_000, 100, "jpg")
    with pytest.raises(core.UnsupportedOutputFormat):
        c.derived_url("photo", 100, 100, "exe")
    with pytest.raises(core.InvalidImageId):
        c.original_url("../etc")


def test_a_signer_puts_its_signature_before_the_name() -> None:
    signed = client(signer=lambda name: f"sig-of-{name.split('.')[0]}")
    assert (
        signed.derived_url("photo", 100, 100, "jpg")
        == f"{BASE}/derived/sig-of-photo-100x100/photo-100x100.jpg"
    )


def test_signed_requests_ask_for_the_signed_path() -> None:
    script = Scripted([lambda request: b"img"])
    harness = Harness(script, signer=lambda name: "SIG")
    harness.result(harness.client.get_derived("photo", 100, 100, "jpg"))
    assert script.asked[0].path == "/derived/SIG/photo-100x100.jpg"
