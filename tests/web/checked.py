"""In-memory HTTP with treq's StubTreq, answers read at once (nothing here
waits on a thread), and every exchange checked against the OpenAPI
document."""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.web.resource import IResource

from tests.openapi.contract import check_exchange
from tests.results import result_of

BASE = "http://images.example.com"


class CheckedClient:
    """guarded: the API has write tokens."""

    def __init__(self, resource: IResource, guarded: bool = False) -> None:
        self.stub = StubTreq(resource)
        self.guarded = guarded

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = result_of(self.stub.request(method, BASE + path, **kwargs))
        response.body = result_of(self.stub.content(response))
        check_exchange(
            method,
            BASE + path,
            kwargs.get("headers"),
            kwargs.get("data"),
            response,
            response.body,
            self.guarded,
        )
        return response
