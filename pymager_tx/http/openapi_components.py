"""
The components of the OpenAPI document: its problem types, headers, refusal
responses and the schemas of the JSON the service answers.

The problem types come from pymager_tx.core.problems (every Problem there,
in the table and beside it), the ID and derived-name grammars from the
patterns pymager_tx.core.model parses with, the formats from
pymager_tx.core.formats.  pymager_tx.http.openapi assembles the document.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from pymager_tx.core import problems
from pymager_tx.core.formats import KNOWN, OUTPUTS
from pymager_tx.core.model import _DERIVED_NAME, _ID
from pymager_tx.core.problems import PROBLEMS, Problem

Document = dict[str, Any]

# Every problem the service can answer: the domain errors' table, and the
# ones the HTTP edge answers by itself (bad request, timeout, 500, ...).
ALL_PROBLEMS: tuple[Problem, ...] = tuple(
    sorted(
        {
            *PROBLEMS.values(),
            *(value for value in vars(problems).values() if isinstance(value, Problem)),
        },
        key=lambda problem: (problem.status, problem.slug),
    )
)


def _anchored(pattern: re.Pattern[str]) -> str:
    """A JSON Schema (ECMA-262) pattern matching exactly what pattern
    fullmatches: anchored, its named groups plain (non-capturing) groups.
    It ends in "not followed by any character" rather than "$", which
    Python's re (and so Python validators and generators) also matches
    before a final newline."""
    return "^(?:" + re.sub(r"\(\?P<\w+>", "(?:", pattern.pattern) + r")(?![\s\S])"


ID_PATTERN = _anchored(_ID)
DERIVED_NAME_PATTERN = _anchored(_DERIVED_NAME)
MEDIA_TYPES = tuple(fmt.media_type for fmt in KNOWN)
# Derived images are written in the output formats only (never HEIF).
EXTENSIONS = tuple(extension for fmt in OUTPUTS for extension in fmt.extensions)


def header(description: str, schema: Document | None = None, required: bool = True) -> Document:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


HEADERS: Document = {
    "ETag": header(
        "A strong validator: the SHA-256 of the bytes, in double quotes.",
        {"type": "string", "pattern": '^"[0-9a-f]{64}"$'},
    ),
    "Last-Modified": header(
        "When the image was stored, as an HTTP date.",
        {"type": "string", "pattern": r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$"},
    ),
    "Cache-Control": header(
        "`[http] cache_control` (`public, max-age=86400` by default; absent when set empty).",
        required=False,
    ),
    "Content-Length": header(
        "The image's size in bytes; a HEAD announces what a GET sends.",
        {"type": "integer", "minimum": 0},
        required=False,
    ),
    "X-Content-Type-Options": header("`nosniff`.", {"const": "nosniff"}),
    "Retry-After": header("Seconds after which the request may succeed.", {"type": "integer", "minimum": 1}),
    "WWW-Authenticate": header(
        'The bearer challenge (RFC 6750): `Bearer realm="pymager"`, with `error="invalid_token"` '
        "when a token was given and is not valid.",
        {"type": "string", "pattern": '^Bearer realm="pymager"(, error="invalid_token")?$'},
    ),
    "Location": header("The original's URL (under `[server] public_url` when set).", {"type": "string"}),
    "Allow": header("The methods the path takes.", {"type": "string"}),
    "Surrogate-Key": header(
        "The image's ID, for a CDN to purge every answer of one image at once (Fastly, Varnish "
        'xkey); one of `[cdn] cache_tag_headers` (`["Surrogate-Key"]` by default).',
        {"type": "string", "pattern": ID_PATTERN},
        required=False,
    ),
    "Cache-Tag": header(
        "The image's ID, as `Surrogate-Key` (Cloudflare), when `[cdn] cache_tag_headers` names it.",
        {"type": "string", "pattern": ID_PATTERN},
        required=False,
    ),
    "No-Store": header("`no-store`: refusals and health answers are never cached.", {"const": "no-store"}),
    "Accept-Ranges": header("`bytes`: a GET may ask for one byte range.", {"const": "bytes"}),
    "X-Accel-Redirect": header(
        "Only with `[http] accel_redirect_prefix` set, behind nginx: the internal path of the image's "
        "file, which nginx sends in place of this answer's empty body (a client never sees it).",
        {"type": "string", "pattern": "^/"},
        required=False,
    ),
    "Content-Range": header(
        "The range sent and the image's whole length: `bytes <first>-<last>/<length>`.",
        {"type": "string", "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$"},
    ),
    "Unsatisfied-Content-Range": header(
        "The image's whole length: `bytes */<length>`.",
        {"type": "string", "pattern": "^bytes \\*/[0-9]+$"},
    ),
    "Access-Control-Allow-Origin": header(
        "CORS: the request's `Origin` when `[http] cors_origins` lists it, or `*` when it lists `*`; "
        "absent for other origins and when the list is empty.",
        required=False,
    ),
    "Access-Control-Expose-Headers": header(
        "CORS: the headers a script may read (ETag, Last-Modified, Location, Content-Range, ...).",
        required=False,
    ),
    "Access-Control-Allow-Methods": header("CORS preflight: the methods the path takes."),
    "Access-Control-Allow-Headers": header(
        "CORS preflight: the request headers a script may send (Authorization, Content-Type, If-Match, "
        "If-None-Match, If-Modified-Since, If-Range, Range)."
    ),
    "Access-Control-Max-Age": header(
        "CORS preflight: seconds the browser may keep this answer (`[http] cors_max_age`).",
        {"type": "integer", "minimum": 0},
    ),
    "Vary": header(
        "The request headers the answer depends on: `Accept` for a negotiated (`.auto`) name, "
        "`Origin` where `[http] cors_origins` lists origins.",
        required=False,
    ),
}


def problem_schema(status: int | None = None) -> Document:
    chosen = [problem for problem in ALL_PROBLEMS if status is None or problem.status == status]
    types = sorted({f"/problems/{problem.slug}" for problem in chosen})
    statuses = sorted({problem.status for problem in chosen})
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "additionalProperties": False,
        "properties": {
            "type": {
                "type": "string",
                "enum": types,
                "description": "Names the problem, for programs to branch on; an identifier, not a page.",
            },
            "title": {"type": "string", "minLength": 1},
            "status": {"type": "integer", "enum": statuses},
            "detail": {"type": "string", "description": "What was wrong with this request."},
        },
    }


def problem_statuses() -> dict[int, list[Problem]]:
    by_status: dict[int, list[Problem]] = defaultdict(list)
    for problem in ALL_PROBLEMS:
        by_status[problem.status].append(problem)
    return dict(by_status)


STATUS_TEXT = {
    400: "Bad request: a malformed request or upload, an invalid ID, an image that is not accepted, "
    "a derived size out of bounds.",
    401: "A write without a valid token.",
    403: "A derived size not in `[images] allowed_sizes`, or a signed URL whose signature does not verify.",
    404: "Unknown ID, a derived name that does not parse, or nothing at this path.",
    405: "A method the path does not take (with `Allow`).",
    408: "The request line and headers, or the body, took too long; the connection closes.",
    409: "An original is already stored under the ID.",
    412: "`If-Match` names no stored original: it changed since it was read, or there is none.",
    413: "The upload is larger than `[images] max_upload_bytes`.",
    415: "A body in a media type the operation does not take.",
    416: "A `Range` that starts past the end of the image (with `Content-Range: bytes */<length>`).",
    422: "The derivation ran past `[images] derivation_time_budget`.",
    500: "A bug; the traceback goes to the log only.",
    501: "A method HTTP does not define (methods are case-sensitive).",
    503: "Unavailable for now: database, storage, memory or image threads (with `Retry-After`).",
}


def problem_response(status: int, with_body: bool) -> Document:
    types = ", ".join(f"`/problems/{problem.slug}`" for problem in problem_statuses()[status])
    headers: Document = {"Cache-Control": {"$ref": "#/components/headers/No-Store"}}
    if status == 503:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    elif status == 401:
        headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWW-Authenticate"}
    elif status == 405:
        headers["Allow"] = {"$ref": "#/components/headers/Allow"}
    elif status == 416:
        headers["Content-Range"] = {"$ref": "#/components/headers/Unsatisfied-Content-Range"}
    response: Document = {"description": f"{STATUS_TEXT[status]} Types: {types}.", "headers": headers}
    if with_body:
        response["content"] = {
            "application/problem+json": {"schema": {"$ref": f"#/components/schemas/Problem{status}"}}
        }
    return response


ORIGINAL_SCHEMA: Document = {
    "type": "object",
    "required": [
        "id",
        "url",
        "format",
        "media_type",
        "width",
        "height",
        "byte_length",
        "sha256",
        "created_at",
    ],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "url": {"type": "string", "description": "Where the original is served."},
        "format": {"type": "string", "enum": [fmt.name for fmt in KNOWN]},
        "media_type": {"type": "string", "enum": list(MEDIA_TYPES)},
        "width": {"type": "integer", "minimum": 1, "description": "As displayed, after EXIF orientation."},
        "height": {"type": "integer", "minimum": 1, "description": "As displayed, after EXIF orientation."},
        "byte_length": {"type": "integer", "minimum": 1},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}

HEALTH_SCHEMA: Document = {
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {
        "status": {"const": "ok"},
        "images": {
            "type": "object",
            "description": "How busy the image threads are (absent when the process has none).",
            "required": ["threads", "busy", "queued", "max_queue", "full"],
            "additionalProperties": False,
            "properties": {
                "threads": {"type": "integer", "minimum": 0},
                "busy": {"type": "integer", "minimum": 0},
                "queued": {"type": "integer", "minimum": 0},
                "max_queue": {"type": "integer", "minimum": 0},
                "full": {"type": "boolean"},
            },
        },
    },
}
