"""A resource that answers from a script, and records what it was asked."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request


@dataclass
class Asked:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def problem(status: int, slug: str, title: str, detail: str = "", **headers: str) -> Callable[[Request], Any]:
    def answer(request: Request) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/problem+json")
        for name, value in headers.items():
            request.setHeader(name.replace("_", "-").encode(), value.encode())
        document = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
        return json.dumps(document).encode()

    return answer


def plain(status: int, body: bytes = b"", **headers: str) -> Callable[[Request], Any]:
    def answer(request: Request) -> bytes:
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name.replace("_", "-").encode(), value.encode())
        return body

    return answer


def created(image_id: str = "photo", sha256: str = "ab" * 32) -> Callable[[Request], Any]:
    def answer(request: Request) -> bytes:
        request.setResponseCode(201)
        request.setHeader(b"Content-Type", b"application/json")
        document = {
            "id": image_id,
            "url": f"http://images.example.com/original/{image_id}",
            "format": "png",
            "media_type": "image/png",
            "width": 2,
            "height": 1,
            "byte_length": 70,
            "sha256": sha256,
            "created_at": "2026-11-21T11:55:22.107141Z",
        }
        return json.dumps(document).encode()

    return answer


@dataclass
class Scripted(Resource):
    """Answers each request with the next answer of the script."""

    script: list[Callable[[Request], Any]]
    asked: list[Asked] = field(default_factory=list)
    pending: list[Request] = field(default_factory=list)
    isLeaf = True

    def __post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Request) -> Any:
        self.asked.append(
            Asked(
                request.method.decode(),
                request.path.decode(),
                {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()},
                request.content.read(),
            )
        )
        return self.script.pop(0)(request)


def held(into: list[Request]) -> Callable[[Request], Any]:
    """An answer the test writes itself, a part at a time."""

    def answer(request: Request) -> Any:
        into.append(request)
        return NOT_DONE_YET

    return answer
