"""
The home page: a small HTML page for a person who opens the service in a
browser.  What the service is, its version, links to what else it serves,
and the API reference rendered from the OpenAPI document, on the server:
no scripts (its Content-Security-Policy forbids them), every text escaped.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from html import escape
from typing import Any

from pymager_tx.http.openapi import openapi_document
from pymager_tx.http.openapi_components import Document

_METHODS = ("get", "head", "post", "put", "delete")

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
h1{margin-bottom:0}.version{color:#555;margin-top:0}code{background:#f1f1f1;padding:0 .2em}
.operation{border:1px solid #ddd;border-radius:4px;padding:.5rem 1rem;margin:1rem 0}
.method{font-weight:bold;text-transform:uppercase;margin-right:.5em}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}
"""


def style_hash() -> str:
    """The CSP source that allows the page's one inline style, and nothing else."""
    digest = hashlib.sha256(_STYLE.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy() -> str:
    return (
        f"default-src 'none'; script-src 'none'; style-src {style_hash()}; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _prose(value: object) -> str:
    """Escaped text, its `code spans` (as the document writes them) in <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _text(value))


def _resolve(document: Document, item: Any) -> Any:
    """item, or what its $ref names in document."""
    while isinstance(item, dict) and "$ref" in item:
        node: Any = document
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


def _parameters(document: Document, parameters: list[Any]) -> str:
    if not parameters:
        return ""
    rows = []
    for parameter in (_resolve(document, each) for each in parameters):
        schema = parameter.get("schema", {})
        rule = f"<code>{_text(schema['pattern'])}</code>" if "pattern" in schema else ""
        rows.append(
            f"<tr><td><code>{_text(parameter['name'])}</code></td><td>{_text(parameter['in'])}</td>"
            f"<td>{_prose(parameter.get('description', ''))}</td><td>{rule}</td></tr>"
        )
    return (
        "<table><tr><th>Parameter</th><th>In</th><th>Meaning</th><th>Pattern</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _responses(document: Document, responses: dict[str, Any]) -> str:
    rows = []
    for status, item in responses.items():
        response = _resolve(document, item)
        headers = ", ".join(f"<code>{_text(name)}</code>" for name in response.get("headers", {}))
        media = ", ".join(f"<code>{_text(name)}</code>" for name in response.get("content", {}))
        rows.append(
            f"<tr><td>{_text(status)}</td><td>{_prose(response.get('description', ''))}</td>"
            f"<td>{media}</td><td>{headers}</td></tr>"
        )
    return (
        "<table><tr><th>Status</th><th>Meaning</th><th>Body</th><th>Headers</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _operation(document: Document, path: str, method: str, operation: Any, shared: list[Any]) -> str:
    parts = [
        f'<section class="operation" id="{_text(operation.get("operationId", ""))}">',
        f'<h3><span class="method">{_text(method)}</span><code>{_text(path)}</code></h3>',
        f"<p>{_text(operation.get('summary', ''))}. {_prose(operation.get('description', ''))}</p>",
    ]
    if operation.get("security"):
        parts.append("<p>Needs <code>Authorization: Bearer &lt;write token&gt;</code>.</p>")
    parts.append(_parameters(document, [*shared, *operation.get("parameters", [])]))
    body = operation.get("requestBody")
    if body:
        kinds = ", ".join(f"<code>{_text(name)}</code>" for name in body.get("content", {}))
        parts.append(f"<p>Body: {kinds}.</p>")
    parts.append(_responses(document, operation.get("responses", {})))
    parts.append("</section>")
    return "".join(parts)


def _problems(document: Document) -> str:
    schema = document["components"]["schemas"]["Problem"]
    types = "".join(f"<li><code>{_text(kind)}</code></li>" for kind in schema["properties"]["type"]["enum"])
    return (
        '<h2 id="problems">Problems</h2><p>Every refusal is an <code>application/problem+json</code> '
        "document (RFC 9457) with <code>type</code>, <code>title</code>, <code>status</code> and "
        f"<code>detail</code>. Its <code>type</code> is one of:</p><ul>{types}</ul>"
    )


def render_home(document: Document) -> str:
    info = document["info"]
    operations = []
    for path, item in document["paths"].items():
        for method in _METHODS:
            if method in item:
                operations.append(
                    _operation(document, path, method, item[method], item.get("parameters", []))
                )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_text(info['title'])} {_text(info['version'])}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>{_text(info['title'])}</h1>"
        f'<p class="version">Version <span id="version">{_text(info["version"])}</span></p>'
        f"<p>{_text(info['summary'])} {_prose(info['description'])}</p>"
        '<nav><ul><li><a href="/openapi.json">OpenAPI document</a> (<code>/openapi.json</code>)</li>'
        '<li><a href="/metrics">Metrics</a> (<code>/metrics</code>)</li>'
        '<li><a href="/healthz">Health</a> (<code>/healthz</code>)</li></ul></nav></header>'
        '<main><h2 id="reference">API reference</h2>'
        + "".join(operations)
        + _problems(document)
        + "</main></body></html>"
    )


@cache
def home_bytes() -> bytes:
    """The page as served: rendered once."""
    return render_home(openapi_document()).encode("utf-8")
