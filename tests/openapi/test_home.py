"""The home page, as HTML: what it says, what it links, what it escapes, and
the policy that forbids scripts.  tests/openapi/test_browser.py opens it in
a real browser."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from treq.testing import StubTreq

from pymager_tx import __version__
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.home import content_security_policy, render_home
from pymager_tx.http.openapi import openapi_document
from pymager_tx.http.routes import ImageAPI
from pymager_tx.ports import immediate
from tests.openapi.contract import check_exchange
from tests.results import result_of
from tests.web.fake_service import FakeImageService


class Page(HTMLParser):
    """The text a person reads, the links, and every tag of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self._hidden = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("style", "title"):
            self._hidden += 1
        if tag == "a":
            self.links.extend(value for name, value in attrs if name == "href" and value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def get(method: str, path: str) -> tuple[Any, bytes]:
    stub = StubTreq(ImageAPI(FakeImageService(), WriteTokens(()), immediate).resource())
    url = "http://images.example.com" + path
    response = result_of(stub.request(method, url))
    body = result_of(stub.content(response))
    check_exchange(method, url, None, None, response, body, tokens=False)
    return response, body


def test_the_page_says_what_the_service_is_and_links_what_else_it_serves() -> None:
    response, body = get("GET", "/")
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type") == ["text/html; charset=utf-8"]
    page = Page(body.decode("utf-8"))
    assert f"pymager-tx Version {__version__}" in page.visible
    assert "Image storage and resizing over HTTP." in page.visible
    assert {"/openapi.json", "/metrics", "/healthz"} <= set(page.links)


def test_the_page_is_the_reference_of_every_operation() -> None:
    page = Page(get("GET", "/")[1].decode("utf-8"))
    for path, item in openapi_document()["paths"].items():
        for method in ("get", "head", "post", "put", "delete"):
            if method in item:
                assert f"{method} {path}" in page.visible, (method, path)
    for kind in openapi_document()["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]:
        assert kind in page.visible
    # The grammars, as written in the document: escaped, not taken for tags.
    assert "<ID>-<W>x<H>-fit.<ext>" in page.visible
    assert "ext" not in page.tags and "id" not in page.tags


def test_the_page_runs_no_script_and_loads_nothing_from_elsewhere() -> None:
    response, body = get("GET", "/")
    policy = response.headers.getRawHeaders("Content-Security-Policy")
    assert policy == [content_security_policy()]
    directives = dict(each.strip().split(" ", 1) for each in policy[0].split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'none'"
    assert "unsafe-inline" not in policy[0]
    assert "script" not in Page(body.decode("utf-8")).tags


def test_everything_from_the_document_is_escaped() -> None:
    document = openapi_document()
    document["info"]["title"] = "<script>alert(1)</script>"
    document["info"]["version"] = '"><img src=x>'
    document["paths"]["/original/{image_id}"]["get"]["summary"] = "<b>bold</b> & `<i>`"
    html = render_home(document)
    page = Page(html)
    assert {"script", "img", "b", "i"}.isdisjoint(page.tags)
    assert "<script>alert(1)</script>" in page.visible
    assert "<b>bold</b> &" in page.visible


def test_head_of_the_page() -> None:
    response, body = get("HEAD", "/")
    _, whole = get("GET", "/")
    assert response.code == 200
    assert body == b""
    assert response.headers.getRawHeaders("Content-Length") == [str(len(whole))]
