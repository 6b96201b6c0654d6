"""
The OpenAPI 3.1 description of the HTTP API, as data.

Its facts come from where the service keeps them, so they cannot drift:
the problem types from pymager_tx.core.problems (every Problem there, in the
table and beside it), the ID and derived-name grammars from the patterns
pymager_tx.core.model parses with, the formats from pymager_tx.core.formats,
the version from the package.  The rest is written out, the components in
openapi_components and the paths in openapi_paths, assembled here, and kept
true by tests: every answer of the HTTP tests is validated against it
(openapi-core), its paths are exactly the app's routes, and CI fuzzes a
running server with it (schemathesis).
"""

from __future__ import annotations

import json
from functools import cache

from pymager_tx import __version__
from pymager_tx.http.openapi_components import (
    HEADERS,
    HEALTH_SCHEMA,
    ORIGINAL_SCHEMA,
    Document,
    problem_response,
    problem_schema,
    problem_statuses,
)
from pymager_tx.http.openapi_meta import CHANGE_SCHEMA, FOCAL_POINT_SCHEMA, META_SCHEMA
from pymager_tx.http.openapi_paths import paths


def openapi_document(version: str = __version__) -> Document:
    """The OpenAPI 3.1 document of the API, for the server of version."""
    statuses = sorted(problem_statuses())
    responses: Document = {}
    for status in statuses:
        responses[f"Problem{status}"] = problem_response(status, with_body=True)
        responses[f"Problem{status}NoBody"] = problem_response(status, with_body=False)
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
        "paths": paths(),
        "components": {
            "schemas": {
                "Original": ORIGINAL_SCHEMA,
                "Health": HEALTH_SCHEMA,
                "Meta": META_SCHEMA,
                "MetaChange": CHANGE_SCHEMA,
                "FocalPoint": FOCAL_POINT_SCHEMA,
                "Problem": problem_schema(),
                **{f"Problem{status}": problem_schema(status) for status in statuses},
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
