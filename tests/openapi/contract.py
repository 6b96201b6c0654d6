"""Exchanges checked against the OpenAPI document (openapi-core): the HTTP
tests' clients pass every request and answer through check_exchange, so
the document stays true to what the service does.

Every answer is validated.  An answer to a path or method the document does
not describe (404 for any other path, 405, 501) must be one of its problem
documents for that status.  A request is validated too when the service
took it (2xx, 3xx): a request the service accepts must be one the document
allows; its write token only where the server has tokens (without them the
service takes writes from anyone, as the document says).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.request.validators import (
    V31RequestBodyValidator,
    V31RequestParametersValidator,
    V31RequestSecurityValidator,
)
from openapi_schema_validator import OAS31Validator

from pymager_tx.http.openapi import openapi_document

DOCUMENT = openapi_document()
# openapi-core decodes application/json alone by itself.
_DESERIALIZERS = {
    "application/problem+json": json.loads,
    "application/merge-patch+json": lambda data, **_parameters: json.loads(data),
}
API = OpenAPI.from_dict(DOCUMENT, config=Config(extra_media_type_deserializers=_DESERIALIZERS))
_PARAMETERS = V31RequestParametersValidator(API.spec, extra_media_type_deserializers=_DESERIALIZERS)
_BODY = V31RequestBodyValidator(API.spec, extra_media_type_deserializers=_DESERIALIZERS)
_SECURITY = V31RequestSecurityValidator(API.spec)


class ContractBroken(AssertionError):
    pass


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def response_headers(response: Any) -> dict[str, str]:
    """A treq response's headers (the first value of each), with the
    Content-Length Twisted's client keeps apart (response.length)."""
    headers = {_text(name).title(): _text(values[0]) for name, values in response.headers.getAllRawHeaders()}
    if "Content-Length" not in headers and isinstance(response.length, int):
        headers["Content-Length"] = str(response.length)
    return headers


def check_exchange(
    method: str,
    url: str,
    request_headers: Mapping[str | bytes, str | bytes] | None,
    request_body: bytes | None,
    response: Any,
    response_body: bytes,
    tokens: bool,
) -> None:
    """Raise ContractBroken unless the answer (and, when the service took
    it, the request) is what the document describes."""
    parts = urlsplit(url)
    sent = {_text(name).title(): _text(value) for name, value in (request_headers or {}).items()}
    content_type = sent.get("Content-Type", "")
    if request_body and not content_type:
        # RFC 9110, section 8.3: a body without a type may be taken as
        # application/octet-stream, as the service and the document do.
        content_type = "application/octet-stream"
    request = MockRequest(
        f"{parts.scheme}://{parts.netloc}",
        method.lower(),
        parts.path,
        args=dict(parse_qsl(parts.query)),
        headers=sent,
        data=request_body or b"",
        content_type=content_type,
    )
    headers = response_headers(response)
    if "X-Accel-Redirect" in headers and not response_body:
        # nginx sends the body, the file the header names (pymager_tx.http.accel):
        # the document describes what the client receives.
        response_body = b"(the file nginx sends)"
    answer = MockResponse(
        response_body,
        status_code=response.code,
        headers=headers,
        content_type=headers.get("Content-Type", ""),
    )
    what = f"{method} {parts.path} -> {response.code}"
    try:
        API.validate_response(request, answer)
    except PathError:
        _check_undescribed(what, method, response.code, headers, response_body)
        return
    except Exception as error:
        raise ContractBroken(f"{what}: the answer breaks the document: {_reason(error)}") from error
    if 200 <= response.code < 400:
        validators = [_PARAMETERS, _BODY, *([_SECURITY] if tokens else [])]
        for validator in validators:
            try:
                validator.validate(request)
            except Exception as error:
                raise ContractBroken(
                    f"{what}: the service took a request the document refuses: {_reason(error)}"
                ) from error


def _check_undescribed(what: str, method: str, status: int, headers: dict[str, str], body: bytes) -> None:
    """An answer to what the document describes no operation for: a problem
    of the status (with Allow for a 405)."""
    schemas = DOCUMENT["components"]["schemas"]
    if f"Problem{status}" not in schemas:
        raise ContractBroken(f"{what}: no operation describes it, and it is no problem status")
    if headers.get("Content-Type") != "application/problem+json":
        raise ContractBroken(f"{what}: no operation describes it, and it is not a problem document")
    if status == 405 and "Allow" not in headers:
        raise ContractBroken(f"{what}: a 405 without Allow")
    if method.upper() == "HEAD":
        return
    errors = list(OAS31Validator(schemas[f"Problem{status}"]).iter_errors(json.loads(body)))
    if errors:
        raise ContractBroken(f"{what}: not a problem document of the document: {errors[0].message}")


def _reason(error: BaseException) -> str:
    """The error, with the validation errors openapi-core wraps."""
    reasons = [str(error)]
    cause = error.__cause__
    while cause is not None:
        reasons.append(str(cause))
        for detail in getattr(cause, "schema_errors", ()) or ():
            reasons.append(f"{list(detail.absolute_path)}: {detail.message}")
        cause = cause.__cause__
    return " / ".join(reasons)
