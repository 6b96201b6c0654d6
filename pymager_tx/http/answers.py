"""Problem answers (application/problem+json, RFC 9457) on a request."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from pymager_tx.core.problems import Problem, problem_body


def answer_with_problem(request: IRequest, problem: Problem, detail: str) -> bytes:
    """Set request's status and headers for problem; the body to send."""
    request.setResponseCode(problem.status)
    request.setHeader(b"Content-Type", b"application/problem+json")
    request.setHeader(b"Cache-Control", b"no-store")
    body = problem_body(problem, detail)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body
