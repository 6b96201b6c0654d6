"""GET|PATCH /meta, focal points and smart crops over HTTP, in memory (as
tests/web/test_api.py), on the real service: pictures made here with a
subject whose place is known, so the right crop is known too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select, update

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.sql.schema import derived, originals
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.rendition_cache import RenditionCache
from pymager_tx.app.service import ImageService
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.imaging import blurhash
from pymager_tx.ports import Offload, immediate
from tests.fakes import ManualOffload
from tests.images import RED, close_to, encode, mean_colour, opened
from tests.results import result_of
from tests.web.checked import BASE
from tests.web.test_api import POLICY, TOKEN, Client, assert_problem, header

GREY = (128, 128, 128)
JSON = {"Content-Type": "application/json"}


def subject_at(
    size: tuple[int, int], box: tuple[int, int, int, int], colour: tuple[int, int, int] = RED
) -> bytes:
    """A flat grey picture with one vivid square (the subject) in box."""
    picture = Image.new("RGB", size, GREY)
    ImageDraw.Draw(picture).rectangle(box, fill=colour)
    return encode(picture, "PNG")


def red_share(image: Image.Image) -> float:
    """The share of the picture that is the red subject."""
    pixels = image.convert("RGB").tobytes()
    count = len(pixels) // 3
    red = sum(1 for i in range(count) if close_to(tuple(pixels[i * 3 : i * 3 + 3]), RED, 60))
    return red / count


def api(
    database: Database, tokens: tuple[str, ...] = (), imaging: Offload = immediate
) -> tuple[ImageAPI, Any]:
    cache = RenditionCache(max_bytes=10_000_000, max_item_bytes=1_000_000, poll_seconds=3600)
    service = ImageService(database, MemoryBlobStore(), imaging, POLICY, cache=cache)
    result_of(service.poll_removals())  # entries are served from memory from now on
    return ImageAPI(service, WriteTokens(tokens), immediate, HttpPolicy()), service


@pytest.fixture
def client(database: Database) -> Client:
    return Client(api(database)[0])


def patch(client: Client, image_id: str, body: object, token: str | None = None, **headers: str) -> Any:
    sent = {**JSON, **headers}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.request("PATCH", f"/meta/{image_id}", data=data, headers=sent)


def meta(client: Client, image_id: str) -> dict[str, Any]:
    response = client.request("GET", f"/meta/{image_id}")
    assert response.code == 200, response.body
    document: dict[str, Any] = json.loads(response.body)
    return document


class TestMeta:
    def test_it_tells_what_the_upload_answered_and_the_summary(self, client: Client) -> None:
        # Mostly red, with a blue band: red dominates.
        picture = Image.new("RGB", (300, 200), RED)
        ImageDraw.Draw(picture).rectangle((0, 0, 299, 40), fill=(0, 0, 255))
        uploaded = json.loads(client.put("/original/red", encode(picture, "PNG")).body)
        document = meta(client, "red")
        for name, value in uploaded.items():
            assert document[name] == value, name
        assert document["focal_point"] is None
        assert document["renditions"] == []
        assert document["dominant_color"] == "#ff0000"
        assert blurhash.components_of(document["blurhash"]) == (4, 3)  # landscape
        placeholder = blurhash.decode(document["blurhash"], 30, 20)
        assert close_to(mean_colour(placeholder, (0, 12, 30, 20)), RED, 50), mean_colour(placeholder)
        assert close_to(mean_colour(placeholder, (0, 0, 30, 3)), (70, 0, 190), 90), mean_colour(placeholder)

    def test_a_portrait_placeholder_has_more_components_down(self, client: Client) -> None:
        client.put("/original/tall", subject_at((100, 300), (10, 10, 20, 20)))
        document = meta(client, "tall")
        assert blurhash.components_of(document["blurhash"]) == (3, 4)
        assert document["dominant_color"] == "#808080"

    def test_renditions_stored_are_listed_and_change_the_etag(self, client: Client) -> None:
        client.put("/original/photo", subject_at((400, 200), (10, 10, 30, 30)))
        before = client.request("GET", "/meta/photo")
        derived_image = client.request("GET", "/derived/photo-100x100-fit.webp")
        after = client.request("GET", "/meta/photo")
        assert header(after, "ETag") != header(before, "ETag")
        assert header(after, "Cache-Control") == "no-cache"
        (rendition,) = json.loads(after.body)["renditions"]
        assert rendition["name"] == "photo-100x100-fit.webp"
        assert rendition["url"] == BASE + "/derived/photo-100x100-fit.webp"
        assert (rendition["media_type"], rendition["width"], rendition["height"]) == ("image/webp", 100, 50)
        assert rendition["byte_length"] == len(derived_image.body)

    def test_revalidation_and_head(self, client: Client) -> None:
        client.put("/original/photo", subject_at((40, 20), (1, 1, 4, 4)))
        response = client.request("GET", "/meta/photo")
        etag = header(response, "ETag")
        assert etag is not None
        again = client.request("GET", "/meta/photo", headers={"If-None-Match": etag})
        assert (again.code, again.body) == (304, b"")
        head = client.request("HEAD", "/meta/photo")
        assert (head.code, head.body, header(head, "ETag")) == (200, b"", etag)

    def test_unknown_ids(self, client: Client) -> None:
        assert_problem(client.request("GET", "/meta/nothing"), 404)
        assert_problem(patch(client, "nothing", {"focal_point": None}), 404)
        assert_problem(client.request("GET", "/meta/bad!id"), 400)

    def test_originals_stored_before_summaries_get_theirs_on_first_request(
        self, client: Client, database: Database
    ) -> None:
        client.put("/original/old", subject_at((60, 40), (0, 0, 59, 39)))
        with database.engine.begin() as conn:
            conn.execute(update(originals).values(blurhash=None, dominant_color=None))
        assert meta(client, "old")["dominant_color"] == "#ff0000"
        with database.engine.begin() as conn:
            stored = conn.execute(select(originals.c.blurhash, originals.c.dominant_color)).one()
        assert stored.dominant_color == "#ff0000" and stored.blurhash


class TestChanges:
    def test_a_write_token_is_needed(self, database: Database) -> None:
        client = Client(api(database, tokens=(TOKEN,))[0], guarded=True)
        client.put("/original/photo", subject_at((40, 20), (1, 1, 4, 4)), token=TOKEN)
        change = {"focal_point": {"x": 0.25, "y": 0.75}}
        assert_problem(patch(client, "photo", change), 401)
        assert_problem(patch(client, "photo", change, token="wrong"), 401)
        response = patch(client, "photo", change, token=TOKEN)
        assert response.code == 200
        assert json.loads(response.body)["focal_point"] == {"x": 0.25, "y": 0.75}
        # Reads never need one.
        assert meta(client, "photo")["focal_point"] == {"x": 0.25, "y": 0.75}

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            (b"{not json", "invalid-meta-change"),
            (b"[1, 2]", "invalid-meta-change"),
            (b'{"focal_point": {"x": NaN, "y": 0.5}}', "invalid-meta-change"),
            ({"blurhash": "x"}, "invalid-meta-change"),
            ({"focal_point": {"x": 0.5}}, "invalid-meta-change"),
            ({"focal_point": {"x": 0.5, "y": 0.5, "z": 1}}, "invalid-meta-change"),
            ({"focal_point": {"x": "0.5", "y": 0.5}}, "invalid-meta-change"),
            ({"focal_point": {"x": True, "y": 0.5}}, "invalid-meta-change"),
            ({"focal_point": [0.5, 0.5]}, "invalid-meta-change"),
            ({"focal_point": {"x": 1.01, "y": 0.5}}, "invalid-focal-point"),
            ({"focal_point": {"x": 0.5, "y": -0.1}}, "invalid-focal-point"),
            ({"focal_point": {"x": 1e999, "y": 0.5}}, "invalid-meta-change"),
        ],
    )
    def test_bad_changes_are_400(self, client: Client, body: object, problem: str) -> None:
        client.put("/original/photo", subject_at((40, 20), (1, 1, 4, 4)))
        document = assert_problem(patch(client, "photo", body), 400)
        assert document["type"] == f"/problems/{problem}"
        assert meta(client, "photo")["focal_point"] is None

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
    def test_other_media_types_are_415(self, client: Client, content_type: str) -> None:
        client.put("/original/photo", subject_at((40, 20), (1, 1, 4, 4)))
        response = patch(client, "photo", {"focal_point": None}, **{"Content-Type": content_type})
        assert assert_problem(response, 415)["type"] == "/problems/unsupported-media-type"

    def test_merge_patch_sets_clears_and_leaves_alone(self, client: Client) -> None:
        client.put("/original/photo", subject_at((40, 20), (1, 1, 4, 4)))
        merge = {"Content-Type": "application/merge-patch+json; charset=utf-8"}
        response = patch(client, "photo", {"focal_point": {"x": 0, "y": 1}}, **merge)
        assert json.loads(response.body)["focal_point"] == {"x": 0.0, "y": 1.0}
        assert json.loads(patch(client, "photo", {}).body)["focal_point"] == {"x": 0.0, "y": 1.0}
        assert json.loads(patch(client, "photo", {"focal_point": None}).body)["focal_point"] is None


class TestCrops:
    def test_a_crop_keeps_the_focal_point_and_forgets_the_crops_made_before(self, client: Client) -> None:
        # The subject at the right edge: a centred 100x100 crop (the middle
        # 200x200) leaves it out entirely.
        client.put("/original/edge", subject_at((400, 200), (330, 80, 370, 120)))
        centred = client.request("GET", "/derived/edge-100x100.jpg")
        assert red_share(opened(centred.body)) == 0
        fitted = client.request("GET", "/derived/edge-100x100-fit.png")
        again = client.request("GET", "/derived/edge-100x100.jpg")  # from memory
        assert header(again, "ETag") == header(centred, "ETag")

        patch(client, "edge", {"focal_point": {"x": 0.875, "y": 0.5}})
        moved = client.request("GET", "/derived/edge-100x100.jpg")
        assert header(moved, "ETag") != header(centred, "ETag")
        image = opened(moved.body)
        # The box is clamped to the right edge: the subject, 40 of 200 source
        # pixels wide, is a fifth of the crop's width, whole.
        assert 0.03 < red_share(image) < 0.05, red_share(image)
        assert close_to(image.getpixel((75, 50)), RED)
        # A fit does not depend on the focal point: kept.
        kept = client.request("GET", "/derived/edge-100x100-fit.png")
        assert header(kept, "ETag") == header(fitted, "ETag")
        names = [rendition["name"] for rendition in meta(client, "edge")["renditions"]]
        assert names == ["edge-100x100-fit.png", "edge-100x100.jpeg"]  # canonical names

    def test_a_smart_crop_finds_the_subject_off_centre(self, client: Client) -> None:
        client.put("/original/left", subject_at((400, 200), (20, 130, 60, 170)))
        assert red_share(opened(client.request("GET", "/derived/left-100x100.png").body)) == 0
        smart = opened(client.request("GET", "/derived/left-100x100-smart.png").body)
        assert smart.size == (100, 100)
        assert red_share(smart) > 0.03, red_share(smart)

    def test_a_smart_crop_of_a_tall_picture_slides_down(self, client: Client) -> None:
        client.put("/original/tall", subject_at((200, 600), (60, 500, 140, 580), colour=(20, 200, 40)))
        smart = opened(client.request("GET", "/derived/tall-100x100-smart.jpg").body)
        bottom = mean_colour(smart, (0, 50, 100, 100))
        assert close_to(mean_colour(smart, (30, 60, 70, 90)), (20, 200, 40), 50), bottom

    def test_a_smart_crop_of_a_face_like_subject(self, client: Client) -> None:
        # Skin tone, not vivid: found by its hue and its edges.
        client.put("/original/face", subject_at((600, 300), (440, 100, 520, 200), colour=(224, 172, 140)))
        smart = opened(client.request("GET", "/derived/face-100x100-smart.png").body)
        # Centred on it as far as the picture allows: the crop is the right
        # half, where the subject spans 47..73 across and 33..67 down.
        assert close_to(mean_colour(smart, (50, 36, 70, 64)), (224, 172, 140), 12), mean_colour(smart)

    def test_a_smart_crop_uses_the_focal_point_when_set(self, client: Client) -> None:
        client.put("/original/left", subject_at((400, 200), (20, 80, 60, 120)))
        before = client.request("GET", "/derived/left-100x100-smart.png")
        assert red_share(opened(before.body)) > 0.03
        patch(client, "left", {"focal_point": {"x": 1.0, "y": 0.5}})
        after = client.request("GET", "/derived/left-100x100-smart.png")
        assert header(after, "ETag") != header(before, "ETag")
        assert red_share(opened(after.body)) == 0
        # Cleared: the subject is found again.
        patch(client, "left", {"focal_point": None})
        assert red_share(opened(client.request("GET", "/derived/left-100x100-smart.png").body)) > 0.03

    def test_a_derivation_running_when_the_focal_point_moves_is_not_recorded(
        self, database: Database
    ) -> None:
        imaging = ManualOffload()
        client = Client(api(database, imaging=imaging)[0])
        upload = client.stub.put(BASE + "/original/edge", data=subject_at((400, 200), (330, 80, 370, 120)))
        imaging.run_all()
        client.stub.flush()
        assert result_of(upload).code == 201
        asked = client.stub.get(BASE + "/derived/edge-100x100.png")
        assert len(imaging.pending) == 1  # the centred crop, held in flight
        assert patch(client, "edge", {"focal_point": {"x": 1, "y": 0.5}}).code == 200
        imaging.run_all()  # the centred crop is made, refused when recorded, made again
        client.stub.flush()
        imaging.run_all()
        client.stub.flush()
        response = result_of(asked)
        image = opened(result_of(client.stub.content(response)))
        assert red_share(image) > 0.03  # made for the new focal point
        with database.engine.begin() as conn:
            rows = conn.execute(select(derived.c.variant, derived.c.focus_version)).all()
            version = conn.execute(select(originals.c.focus_version)).scalar_one()
        assert [tuple(row) for row in rows] == [("100x100.png", version)]
        assert version == 1
