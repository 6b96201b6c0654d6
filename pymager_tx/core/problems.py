"""
Errors as HTTP answers: one table from domain error to status, in
application/problem+json (RFC 9457).

The "type" of each problem is a stable relative URI naming it, for clients
to branch on; it is an identifier, not a page the service serves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pymager_tx.core import errors


@dataclass(frozen=True)
class Problem:
    status: int
    slug: str
    title: str


PROBLEMS: dict[type[errors.PymagerError], Problem] = {
    errors.InvalidImageId: Problem(400, "invalid-image-id", "Invalid image ID"),
    errors.InvalidImage: Problem(400, "invalid-image", "Not an accepted image"),
    errors.TooManyPixels: Problem(400, "too-many-pixels", "Too many pixels"),
    errors.BadUpload: Problem(400, "bad-upload", "Malformed upload"),
    errors.UnsupportedOutputFormat: Problem(400, "unsupported-format", "Unsupported output format"),
    errors.InvalidListingRequest: Problem(400, "invalid-listing", "Invalid listing request"),
    errors.SizeOutOfBounds: Problem(400, "size-out-of-bounds", "Size out of bounds"),
    errors.InvalidMetaChange: Problem(400, "invalid-meta-change", "Invalid metadata change"),
    errors.InvalidFocalPoint: Problem(400, "invalid-focal-point", "Invalid focal point"),
    errors.Unauthorized: Problem(401, "unauthorized", "Write token required"),
    errors.SizeNotAllowed: Problem(403, "size-not-allowed", "Size not allowed"),
    errors.BadSignature: Problem(403, "bad-signature", "Bad signature"),
    errors.ImageNotFound: Problem(404, "not-found", "Not found"),
    errors.OriginalLost: Problem(404, "original-lost", "Original lost"),
    errors.DerivedNameInvalid: Problem(404, "not-found", "Not found"),
    errors.ImageIdTaken: Problem(409, "id-taken", "Image ID taken"),
    errors.PreconditionFailed: Problem(412, "precondition-failed", "Precondition failed"),
    errors.UploadTooLarge: Problem(413, "upload-too-large", "Upload too large"),
    errors.RangeNotSatisfiable: Problem(416, "range-not-satisfiable", "Range not satisfiable"),
    errors.UnsupportedMetaType: Problem(415, "unsupported-media-type", "Unsupported media type"),
    errors.DerivationTooCostly: Problem(422, "derivation-too-costly", "Derivation too costly"),
    errors.DatabaseUnavailable: Problem(503, "database-unavailable", "Database unavailable"),
    errors.StorageFull: Problem(503, "storage-full", "Storage full"),
    errors.StorageUnavailable: Problem(503, "storage-unavailable", "Storage unavailable"),
    errors.OutOfMemory: Problem(503, "out-of-memory", "Out of memory"),
    errors.Overloaded: Problem(503, "overloaded", "Too busy"),
    errors.DerivationPending: Problem(503, "derivation-pending", "Derivation not finished"),
}

BAD_REQUEST = Problem(400, "bad-request", "Bad request")
NOT_FOUND = Problem(404, "not-found", "Not found")
METHOD_NOT_ALLOWED = Problem(405, "method-not-allowed", "Method not allowed")
REQUEST_TIMEOUT = Problem(408, "request-timeout", "Request timeout")
INTERNAL_ERROR = Problem(500, "internal-error", "Internal server error")
NOT_IMPLEMENTED = Problem(501, "not-implemented", "Method not implemented")
UNAVAILABLE = Problem(503, "unavailable", "Service unavailable")


def problem_for(error: errors.PymagerError) -> Problem:
    for kind in type(error).__mro__:
        if kind in PROBLEMS:
            return PROBLEMS[kind]
    return BAD_REQUEST


def problem_body(problem: Problem, detail: str) -> bytes:
    document = {
        "type": f"/problems/{problem.slug}",
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
    }
    return json.dumps(document).encode("utf-8")
