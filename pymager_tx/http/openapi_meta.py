"""The OpenAPI description of /meta/{image_id}: an original's metadata
(GET, HEAD) and the change of its focal point (PATCH)."""

from __future__ import annotations

from pymager_tx.http.meta import META_CHANGE_TYPES
from pymager_tx.http.openapi_components import ORIGINAL_SCHEMA, Document, header

_ERRORS = {
    "read": (400, 404, 408, 500, 503),
    "change": (400, 401, 404, 408, 413, 415, 500, 503),
}

_UNIT = {"type": "number", "minimum": 0, "maximum": 1}
FOCAL_POINT_SCHEMA: Document = {
    "type": "object",
    "required": ["x", "y"],
    "additionalProperties": False,
    "description": "Relative to the displayed picture (after EXIF orientation): 0..1 from the left "
    "and from the top.",
    "properties": {"x": _UNIT, "y": _UNIT},
}

META_SCHEMA: Document = {
    "type": "object",
    "required": [*ORIGINAL_SCHEMA["required"], "focal_point", "blurhash", "dominant_color", "renditions"],
    "additionalProperties": False,
    "properties": {
        **ORIGINAL_SCHEMA["properties"],
        "focal_point": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/FocalPoint"}]},
        "blurhash": {
            "type": ["string", "null"],
            "description": "A BlurHash (https://blurha.sh) of the picture, for placeholders; null only when "
            "the original can no longer be decoded.",
        },
        "dominant_color": {"type": ["string", "null"], "pattern": "^#[0-9a-f]{6}$"},
        "renditions": {
            "type": "array",
            "description": "The derived images stored now, by name.",
            "items": {
                "type": "object",
                "required": [
                    "name",
                    "url",
                    "format",
                    "media_type",
                    "width",
                    "height",
                    "byte_length",
                    "created_at",
                ],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "url": {"type": "string"},
                    "format": {"type": "string"},
                    "media_type": {"type": "string"},
                    "width": {"type": "integer", "minimum": 1},
                    "height": {"type": "integer", "minimum": 1},
                    "byte_length": {"type": "integer", "minimum": 1},
                    "created_at": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}

CHANGE_SCHEMA: Document = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "focal_point": {
            "description": "Where crops centre; null clears it. Absent: unchanged.",
            "oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/FocalPoint"}],
        }
    },
}

_HEADERS: Document = {
    "ETag": header("A strong validator: the SHA-256 of this answer's body.", {"type": "string"}),
    "Cache-Control": header("`no-cache`: revalidate every time.", {"const": "no-cache"}),
    "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"},
}


def _refusals(kind: str, with_body: bool) -> Document:
    return {
        str(status): {"$ref": f"#/components/responses/Problem{status}{'' if with_body else 'NoBody'}"}
        for status in _ERRORS[kind]
    }


def _ok(description: str, with_body: bool) -> Document:
    ok: Document = {"description": description, "headers": _HEADERS}
    if with_body:
        ok["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Meta"}}}
    return ok


def meta_path(image_id: Document, write_security: list[dict[str, list[str]]]) -> Document:
    not_modified = {"description": "The client's copy is current (`If-None-Match`).", "headers": _HEADERS}
    if_none_match = [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "ETags of the client's copies, or `*`: 304 when one is current.",
            "schema": {"type": "string"},
        }
    ]
    return {
        "parameters": [image_id],
        "get": {
            "operationId": "getMeta",
            "tags": ["Originals"],
            "summary": "An original's metadata",
            "description": "What the upload answered, the focal point, a BlurHash and the dominant colour "
            "(computed at upload; for originals stored before, on the first request), and the renditions "
            "stored.",
            "parameters": if_none_match,
            "responses": {
                "200": _ok("The metadata.", with_body=True),
                "304": not_modified,
                **_refusals("read", with_body=True),
            },
        },
        "head": {
            "operationId": "getMetaHead",
            "tags": ["Originals"],
            "summary": "An original's metadata (headers only)",
            "description": "As GET, without a body.",
            "parameters": if_none_match,
            "responses": {
                "200": _ok("The metadata's headers.", with_body=False),
                "304": not_modified,
                **_refusals("read", with_body=False),
            },
        },
        "patch": {
            "operationId": "changeMeta",
            "tags": ["Originals"],
            "summary": "Set or clear the focal point",
            "description": "Crops (the default mode, and `-smart`) then keep the focal point as near their "
            "centre as the picture allows; the crops made for another focal point are never served again. "
            "JSON other than an object of `focal_point` is 400, another media type 415.",
            "security": write_security,
            "requestBody": {
                "required": True,
                "content": {
                    media_type: {"schema": {"$ref": "#/components/schemas/MetaChange"}}
                    for media_type in META_CHANGE_TYPES
                },
            },
            "responses": {
                "200": _ok("Changed: the metadata now.", with_body=True),
                **_refusals("change", with_body=True),
            },
        },
    }
