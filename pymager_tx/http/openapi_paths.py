"""
The paths of the OpenAPI document: each route's operations, parameters and
answers, its refusals referring to the components
(pymager_tx.http.openapi_components).
"""

from __future__ import annotations

import re

from pymager_tx.core.model import ID_RULE
from pymager_tx.core.signing import SIGNATURE_LENGTH
from pymager_tx.http.openapi_components import (
    DERIVED_NAME_PATTERN,
    EXTENSIONS,
    ID_PATTERN,
    MEDIA_TYPES,
    Document,
    header,
)
from pymager_tx.http.openapi_meta import meta_path


def _image_responses(what: str, with_body: bool) -> Document:
    validators = {
        name: {"$ref": f"#/components/headers/{name}"}
        for name in ("ETag", "Last-Modified", "Cache-Control", *CACHE_TAGS)
    }
    vary = {
        name: {"$ref": f"#/components/headers/{name}"}
        for name in ("Vary", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers")
    }
    ok: Document = {
        "description": f"{what}, with its validators.",
        "headers": {
            **validators,
            **vary,
            "Content-Length": {"$ref": "#/components/headers/Content-Length"},
            "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"},
            "Accept-Ranges": {"$ref": "#/components/headers/Accept-Ranges"},
        },
    }
    if with_body:
        ok["headers"]["X-Accel-Redirect"] = {"$ref": "#/components/headers/X-Accel-Redirect"}
        ok["content"] = {media_type: {"schema": {}} for media_type in MEDIA_TYPES}
    return {
        "200": ok,
        "304": {
            "description": "The client's copy is current (`If-None-Match`, or `If-Modified-Since`).",
            "headers": {**validators, **vary},
        },
    }


# Headers naming the image's ID on every image answer, for CDN purges.
CACHE_TAGS = ("Surrogate-Key", "Cache-Tag")


def _with_ranges(read: Document, what: str) -> None:
    """A GET of an image answers one byte range (206) or 416; HEAD never."""
    get = read["get"]
    get["parameters"] = [*get.get("parameters", []), *RANGE_PARAMETERS]
    whole = get["responses"]["200"]
    get["responses"]["206"] = {
        "description": f"One byte range of {what} (`Range` and, if given, a current `If-Range`).",
        "headers": {
            **whole["headers"],
            "Content-Range": {"$ref": "#/components/headers/Content-Range"},
            "Content-Length": header("The length of the range sent.", {"type": "integer", "minimum": 1}),
        },
        "content": whole["content"],
    }
    get["responses"]["416"] = {"$ref": "#/components/responses/Problem416"}


_ERRORS = {
    "read_original": (400, 404, 408, 500, 503),
    "store_original": (400, 401, 404, 408, 409, 412, 413, 500, 503),
    "list_originals": (400, 401, 408, 500, 503),
    "delete_original": (400, 401, 404, 408, 500, 503),
    "read_derived": (400, 403, 404, 408, 422, 500, 503),
    "read_signed_derived": (400, 403, 404, 408, 422, 500, 503),
    "health": (400, 408, 500, 503),
    "static": (400, 408, 500),
    # 404 when [metrics] listen serves it elsewhere, or metrics are off.
    "metrics": (400, 404, 408, 500, 503),
    # 405: not a preflight, or from an origin not listed (no route takes OPTIONS).
    "preflight": (400, 405, 408, 500),
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

IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'Replace instead of upload: the ETag (`"<sha256>"`) the original was served with, '
    "or `*` for whichever is stored. The original is replaced in one step (a new generation, its "
    "derived images gone, every cache voided) if it still has that ETag, else 412; 412 too when "
    "no original is stored under the ID. Without it, an ID already taken is 409.",
    "schema": {"type": "string"},
}
RANGE_PARAMETERS = [
    {
        "name": "Range",
        "in": "header",
        "required": False,
        "description": "One byte range: `bytes=<first>-<last>`, `bytes=<first>-` or "
        "`bytes=-<suffix length>`: "
        "206 with that range, or 416 when it starts past the end. Several ranges, another unit or a "
        "malformed header are ignored: 200 with the whole image. Checked after `If-None-Match`.",
        "schema": {"type": "string"},
    },
    {
        "name": "If-Range",
        "in": "header",
        "required": False,
        "description": "The strong ETag, or the exact Last-Modified date, the range is of: when the image "
        "changed since, the whole image (200) instead.",
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
        "`<ID>-<W>x<H>-pad.<ext>` (fitted on a WxH canvas) or `<ID>-<W>x<H>-smart.<ext>` (a crop "
        "around the focal point, or else around what the picture's content draws the eye to). `ext`, "
        "in any case, is one of "
        f"{', '.join(f'`{extension}`' for extension in EXTENSIONS)} (AVIF when the installed Pillow "
        "writes it; another is 400), or `auto`: the format the request's `Accept` names, AVIF before "
        "WebP (the highest q-value wins; wildcards count for neither), else JPEG, or PNG when the "
        "picture has transparency; answers to `auto` carry `Vary: Accept`, and a negotiated AVIF or "
        "WebP is the very rendition of its explicit extension. "
        "WxH must be one of `[images] allowed_sizes` (else 403; any "
        "size within the signed bounds at `/derived/{signature}/{name}`). A side of 0 keeps the "
        "original's aspect ratio (`300x0`: 300 wide), `0x0` is 400. A name that does not parse is "
        "404, then an unknown format 400, then `0x0` 400, then a size not allowed 403, then an "
        "unknown original 404."
    ),
    "schema": {"type": "string", "pattern": DERIVED_NAME_PATTERN},
}

