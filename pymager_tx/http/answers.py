"""Problem answers (application/problem+json, RFC 9457): on a request, or
as a whole response written before any request object can answer."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.http import RESPONSES
from twisted.web.iweb import IRequest

from pymager_tx.core.problems import Problem, problem_body


def header_text(request: IRequest, name: bytes) -> str | None:
    """A request header's value as text (Latin-1, as HTTP/1.1 allows)."""
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def answer_with_problem(request: IRequest, problem: Problem, detail: str) -> bytes:
    """Set request's status and headers for problem; the body to send."""
    request.setResponseCode(problem.status)
    request.setHeader(b"Content-Type", b"application/problem+json")
    request.setHeader(b"Cache-Control", b"no-store")
    body = problem_body(problem, detail)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def refusal(problem: Problem, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response refusing a request, closing the connection."""
    body = problem_body(problem, detail)
    head = [b"HTTP/1.1 %d %s" % (problem.status, RESPONSES[problem.status])]
    for name, value in [
        *headers,
        (b"Content-Type", b"application/problem+json"),
        (b"Cache-Control", b"no-store"),
        (b"Content-Length", b"%d" % len(body)),
        (b"Connection", b"close"),
    ]:
        head.append(name + b": " + value)
    return b"\r\n".join(head) + b"\r\n\r\n" + body
