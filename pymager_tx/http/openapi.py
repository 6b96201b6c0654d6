"""
The OpenAPI 3.1 description of the HTTP API, as data.

Its facts come from where the service keeps them, so they cannot drift:
the problem types from pymager_tx.core.problems (every Problem there, in the
table and beside it), the ID and derived-name grammars from the patterns
pymager_tx.core.model parses with, the formats from pymager_tx.core.formats,
the version from the package.  The rest is written out here and kept true by
tests: every answer of the HTTP tests is validated against it (openapi-core),
its paths are exactly the app's routes, and CI fuzzes a running server with
it (schemathesis).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from functools import cache
from typing import Any

from pymager_tx import __version__
from pymager_tx.core import problems
from pymager_tx.core.formats import KNOWN
from pymager_tx.core.model import _DERIVED_NAME, _ID, ID_RULE
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
EXTENSIONS = tuple(extension for fmt in KNOWN for extension in fmt.extensions)


def _header(description: str, schema: Document | None = None, required: bool = True) -> Document:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


HEADERS: Document = {
    "ETag": _header(
        "A strong validator: the SHA-256 of the bytes, in double quotes.",
        {"type": "string", "pattern": '^"[0-9a-f]{64}"$'},
    ),
    "Last-Modified": _header(
        "When the image was stored, as an HTTP date.",
        {"type": "string", "pattern": r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$"},
    ),
    "Cache-Control": _header(
        "`[http] cache_control` (`public, max-age=86400` by default; absent when set empty).",
        required=False,
    ),
    "Content-Length": _header(
        "The image's size in bytes; a HEAD announces what a GET sends.",
        {"type": "integer", "minimum": 0},
        required=False,
    ),
    "X-Content-Type-Options": _header("`nosniff`.", {"const": "nosniff"}),
    "Retry-After": _header("Seconds after which the request may succeed.", {"type": "integer", "minimum": 1}),
    "WWW-Authenticate": _header(
        'The bearer challenge (RFC 6750): `Bearer realm="pymager"`, with `error="invalid_token"` '
        "when a token was given and is not valid.",
        {"type": "string", "pattern": '^Bearer realm="pymager"(, error="invalid_token")?$'},
    ),
    "Location": _header("The original's URL (under `[server] public_url` when set).", {"type": "string"}),
    "Allow": _header("The methods the path takes.", {"type": "string"}),
    "No-Store": _header("`no-store`: refusals and health answers are never cached.", {"const": "no-store"}),
}


def _problem_schema(status: int | None = None) -> Document:
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


def _problem_statuses() -> dict[int, list[Problem]]:
    by_status: dict[int, list[Problem]] = defaultdict(list)
    for problem in ALL_PROBLEMS:
        by_status[problem.status].append(problem)
    return dict(by_status)


STATUS_TEXT = {
    400: "Bad request: a malformed request or upload, an invalid ID, an image that is not accepted.",
    401: "A write without a valid token.",
    403: "A derived size not in `[images] allowed_sizes`.",
    404: "Unknown ID, a derived name that does not parse, or nothing at this path.",
    405: "A method the path does not take (with `Allow`).",
    408: "The request line and headers, or the body, took too long; the connection closes.",
    409: "An original is already stored under the ID.",
    413: "The upload is larger than `[images] max_upload_bytes`.",
    422: "The derivation ran past `[images] derivation_time_budget`.",
    500: "A bug; the traceback goes to the log only.",
    501: "A method HTTP does not define (methods are case-sensitive).",
    503: "Unavailable for now: database, storage, memory or image threads (with `Retry-After`).",
}


def _problem_response(status: int, with_body: bool) -> Document:
    types = ", ".join(f"`/problems/{problem.slug}`" for problem in _problem_statuses()[status])
    headers: Document = {"Cache-Control": {"$ref": "#/components/headers/No-Store"}}
    if status == 503:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    elif status == 401:
        headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWW-Authenticate"}
    elif status == 405:
        headers["Allow"] = {"$ref": "#/components/headers/Allow"}
    response: Document = {"description": f"{STATUS_TEXT[status]} Types: {types}.", "headers": headers}
    if with_body:
        response["content"] = {
            "application/problem+json": {"schema": {"$ref": f"#/components/schemas/Problem{status}"}}
        }
    return response


def _image_responses(what: str, with_body: bool) -> Document:
    validators = {
        name: {"$ref": f"#/components/headers/{name}"} for name in ("ETag", "Last-Modified", "Cache-Control")
    }
    ok: Document = {
        "description": f"{what}, with its validators.",
        "headers": {
            **validators,
            "Content-Length": {"$ref": "#/components/headers/Content-Length"},
            "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"},
        },
    }
    if with_body:
        ok["content"] = {media_type: {"schema": {}} for media_type in MEDIA_TYPES}
    return {
        "200": ok,
        "304": {
            "description": "The client's copy is current (`If-None-Match`, or `If-Modified-Since`).",
            "headers": validators,
        },
    }


_ERRORS = {
    "read_original": (400, 404, 408, 500, 503),
    "store_original": (400, 401, 404, 408, 409, 413, 500, 503),
    "delete_original": (400, 401, 404, 408, 500, 503),
    "read_derived": (400, 403, 404, 408, 422, 500, 503),
    "health": (400, 408, 500, 503),
    "static": (400, 408, 500),
}


def _refusals(kind: str, with_body: bool) -> Document:
    return {
        str(status): {"$ref": f"#/components/responses/Problem{status}{'' if with_body else 'NoBody'}"}
        for status in _ERRORS[kind]
    }


def _read(
    operation_id: str, summary: str, description: str, responses: Document, kind: str, tag: str
) -> Document:
    """A GET operation and its HEAD (the same headers, no body)."""
    head_responses: Document = {}
    for status, response in responses.items():
        bodiless = {key: value for key, value in response.items() if key != "content"}
        head_responses[status] = bodiless
    return {
        "get": {
            "operationId": operation_id,
            "tags": [tag],
            "summary": summary,
            "description": description,
            "responses": {**responses, **_refusals(kind, with_body=True)},
        },
        "head": {
            "operationId": f"{operation_id}Head",
            "tags": [tag],
            "summary": f"{summary} (headers only)",
            "description": "As GET, without a body.",
            "responses": {**head_responses, **_refusals(kind, with_body=False)},
        },
    }


CONDITIONAL_PARAMETERS = [
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "ETags of the client's copies, or `*`: 304 when one is current. "
        "Takes precedence over If-Modified-Since.",
        "schema": {"type": "string"},
    },
    {
        "name": "If-Modified-Since",
        "in": "header",
        "required": False,
        "description": "304 when the image is not newer; ignored when it is not an HTTP date.",
        "schema": {"type": "string"},
    },
]

IMAGE_ID = {
    "name": "image_id",
    "in": "path",
    "required": True,
    "description": f"The image's ID: {ID_RULE}.",
    "schema": {"type": "string", "pattern": ID_PATTERN},
}

DERIVED_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": (
        "`<ID>-<W>x<H>.<ext>` (crop to exactly WxH), `<ID>-<W>x<H>-fit.<ext>` (inside WxH) or "
        "`<ID>-<W>x<H>-pad.<ext>` (fitted on a WxH canvas). `ext`, in any case, is one of "
        f"{', '.join(f'`{extension}`' for extension in EXTENSIONS)} (AVIF when the installed Pillow "
        "writes it; another is 400). WxH must be one of `[images] allowed_sizes` (else 403). A name "
        "that does not parse is 404, then an unknown format 400, then a size not allowed 403, then "
        "an unknown original 404."
    ),
    "schema": {"type": "string", "pattern": DERIVED_NAME_PATTERN},
}

# Bytes, any (OpenAPI 3.1: a schema without a type, naming its media type).
BINARY: Document = {"contentMediaType": "application/octet-stream"}

WRITE_SECURITY: list[dict[str, list[str]]] = [{"writeToken": []}]

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


def _health(operation_id: str, summary: str, description: str) -> Document:
    return _read(
        operation_id,
        summary,
        description,
        {
            "200": {
                "description": "Alive (and for `/readyz`, ready).",
                "headers": {"Cache-Control": {"$ref": "#/components/headers/No-Store"}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
            }
        },
        "health",
        "Operations",
    )


def _paths() -> Document:
    original: Document = _read(
        "getOriginal",
        "The original, byte for byte",
        "The stored bytes of the original, as uploaded.",
        _image_responses("The original", with_body=True),
        "read_original",
        "Originals",
    )
    original["get"]["parameters"] = CONDITIONAL_PARAMETERS
    original["head"]["parameters"] = CONDITIONAL_PARAMETERS
    stored = {
        "201": {
            "description": "Stored: the original's description.",
            "headers": {"Location": {"$ref": "#/components/headers/Location"}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Original"}}},
        },
        **_refusals("store_original", with_body=True),
    }
    original["post"] = {
        "operationId": "uploadOriginalForm",
        "tags": ["Originals"],
        "summary": "Upload an original as a form",
        "description": "multipart/form-data with the image in exactly one part named `file`.",
        "security": WRITE_SECURITY,
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": BINARY},
                    },
                }
            },
        },
        "responses": stored,
    }
    original["put"] = {
        "operationId": "uploadOriginal",
        "tags": ["Originals"],
        "summary": "Upload an original as the body",
        "description": "The raw image as the body; without a Content-Type it is taken as "
        "application/octet-stream.",
        "security": WRITE_SECURITY,
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": BINARY},
                "image/*": {"schema": BINARY},
            },
        },
        "responses": stored,
    }
    original["delete"] = {
        "operationId": "deleteOriginal",
        "tags": ["Originals"],
        "summary": "Delete the original and every derived image of it",
        "security": WRITE_SECURITY,
        "responses": {
            "204": {"description": "Gone, with every derived image of it."},
            **_refusals("delete_original", with_body=True),
        },
    }
    original["parameters"] = [IMAGE_ID]

    derived = _read(
        "getDerived",
        "A derived image",
        "Generated on its first request, stored, then served from storage.",
        _image_responses("The derived image", with_body=True),
        "read_derived",
        "Derived images",
    )
    derived["get"]["parameters"] = CONDITIONAL_PARAMETERS
    derived["head"]["parameters"] = CONDITIONAL_PARAMETERS
    derived["parameters"] = [DERIVED_NAME]

    no_cache = {"Cache-Control": _header("`no-cache`.", {"const": "no-cache"})}
    return {
        "/original/{image_id}": original,
        "/derived/{name}": derived,
        "/healthz": _health(
            "health",
            "Liveness",
            "200 when the database answers, else 503; says how busy the image threads are.",
        ),
        "/readyz": _health(
            "readiness",
            "Readiness",
            "As `/healthz`, and 503 too while the image queue is full (for load balancers).",
        ),
        "/openapi.json": _read(
            "openapi",
            "This document",
            "The OpenAPI 3.1 description of this API.",
            {
                "200": {
                    "description": "The document.",
                    "headers": no_cache,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
            "static",
            "About",
        ),
        "/": _read(
            "home",
            "The home page",
            "A page for a person: what the service is, its version, and this reference. No scripts.",
            {
                "200": {
                    "description": "The page.",
                    "headers": {
                        **no_cache,
                        "Content-Security-Policy": _header(
                            "No scripts, nothing from elsewhere.",
                            {"type": "string", "pattern": "script-src 'none'"},
                        ),
                    },
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
            "static",
            "About",
        ),
    }


def openapi_document(version: str = __version__) -> Document:
    """The OpenAPI 3.1 document of the API, for the server of version."""
    statuses = sorted(_problem_statuses())
    responses: Document = {}
    for status in statuses:
        responses[f"Problem{status}"] = _problem_response(status, with_body=True)
        responses[f"Problem{status}NoBody"] = _problem_response(status, with_body=False)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pymager-tx",
            "version": version,
            "summary": "Image storage and resizing over HTTP.",
            "description": (
                "Clients upload an original under an ID they choose; anyone fetches a resized copy by "
                "URL. Every refusal is an `application/problem+json` document (RFC 9457); a method "
                "the path does not take is 405 (with `Allow`), a method HTTP does not define 501, "
                "malformed HTTP 400, a request too slow to arrive 408."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "Originals", "description": "Upload, read and delete originals."},
            {"name": "Derived images", "description": "Resized copies, derived on their first request."},
            {"name": "Operations", "description": "Health, for systemd and load balancers."},
            {"name": "About", "description": "This description, and the home page."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": {
                "Original": ORIGINAL_SCHEMA,
                "Health": HEALTH_SCHEMA,
                "Problem": _problem_schema(),
                **{f"Problem{status}": _problem_schema(status) for status in statuses},
            },
            "headers": HEADERS,
            "responses": responses,
            "securitySchemes": {
                "writeToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A write token of `[auth] write_tokens`. Writes need one when "
                    "tokens are configured; a server without them (loopback only, by default) takes "
                    "writes from anyone. Reads never need one.",
                }
            },
        },
    }


@cache
def document_bytes() -> bytes:
    """The document as served: compact JSON, built once."""
    return json.dumps(openapi_document(), separators=(",", ":")).encode("utf-8")
