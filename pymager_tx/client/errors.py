"""
Refusals of the service, as exceptions: one class for every problem type
the core names (pymager_tx.core.problems), each carrying the problem
document it came with.

Every class is also the core's domain error for the same reason where one
exists (the client's IdTaken is a pymager_tx.core.errors.ImageIdTaken), so a
program that works through the HTTP API or straight on the store catches
the same exceptions.  A problem type this client does not know, or an error
answer that is not a problem document (a proxy's 502, say), is the generic
ProblemError with its status; any 503 is a ServiceUnavailable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from twisted.web.http_headers import Headers

from pymager_tx.core import errors as core
from pymager_tx.core import problems
from pymager_tx.core.problems import PROBLEMS, Problem

PROBLEM_MEDIA_TYPE = "application/problem+json"
_PREFIX = "/problems/"


@dataclass(frozen=True)
class ProblemDocument:
    """An application/problem+json body (RFC 9457), or one made up for an
    error answer that had none (type "about:blank")."""

    type: str
    title: str
    status: int
    detail: str
    # Members beyond the four RFC 9457 names, as sent.
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str | None:
        """The problem's name ("id-taken"), for a type of this service."""
        return self.type[len(_PREFIX) :] if self.type.startswith(_PREFIX) else None


class ProblemError(core.PymagerError):
    """An error answer of the service: its problem document, the status, and
    the answer's headers.  Raised as is for problem types this client does
    not know and for error answers without a problem document."""

    # What the core says of this problem type; None for the generic class.
    problem: ClassVar[Problem | None] = None

    def __init__(self, document: ProblemDocument, headers: Headers | None = None) -> None:
        # args[0] is the detail, as for every domain error (PymagerError.detail);
        # the core's own constructors (Unauthorized's, Unavailable's) want more.
        Exception.__init__(self, document.detail)
        self.document = document
        self.headers = headers if headers is not None else Headers()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "problem" not in cls.__dict__:
            # The core's own table, as problem_for reads it: the first
            # domain error among the bases that has a problem type.
            inherited = cls.problem
            cls.problem = next((PROBLEMS[kind] for kind in cls.__mro__ if kind in PROBLEMS), inherited)

    @property
    def status(self) -> int:
        return self.document.status

    @property
    def type(self) -> str:
        return self.document.type

    @property
    def title(self) -> str:
        return self.document.title

    def __str__(self) -> str:
        return f"{self.document.status} {self.document.title}: {self.document.detail}"


# 400


class InvalidImageId(ProblemError, core.InvalidImageId):
    pass


class InvalidImage(ProblemError, core.InvalidImage):
    pass


class TooManyPixels(InvalidImage, core.TooManyPixels):
    pass


class BadUpload(ProblemError, core.BadUpload):
    pass


class UnsupportedFormat(ProblemError, core.UnsupportedOutputFormat):
    pass


class InvalidListing(ProblemError, core.InvalidListingRequest):
    pass


class SizeOutOfBounds(ProblemError, core.SizeOutOfBounds):
    """0x0, or a signed size past [images] max_signed_side or max_pixels."""


class InvalidMetaChange(ProblemError, core.InvalidMetaChange):
    pass


class InvalidFocalPoint(InvalidMetaChange, core.InvalidFocalPoint):
    pass


class UnsupportedMetaType(ProblemError, core.UnsupportedMetaType):
    pass


class BadRequest(ProblemError):
    """Malformed HTTP; the server closed the connection."""

    problem = problems.BAD_REQUEST


# 401, 403, 404, 405, 408, 409, 412, 413, 422


class Unauthorized(ProblemError, core.Unauthorized):
    """A write without a valid token; token_given tells whether one was sent."""

    def __init__(self, document: ProblemDocument, headers: Headers | None = None) -> None:
        super().__init__(document, headers)
        self.token_given = False


class SizeNotAllowed(ProblemError, core.SizeNotAllowed):
    pass


class BadSignature(ProblemError, core.BadSignature):
    """A signed URL whose signature the service does not verify (a key it
    does not have, or it has none)."""


class NotFound(ProblemError, core.ImageNotFound):
    """No original under the ID, or nothing served at the path."""


class OriginalLost(NotFound, core.OriginalLost):
    pass


class MethodNotAllowed(ProblemError):
    problem = problems.METHOD_NOT_ALLOWED


