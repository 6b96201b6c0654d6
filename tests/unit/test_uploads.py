from __future__ import annotations

from io import BytesIO

import pytest

from pymager_tx.core.errors import BadUpload
from pymager_tx.http.uploads import image_from_body, image_from_form
from tests.multipart import form

IMAGE = b"\xff\xd8\xff\xe0 not really a jpeg \r\n--almost-a-boundary\r\n"


def test_takes_the_file_part() -> None:
    content_type, body = form({"title": b"holiday", "file": IMAGE})
    assert image_from_form(content_type, BytesIO(body)) == IMAGE


def test_takes_a_file_part_without_a_filename_byte_for_byte() -> None:
    content_type, body = form({"file": IMAGE}, filenames=False)
    assert image_from_form(content_type, BytesIO(body)) == IMAGE


def test_keeps_large_parts_whole() -> None:
    large = bytes(range(256)) * 40_000
    content_type, body = form({"file": large})
    assert image_from_form(content_type, BytesIO(body)) == large


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("image/jpeg", IMAGE, "POST takes multipart/form-data"),
        (None, IMAGE, "POST takes multipart/form-data"),
        ("application/x-www-form-urlencoded", b"file=abc", "POST takes multipart/form-data"),
        ("multipart/form-data", IMAGE, "no boundary"),
        ("multipart/form-data; boundary=XyZ", b"garbage", "malformed"),
        ("multipart/form-data; boundary=XyZ", b"", "malformed"),
    ],
)
def test_refuses_what_is_not_a_form(content_type: str | None, body: bytes, message: str) -> None:
    with pytest.raises(BadUpload, match=message):
        image_from_form(content_type, BytesIO(body))


def test_refuses_a_truncated_form() -> None:
    content_type, body = form({"file": IMAGE})
    with pytest.raises(BadUpload):
        image_from_form(content_type, BytesIO(body[:-10]))


def test_refuses_a_form_without_the_file() -> None:
    content_type, body = form({"picture": IMAGE})
    with pytest.raises(BadUpload, match="no part named 'file'"):
        image_from_form(content_type, BytesIO(body))


def test_refuses_several_files() -> None:
    content_type, body = form([("file", IMAGE), ("file", IMAGE)])
    with pytest.raises(BadUpload, match="2 parts named 'file'"):
        image_from_form(content_type, BytesIO(body))


def test_refuses_a_flood_of_parts() -> None:
    content_type, body = form([(f"f{i}", b"x") for i in range(1000)] + [("file", IMAGE)])
    with pytest.raises(BadUpload):
        image_from_form(content_type, BytesIO(body))


def test_media_types_are_case_insensitive() -> None:
    content_type, body = form({"file": IMAGE})
    assert (
        image_from_form(content_type.replace("multipart/form-data", "Multipart/Form-Data"), BytesIO(body))
        == IMAGE
    )
    assert image_from_body("Image/PNG", BytesIO(IMAGE)) == IMAGE


@pytest.mark.parametrize(
    "boundary",
    [
        "boundary*=UTF-8''%E2%82%AC",
        'boundary="' + "x" * 71 + '"',
        'boundary="ends with space "',
        'boundary="a<b"',
    ],
)
def test_refuses_boundaries_rfc_2046_does_not_allow(boundary: str) -> None:
    with pytest.raises(BadUpload, match="boundary"):
        image_from_form(f"multipart/form-data; {boundary}", BytesIO(b"--x\r\n"))


@pytest.mark.parametrize("content_type", [None, "image/png", "image/jpeg; q=1", "application/octet-stream"])
def test_raw_bodies(content_type: str | None) -> None:
    assert image_from_body(content_type, BytesIO(IMAGE)) == IMAGE


@pytest.mark.parametrize(
    "content_type", ["text/plain", "multipart/form-data; boundary=x", "application/json"]
)
def test_raw_bodies_of_other_types_are_refused(content_type: str) -> None:
    with pytest.raises(BadUpload, match="PUT takes the raw image"):
        image_from_body(content_type, BytesIO(IMAGE))
