"""Negotiated renditions over HTTP (`<ID>-<W>x<H>[-<mode>].auto`): the
format the Accept header asks for, shared with the explicit extension's
rendition, with Vary: Accept on every answer."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.logger import LogEvent

from pymager_tx.adapters.sql.database import Database
from tests.conftest import derivations
from tests.fakes import ManualOffload
from tests.images import RED, jpeg, opened, png
from tests.results import result_of
from tests.web.checked import BASE
from tests.web.test_api import Client, header, make_api, store_photo

CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI_13 = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
OLD = "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"


@pytest.fixture
def client(database: Database) -> Client:
    return Client(make_api(database))


def get(client: Client, name: str, accept: str | None = None, **headers: str) -> Any:
    if accept is not None:
        headers["Accept"] = accept
    return client.request("GET", f"/derived/{name}", headers=headers)


def vary(response: Any) -> list[str]:
    values = response.headers.getRawHeaders("Vary") or []
    return [name.strip() for value in values for name in value.split(",")]


def test_each_browser_gets_the_best_format_it_names(client: Client) -> None:
    client.put("/original/photo", jpeg((300, 200)))
    answers = {accept: get(client, "photo-100x100.auto", accept) for accept in (CHROME, SAFARI_13, OLD)}
    assert [header(answer, "Content-Type") for answer in answers.values()] == [
        "image/avif",
        "image/webp",
        "image/jpeg",
    ]
    for answer in answers.values():
        assert answer.code == 200
        assert "Accept" in vary(answer)
        assert opened(answer.body).size == (100, 100)
    assert opened(answers[CHROME].body).format == "AVIF"
    assert opened(answers[SAFARI_13].body).format == "WEBP"
    # Three representations, three validators.
    assert len({header(answer, "ETag") for answer in answers.values()}) == 3


def test_without_accept_or_with_wildcards_only_the_fallback_is_sent(client: Client) -> None:
    client.put("/original/photo", jpeg((300, 200)))
    for accept in (None, "*/*", "image/*", "text/html", ""):
        answer = get(client, "photo-100x100.auto", accept)
        assert header(answer, "Content-Type") == "image/jpeg", accept
        assert "Accept" in vary(answer)


def test_q_values_are_honoured(client: Client) -> None:
    client.put("/original/photo", jpeg((300, 200)))
    choices = {
        "image/avif;q=0, image/webp": "image/webp",
        "image/avif;q=0.5, image/webp;q=0.9": "image/webp",
        "image/avif;q=0.5, image/webp;q=0.4, */*;q=0.8": "image/jpeg",
        "image/avif, image/webp, */*;q=0": "image/avif",
        "image/webp;q=0, */*": "image/jpeg",
        "IMAGE/AVIF ; Q=0.9": "image/avif",
        "image/avif;q=2, image/webp;q=abc": "image/jpeg",  # malformed q-values: ignored ranges
    }
    for accept, media_type in choices.items():
        assert header(get(client, "photo-100x100.auto", accept), "Content-Type") == media_type, accept


def test_the_fallback_is_png_when_the_picture_has_transparency(client: Client) -> None:
    client.put("/original/clear", png((300, 200), (255, 0, 0, 100), mode="RGBA"))
    client.put("/original/opaque", png((300, 200), (255, 0, 0, 255), mode="RGBA"))
    clear = get(client, "clear-100x100-fit.auto", "*/*")
    opaque = get(client, "opaque-100x100-fit.auto", "*/*")
    assert header(clear, "Content-Type") == "image/png"
    picture = opened(clear.body)
    assert picture.format == "PNG" and picture.mode == "RGBA"
    assert picture.getpixel((50, 33))[3] == 100
    # An alpha channel that is opaque everywhere is no transparency.
    assert header(opaque, "Content-Type") == "image/jpeg"
    assert opened(opaque.body).format == "JPEG"
    # Served from storage again with the type it was derived in.
    again = client.request("HEAD", "/derived/clear-100x100-fit.auto")
    assert header(again, "Content-Type") == "image/png"
    assert "Accept" in vary(again)


def test_a_negotiated_rendition_is_the_explicit_extensions_and_is_derived_once(
    client: Client, log_events: list[LogEvent]
) -> None:
    client.put("/original/photo", jpeg((300, 200)))
    negotiated = get(client, "photo-100x100.auto", "image/webp")
    explicit = get(client, "photo-100x100.webp")
    fallback = get(client, "photo-100x100.auto")
    fallback_again = get(client, "photo-100x100.AUTO", "image/jpeg")
    assert explicit.body == negotiated.body
    assert header(explicit, "ETag") == header(negotiated, "ETag")
    assert "Accept" not in vary(explicit)
    assert fallback.body == fallback_again.body
    assert derivations(log_events) == ["photo-100x100.webp", "photo-100x100.auto"]


def test_a_negotiated_request_shares_the_explicit_derivation_in_flight(
    database: Database, log_events: list[LogEvent]
) -> None:
    imaging = ManualOffload()
    client = Client(make_api(database, imaging=imaging))
    store_photo(client, imaging)
    explicit = client.stub.get(BASE + "/derived/photo-100x100.webp")
    negotiated = client.stub.get(BASE + "/derived/photo-100x100.auto", headers={"Accept": "image/webp"})
    assert len(imaging.pending) == 1  # one derivation for both
    imaging.run_all()
    client.stub.flush()
    bodies = [result_of(client.stub.content(result_of(each))) for each in (explicit, negotiated)]
    assert bodies[0] == bodies[1]
    assert derivations(log_events) == ["photo-100x100.webp"]


def test_revalidation_is_per_representation(client: Client) -> None:
    client.put("/original/photo", jpeg((300, 200)))
    webp = get(client, "photo-100x100.auto", "image/webp")
    same = get(client, "photo-100x100.auto", "image/webp", **{"If-None-Match": header(webp, "ETag") or ""})
    other = get(client, "photo-100x100.auto", "image/avif", **{"If-None-Match": header(webp, "ETag") or ""})
    assert same.code == 304
    assert "Accept" in vary(same)
    assert other.code == 200
    assert header(other, "Content-Type") == "image/avif"


def test_refusals_of_negotiated_names_vary_on_accept(client: Client) -> None:
    client.put("/original/photo", png((300, 200), RED))
    names = {"photo-123x45.auto": 403, "nobody-100x100.auto": 404, "photo-100x100.auto": 200}
    for name, status in names.items():
        answer = get(client, name, CHROME)
        assert answer.code == status
        assert "Accept" in vary(answer)
    # Other names do not depend on Accept.
    assert "Accept" not in vary(get(client, "photo-100x100.png", CHROME))