SIGNATURE = {
    "name": "signature",
    "in": "path",
    "required": True,
    "description": "The unpadded base64url encoding of HMAC-SHA256 over the UTF-8 bytes of `name`, "
    "keyed with the UTF-8 bytes of one of `[security] url_signing_keys` (`pymager-admin sign NAME` "
    "prints the path). One that does not verify, or any when the service has no keys, is 403 "
    "`/problems/bad-signature`, before the name is looked at.",
    "schema": {"type": "string", "pattern": f"^[A-Za-z0-9_-]{{{SIGNATURE_LENGTH}}}$"},
}

# Bytes, any (OpenAPI 3.1: a schema without a type, naming its media type).
BINARY: Document = {"contentMediaType": "application/octet-stream"}

WRITE_SECURITY: list[dict[str, list[str]]] = [{"writeToken": []}]


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


def _preflight() -> Document:
    """OPTIONS: answered for CORS preflights from listed origins only."""
    cors = (
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
        "Access-Control-Max-Age",
    )
    headers = {name: {"$ref": f"#/components/headers/{name}"} for name in cors}
    return {
        "operationId": None,
        "tags": ["CORS"],
        "summary": "CORS preflight",
        "description": "A preflight (`Origin` and `Access-Control-Request-Method`) from an origin "
        "`[http] cors_origins` lists: 204 with the methods this path takes and the headers a script "
        "may send. Any other OPTIONS, and every OPTIONS while the list is empty, is 405.",
        "responses": {
            "204": {
                "description": "The browser may send the request.",
                "headers": {**headers, "Vary": {"$ref": "#/components/headers/Vary"}},
            },
            **_refusals("preflight", with_body=True),
        },
    }


def _with_preflights(document: Document) -> Document:
    for path, item in document.items():
        preflight = _preflight()
        name = "".join(part.title() for part in re.split(r"[^A-Za-z]+", path) if part) or "Home"
        preflight["operationId"] = f"preflight{name}"
        item["options"] = preflight
    return document


def paths() -> Document:
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
    _with_ranges(original, "the original")
    stored = {
        "201": {
            "description": "Stored: the original's description.",
            "headers": {"Location": {"$ref": "#/components/headers/Location"}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Original"}}},
        },
        "200": {
            "description": "Replaced (with `If-Match`): the new original's description.",
            "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
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
        "parameters": [IF_MATCH],
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
        "parameters": [IF_MATCH],
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
    _with_ranges(derived, "the derived image")
    derived["parameters"] = [DERIVED_NAME]

    signed = _read(
        "getSignedDerived",
        "A derived image of any size, by a signed URL",
        "As `/derived/{name}`, for a name signed by the back end: its size may be any within "
        "`[images] max_signed_side` on each side and `[images] max_pixels` in all (else 400 "
        "`/problems/size-out-of-bounds`), listed in `allowed_sizes` or not. A side worked out from the "
        "aspect ratio (a 0 in the name) is held to the same bounds.",
        _image_responses("The derived image", with_body=True),
        "read_signed_derived",
        "Derived images",
    )
    signed["get"]["parameters"] = CONDITIONAL_PARAMETERS
    signed["head"]["parameters"] = CONDITIONAL_PARAMETERS
    signed["parameters"] = [SIGNATURE, DERIVED_NAME]

    no_cache = {"Cache-Control": header("`no-cache`.", {"const": "no-cache"})}
    return _with_preflights(
        {
            "/original/{image_id}": original,
            "/originals": _listing(),
            "/derived/{name}": derived,
            "/derived/{signature}/{name}": signed,
            "/meta/{image_id}": meta_path(IMAGE_ID, WRITE_SECURITY),
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
            "/metrics": _read(
                "metrics",
                "Prometheus metrics",
                "The Prometheus text format: requests by route template, derivations, uploads, deletions, "
                "the image queue, the rendition cache, transaction and storage times. 404 when "
                "`[metrics] listen` serves it on its own address, or `[metrics] enabled` is false.",
                {
                    "200": {
                        "description": "The scrape.",
                        "headers": {"Cache-Control": header("`no-store`.", {"const": "no-store"})},
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                "metrics",
                "About",
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
                            "Content-Security-Policy": header(
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
    )


def _listing() -> Document:
    """GET /originals and its HEAD (the same headers, no body)."""
    get = _list_operation()
    head: Document = {
        **get,
        "operationId": "listOriginalsHead",
        "summary": "List stored originals (headers only)",
        "responses": {
            **{
                status: {key: value for key, value in response.items() if key != "content"}
                for status, response in get["responses"].items()
                if "$ref" not in response
            },
            **_refusals("list_originals", with_body=False),
        },
    }
    return {"get": get, "head": head}


def _list_operation() -> Document:
    return {
        "operationId": "listOriginals",
        "tags": ["Originals"],
        "summary": "List stored originals, a page at a time",
        "description": "Stored originals in the order of their IDs, each as an upload describes it. "
        "Needs a write token whenever `[auth] write_tokens` are set: the listing is not public.",
        "security": WRITE_SECURITY,
        "parameters": [
            {
                "name": "after",
                "in": "query",
                "required": False,
                "description": "The last ID of the previous page: the page starts after it.",
                "schema": {"type": "string", "pattern": ID_PATTERN},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "How many originals at most (100 by default; over 1000 is 400).",
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
        ],
        "responses": {
            "200": {
                "description": "A page of originals, and the URL of the next page (null on the last).",
                "headers": {"Cache-Control": {"$ref": "#/components/headers/No-Store"}},
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["items", "next"],
                            "additionalProperties": False,
                            "properties": {
                                "items": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Original"},
                                },
                                "next": {"type": ["string", "null"]},
                            },
                        }
                    }
                },
            },
            **_refusals("list_originals", with_body=True),
        },
    }
