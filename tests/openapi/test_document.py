"""The OpenAPI document: valid OpenAPI 3.1, served as built, and exactly the
app's routes; its grammars and problem types are the service's own."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from treq.testing import StubTreq

from pymager_tx import __version__
from pymager_tx.core import problems
from pymager_tx.core.errors import DerivedNameInvalid, InvalidImageId
from pymager_tx.core.model import ImageId, parse_derived_name
from pymager_tx.core.problems import PROBLEMS, Problem
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.openapi import openapi_document
from pymager_tx.http.openapi_components import DERIVED_NAME_PATTERN, ID_PATTERN
from pymager_tx.http.routes import ImageAPI
from pymager_tx.ports import immediate
from tests.openapi.contract import DOCUMENT, check_exchange
from tests.results import result_of
from tests.web.fake_service import FakeImageService

OPERATIONS = ("get", "head", "post", "put", "delete", "patch", "options", "trace")


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(openapi_document())
    assert openapi_document()["openapi"].startswith("3.1.")


def test_the_document_names_the_servers_version() -> None:
    assert openapi_document()["info"]["version"] == __version__
    assert openapi_document("9.9.9")["info"]["version"] == "9.9.9"


def _routes() -> set[tuple[str, str]]:
    routes = set()
    for rule in ImageAPI.app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method.lower()) for method in rule.methods or ()}
    return routes


def test_every_route_is_in_the_document_and_every_path_is_a_route() -> None:
    described = {
        (path, method)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in OPERATIONS
    }
    # OPTIONS is no route: CORS preflights are answered before routing, on every path.
    preflights = {(path, "options") for path, _method in _routes()}
    assert _routes() | preflights == described


def test_every_path_parameter_is_described() -> None:
    for path, item in openapi_document()["paths"].items():
        named = set(re.findall(r"{([^}]+)}", path))
        for method in OPERATIONS:
            if method in item:
                parameters = [*item.get("parameters", []), *item[method].get("parameters", [])]
                assert {each["name"] for each in parameters if each["in"] == "path"} == named, (path, method)


def _every_problem() -> set[Problem]:
    return {*PROBLEMS.values(), *(value for value in vars(problems).values() if isinstance(value, Problem))}


def test_every_problem_type_is_in_the_document_under_its_status() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert set(schemas["Problem"]["properties"]["type"]["enum"]) == {
        f"/problems/{problem.slug}" for problem in _every_problem()
    }
    for problem in _every_problem():
        document = {"type": f"/problems/{problem.slug}", "title": problem.title, "status": problem.status}
        document["detail"] = "why"
        assert OAS31Validator(schemas[f"Problem{problem.status}"]).is_valid(document), problem
        assert OAS31Validator(schemas["Problem"]).is_valid(document), problem


def test_every_write_needs_the_bearer_token_and_no_read_does() -> None:
    document = openapi_document()
    assert document["components"]["securitySchemes"]["writeToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["writeToken"]["description"],
    }
    for path, item in document["paths"].items():
        for method in OPERATIONS:
            if method in item:
                needs = item[method].get("security", [])
                # The listing is a read, but not a public one.
                guarded = method in ("post", "put", "delete", "patch") or (
                    path == "/originals" and method in ("get", "head")
                )
                assert needs == ([{"writeToken": []}] if guarded else [])


@pytest.mark.parametrize(
    "text",
    ["a", "A-z_09", "a" * 128, "a" * 129, "", "has.dot", "has space", "\u00e9t\u00e9", "a\n", "a/b"],
)
def test_the_id_pattern_is_the_id_rule(text: str) -> None:
    try:
        ImageId(text)
        valid = True
    except InvalidImageId:
        valid = False
    assert bool(re.search(ID_PATTERN, text)) == valid
    assert OAS31Validator({"type": "string", "pattern": ID_PATTERN}).is_valid(text) == valid


@pytest.mark.parametrize(
    "name",
    [
        "photo-100x100.jpg",
        "photo-100x100.JPEG",
        "wide-pic-100x100-fit.png",
        "a-1x1-pad.webp",
        "photo-100x100-fit-pad.jpg",
        "photo-100x100-FIT.jpg",
        "photo-100x100-fill.jpg",
        "photo.jpg",
        "photo-100x100",
        "photo-100x100.jpg.png",
        "-100x100.jpg",
        "photo-0100x100.jpg",
        "photo-123456x1.jpg",
        "photo-100x100.xyz",
        "photo-100x100.jpg\n",
        "a" * 129 + "-1x1.png",
    ],
)
def test_the_derived_name_pattern_is_the_grammar(name: str) -> None:
    try:
        parse_derived_name(name)
        parses = True
    except DerivedNameInvalid:
        parses = False
    assert OAS31Validator({"type": "string", "pattern": DERIVED_NAME_PATTERN}).is_valid(name) == parses


class TestServed:
    def request(self, method: str, path: str) -> Any:
        api = ImageAPI(FakeImageService(), WriteTokens(()), immediate)
        stub = StubTreq(api.resource())
        url = "http://images.example.com" + path
        response = result_of(stub.request(method, url))
        body = result_of(stub.content(response))
        check_exchange(method, url, None, None, response, body, tokens=False)
        return response, body

    def test_get_serves_the_document(self) -> None:
        response, body = self.request("GET", "/openapi.json")
        assert response.code == 200
        assert response.headers.getRawHeaders("Content-Type") == ["application/json"]
        assert json.loads(body) == DOCUMENT

    def test_head_announces_the_same_length(self) -> None:
        response, body = self.request("HEAD", "/openapi.json")
        _, whole = self.request("GET", "/openapi.json")
        assert response.code == 200
        assert body == b""
        assert response.headers.getRawHeaders("Content-Length") == [str(len(whole))]
