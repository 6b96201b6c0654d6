"""GET /originals over HTTP, on the real service in memory: pages of stored
originals in ID order, a cursor to the next, never public when tokens are
set; and the query behind it, served by the primary key's index."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import insert, text

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.listing_txn import page_query
from pymager_tx.adapters.sql.originals_txn import claim_original_txn
from pymager_tx.adapters.sql.rows import row_of
from pymager_tx.adapters.sql.schema import originals
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.core.model import OriginalStatus
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.ports import immediate
from tests.db.test_repository import NOW, pending
from tests.images import png
from tests.results import result_of
from tests.web.checked import BASE
from tests.web.test_api import POLICY, TOKEN, Client, assert_problem, header

IDS = ["b-2", "A1", "a_1", "c", "a-1", "Zed", "0"]


def make_client(database: Database, tokens: tuple[str, ...] = ()) -> Client:
    service = ImageService(database, MemoryBlobStore(), immediate, POLICY)
    return Client(ImageAPI(service, WriteTokens(tokens), immediate, HttpPolicy()), guarded=bool(tokens))


@pytest.fixture
def client(database: Database) -> Client:
    client = make_client(database)
    for image_id in IDS:
        assert client.put(f"/original/{image_id}", png((8, 6))).code == 201
    return client


def page(client: Client, query: str, **headers: str) -> dict[str, Any]:
    response = client.request("GET", f"/originals{query}", headers=headers)
    assert response.code == 200, response.body
    assert header(response, "Cache-Control") == "no-store"
    document: dict[str, Any] = json.loads(response.body)
    return document


def every_page(client: Client, query: str) -> list[list[str]]:
    pages = []
    while True:
        document = page(client, query)
        pages.append([item["id"] for item in document["items"]])
        if document["next"] is None:
            return pages
        assert document["next"].startswith(BASE + "/originals?")
        query = "?" + urlsplit(document["next"]).query


def database_order(database: Database) -> list[str]:
    """The IDs in the database's own order (its collation, on PostgreSQL)."""
    with database.engine.connect() as connection:
        rows = connection.execute(text("SELECT image_id FROM originals ORDER BY image_id")).all()
    return [row[0] for row in rows]


class TestListing:
    def test_pages_through_every_original_in_order(self, client: Client, database: Database) -> None:
        pages = every_page(client, "?limit=3")
        assert [len(ids) for ids in pages] == [3, 3, 1]
        assert [image_id for ids in pages for image_id in ids] == database_order(database)
        assert sorted(database_order(database)) == sorted(IDS)

    def test_an_exact_last_page_has_no_next(self, client: Client) -> None:
        assert [len(ids) for ids in every_page(client, f"?limit={len(IDS)}")] == [len(IDS)]

    def test_items_are_described_as_an_upload_is(self, client: Client) -> None:
        document = page(client, "?limit=1")
        item = document["items"][0]
        assert item["url"] == f"{BASE}/original/{item['id']}"
        assert (item["format"], item["width"], item["height"]) == ("png", 8, 6)
        assert len(item["sha256"]) == 64

    def test_by_default_a_hundred_at_most(self, database: Database) -> None:
        client = make_client(database)
        for number in range(101):
            client.put(f"/original/n{number:03d}", png((2, 2)))
        first = page(client, "")
        assert len(first["items"]) == 100
        assert first["next"] == f"{BASE}/originals?after=n099&limit=100"
        assert [item["id"] for item in page(client, "?after=n099")["items"]] == ["n100"]

    def test_after_the_last_id_is_empty(self, client: Client, database: Database) -> None:
        assert page(client, f"?after={database_order(database)[-1]}") == {"items": [], "next": None}

    def test_after_an_id_nobody_has_starts_where_it_would_be(
        self, client: Client, database: Database
    ) -> None:
        order = database_order(database)
        listed = [item["id"] for item in page(client, "?after=b-1")["items"]]
        assert listed == order[len(order) - len(listed) :]
        assert "b-2" in listed

    def test_unfinished_uploads_are_not_listed(self, database: Database) -> None:
        client = make_client(database)
        client.put("/original/ready", png())
        result_of(database.transact(claim_original_txn, pending("pending"), "an-uploader"))
        assert [item["id"] for item in page(client, "")["items"]] == ["ready"]

    @pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "1.5", "", "9999999999"])
    def test_a_limit_out_of_range_is_400(self, client: Client, limit: str) -> None:
        response = client.request("GET", f"/originals?limit={limit}")
        assert assert_problem(response, 400)["type"] == "/problems/invalid-listing"

    def test_limits_of_one_and_a_thousand_are_taken(self, client: Client) -> None:
        assert len(page(client, "?limit=1")["items"]) == 1
        assert len(page(client, "?limit=1000")["items"]) == len(IDS)

    def test_a_cursor_given_twice_is_400(self, client: Client) -> None:
        response = client.request("GET", "/originals?after=a&after=b")
        assert assert_problem(response, 400)["type"] == "/problems/invalid-listing"

    def test_a_cursor_that_is_no_id_is_400(self, client: Client) -> None:
        response = client.request("GET", "/originals?after=..%2Fetc")
        assert assert_problem(response, 400)["type"] == "/problems/invalid-image-id"

    def test_needs_a_write_token_when_tokens_are_set(self, database: Database) -> None:
        client = make_client(database, (TOKEN,))
        client.put("/original/secret", png(), token=TOKEN)
        refused = client.request("GET", "/originals")
        assert assert_problem(refused, 401)["type"] == "/problems/unauthorized"
        assert header(refused, "WWW-Authenticate") is not None
        wrong = client.request("GET", "/originals", headers={"Authorization": "Bearer not-the-token-at-all"})
        assert wrong.code == 401
        listed = page(client, "", Authorization=f"Bearer {TOKEN}")
        assert [item["id"] for item in listed["items"]] == ["secret"]


@pytest.mark.parametrize("after", [None, "n05000"])
def test_a_page_is_read_from_the_primary_key_index_without_sorting(
    database: Database, after: str | None
) -> None:
    """On a table of many originals, as the planner sees it: no scan of
    every row, no sort of them."""
    rows = [
        {
            **row_of(replace(pending(f"n{number:05d}"), status=OriginalStatus.READY), originals),
            "updated_at": NOW,
        }
        for number in range(20_000)
    ]
    with database.engine.begin() as connection:
        connection.execute(insert(originals), rows)
        connection.exec_driver_sql("ANALYZE")
    dialect = database.engine.dialect
    query = str(
        page_query(dialect.name, after, 101).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    )
    with database.engine.connect() as connection:
        if dialect.name == "sqlite":
            found = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}").all()
            plan = "\n".join(str(row[-1]) for row in found)
            assert "sqlite_autoindex_originals_1" in plan, plan
        else:
            plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {query}").all())
            assert "Index Scan using pk_originals" in plan, plan
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
