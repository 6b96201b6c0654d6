"""HEIC uploads over HTTP, in memory (as tests/web/test_api.py): iPhone
photos made here with pillow-heif's encoder, derived as JPEGs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from PIL import Image

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.imaging.formats import default_decoders
from pymager_tx.ports import immediate
from tests.images import (
    BLUE,
    RED,
    close_to,
    corner,
    heic,
    heic_declaring,
    marked,
    mean_colour,
    opened,
    rgb_profile,
)
from tests.unit.test_imaging_modes import ORANGE, ORANGE_P3_IN_SRGB
from tests.web.test_api import POLICY, Client, assert_problem, header


def api_with(database: Database, decoders: tuple[str, ...]) -> ImageAPI:
    policy = replace(POLICY, limits=replace(POLICY.limits, decoders=decoders))
    service = ImageService(database, MemoryBlobStore(), immediate, policy)
    return ImageAPI(service, WriteTokens(()), immediate, HttpPolicy())


@pytest.fixture
def client(database: Database) -> Client:
    return Client(api_with(database, default_decoders()))


def test_an_iphone_photo_is_stored_as_uploaded_and_described_as_displayed(client: Client) -> None:
    # Stored 120x80 as the sensor saw it, turned a quarter clockwise (irot, EXIF 6).
    data = heic(marked((120, 80)), orientation=6)
    response = client.put("/original/iphone", data, **{"Content-Type": "image/heic"})
    assert response.code == 201, response.body
    described = json.loads(response.body)
    assert (described["format"], described["media_type"]) == ("heic", "image/heic")
    assert (described["width"], described["height"]) == (80, 120)
    original = client.request("GET", "/original/iphone")
    assert original.body == data
    assert header(original, "Content-Type") == "image/heic"


def test_a_derived_jpeg_is_turned_once(client: Client) -> None:
    client.put("/original/iphone", heic(marked((120, 80)), orientation=6))
    response = client.request("GET", "/derived/iphone-100x100-fit.jpg")
    assert response.code == 200
    assert header(response, "Content-Type") == "image/jpeg"
    image = opened(response.body)
    assert (image.format, image.size) == ("JPEG", (67, 100))
    # Orientation 6: the sensor's top-left (red) is now top-right, its top-right (blue) bottom-right.
    assert close_to(corner(image, "tr"), RED), corner(image, "tr")
    assert close_to(corner(image, "br"), BLUE), corner(image, "br")


def test_the_colour_profile_is_converted_to_srgb(client: Client) -> None:
    data = heic(Image.new("RGB", (64, 64), ORANGE), icc_profile=rgb_profile(), quality=-1)
    assert client.put("/original/p3", data).code == 201
    image = opened(client.request("GET", "/derived/p3-100x100.jpg").body)
    assert image.size == (100, 100)
    assert "icc_profile" not in image.info
    assert close_to(mean_colour(image), ORANGE_P3_IN_SRGB, 8), mean_colour(image)


def test_too_many_pixels_in_the_header_is_refused(client: Client) -> None:
    # 3000x3000 declared: past the test policy's 4,000,000 pixels.
    assert_problem(client.put("/original/bomb", heic_declaring(3000, 3000)), 400, "3000x3000")
    assert_problem(client.request("GET", "/original/bomb"), 404)


def test_heif_is_no_output_format(client: Client) -> None:
    client.put("/original/iphone", heic(marked((120, 80))))
    assert_problem(client.request("GET", "/derived/iphone-100x100.heic"), 400, "supported: ")


def test_refused_when_heif_is_not_an_allowed_decoder(database: Database) -> None:
    others = tuple(name for name in default_decoders() if name != "HEIF")
    client = Client(api_with(database, others))
    problem = assert_problem(client.put("/original/iphone", heic(marked())), 400, "not an image")
    assert "HEIF" not in problem["detail"]
    assert_problem(client.request("GET", "/original/iphone"), 404)