class RequestTimeout(ProblemError):
    problem = problems.REQUEST_TIMEOUT


class IdTaken(ProblemError, core.ImageIdTaken):
    pass


class PreconditionFailed(ProblemError, core.PreconditionFailed):
    """A replacement's If-Match named no stored original: read it again."""


class UploadTooLarge(ProblemError, core.UploadTooLarge):
    pass


class RangeNotSatisfiable(ProblemError, core.RangeNotSatisfiable):
    """A Range past the end; complete_length from its Content-Range, -1
    when the answer had none."""

    def __init__(self, document: ProblemDocument, headers: Headers | None = None) -> None:
        super().__init__(document, headers)
        values = self.headers.getRawHeaders("content-range") or [""]
        _, _, length = str(values[0]).rpartition("/")
        self.complete_length = int(length) if length.isdigit() else -1


class DerivationTooCostly(ProblemError, core.DerivationTooCostly):
    pass


# 500, 501


class InternalError(ProblemError):
    problem = problems.INTERNAL_ERROR


class MethodNotImplemented(ProblemError):
    problem = problems.NOT_IMPLEMENTED


# 503: the same request may work later; the client retries these.


class ServiceUnavailable(ProblemError, core.Unavailable):
    """Any 503, with the answer's Retry-After (seconds) when it had one."""

    problem = problems.UNAVAILABLE

    def __init__(self, document: ProblemDocument, headers: Headers | None = None) -> None:
        super().__init__(document, headers)
        self.reason = document.detail
        seconds = retry_after(self.headers)
        # The core's class attribute is the server's default; this is what it said.
        self.retry_after = round(seconds) if seconds is not None else self.retry_after


class DatabaseUnavailable(ServiceUnavailable, core.DatabaseUnavailable):
    pass


class StorageUnavailable(ServiceUnavailable, core.StorageUnavailable):
    pass


class StorageFull(StorageUnavailable, core.StorageFull):
    pass


class OutOfMemory(ServiceUnavailable, core.OutOfMemory):
    pass


class Overloaded(ServiceUnavailable, core.Overloaded):
    pass


class DerivationPending(ServiceUnavailable, core.DerivationPending):
    pass


def _by_slug() -> dict[str, type[ProblemError]]:
    table: dict[str, type[ProblemError]] = {}
    pending = ProblemError.__subclasses__()
    while pending:
        kind = pending.pop()
        pending.extend(kind.__subclasses__())
        assert kind.problem is not None, kind
        slug = kind.problem.slug
        # The most general class of a slug wins: there is one by slug.
        if slug not in table or issubclass(table[slug], kind):
            table[slug] = kind
    return table


ERRORS: dict[str, type[ProblemError]] = _by_slug()


def retry_after(headers: Headers) -> float | None:
    """Retry-After in seconds, when the answer gave it as a number."""
    values = headers.getRawHeaders("retry-after")
    if not values:
        return None
    try:
        seconds = float(values[0].strip())
    except ValueError:
        return None  # an HTTP date: no service of this kind sends one
    return seconds if seconds >= 0 else None


def error_for(status: int, phrase: str, headers: Headers, body: bytes) -> ProblemError:
    """The exception for an error answer."""
    document = _problem_document(status, headers, body) or ProblemDocument(
        type="about:blank",
        title=phrase or f"HTTP {status}",
        status=status,
        detail=body[:500].decode("utf-8", "replace").strip(),
    )
    kind = ERRORS.get(document.slug or "", ProblemError)
    if kind.problem is not None and kind.problem.status != status:
        kind = ProblemError  # a type sent with another status than the core's: not ours
    if kind is ProblemError and status == 503:
        kind = ServiceUnavailable
    return kind(document, headers)


def _problem_document(status: int, headers: Headers, body: bytes) -> ProblemDocument | None:
    content_type = (headers.getRawHeaders("content-type") or [""])[0]
    if content_type.split(";")[0].strip().lower() != PROBLEM_MEDIA_TYPE:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    known = ("type", "title", "status", "detail")
    sent = parsed.get("status")
    return ProblemDocument(
        type=str(parsed.get("type", "about:blank")),
        title=str(parsed.get("title", "")),
        status=sent if isinstance(sent, int) else status,
        detail=str(parsed.get("detail", "")),
        extensions={key: value for key, value in parsed.items() if key not in known},
    )
