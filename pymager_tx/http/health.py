"""
/healthz and /readyz: liveness for systemd, readiness for load balancers.
"""

from __future__ import annotations

import json

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pymager_tx.app.api import ImageServiceAPI
from pymager_tx.core.errors import Overloaded, Unavailable
from pymager_tx.core.problems import UNAVAILABLE, problem_for
from pymager_tx.http.answers import answer_with_problem

log = Logger()


async def answer_health(request: IRequest, service: ImageServiceAPI, ready: bool) -> bytes:
    """200 with the image threads' load while the database answers (ready:
    and the blob store stores a probe, and the image queue is not full)."""
    load = service.image_load()
    if ready and load is not None and load["full"]:
        request.setHeader(b"Retry-After", b"%d" % Overloaded.retry_after)
        detail = f"every image thread is busy and {load['queued']} jobs wait; send work elsewhere"
        return answer_with_problem(request, problem_for(Overloaded(detail)), detail)
    try:
        await (service.check_ready() if ready else service.check_health())
    except CancelledError:
        raise  # the client left: nothing failed
    except Unavailable as error:
        log.warn("Health check failed: {reason}", reason=error.reason)
        request.setHeader(b"Retry-After", b"%d" % error.retry_after)
        return answer_with_problem(request, problem_for(error), error.detail)
    except Exception:
        log.failure("Health check failed")
        request.setHeader(b"Retry-After", b"%d" % Unavailable.retry_after)
        return answer_with_problem(request, UNAVAILABLE, "the metadata database does not answer")
    request.setHeader(b"Cache-Control", b"no-store")
    document: dict[str, object] = {"status": "ok"}
    if load is not None:
        document["images"] = load
    body = json.dumps(document).encode("utf-8")
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body
