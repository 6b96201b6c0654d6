"""The client against the real ImageAPI in memory (tests/web/test_api.py's
setup): every call, its typed answer, and every refusal as its exception."""

from __future__ import annotations

import hashlib
import io
import random
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image as Pillow
from treq.testing import StubTreq

from pymager_tx.adapters.sql.database import Database
from pymager_tx.client import (
    IdTaken,
    Image,
    ImageInfo,
    InvalidImage,
    NotFound,
    NotModified,
    Original,
    PymagerClient,
    SizeNotAllowed,
    TooManyPixels,
    Unauthorized,
    UploadTooLarge,
)
from pymager_tx.core import errors as core
from tests.client.harness import BASE, Harness
from tests.images import encode, jpeg, opened, png, png_declaring
from tests.results import result_of
from tests.web.test_api import make_api

TOKEN = "s3cret-token"


@pytest.fixture
def api(database: Database) -> Harness:
    return Harness(make_api(database, tokens=(TOKEN,)).resource(), TOKEN)


def big_png() -> bytes:
    """Incompressible, larger than the service sends whole (256 KiB), smaller
    than the test policy's upload limit."""
    pixels = random.Random(7).randbytes(330 * 300 * 3)
    return encode(Pillow.frombytes("RGB", (330, 300), pixels), "PNG")


class Reads(io.RawIOBase):
    """A stream that is not seekable, and counts how it is read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.sizes: list[int] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        self.sizes.append(len(buffer))
        part = self._data.read(len(buffer))
        buffer[: len(part)] = part
        return len(part)


def test_upload_bytes_then_get_head_and_delete(api: Harness) -> None:
    data = jpeg((160, 120))
    original = api.result(api.client.upload("photo", data))
    assert isinstance(original, Original)
    assert original.id == "photo"
    assert original.url == f"{BASE}/original/photo"
    assert (original.format, original.media_type) == ("jpeg", "image/jpeg")
    assert (original.width, original.height, original.byte_length) == (160, 120, len(data))
    assert original.sha256 == hashlib.sha256(data).hexdigest()
    assert isinstance(original.created_at, datetime) and original.created_at.tzinfo is not None

    image = api.result(api.client.get_original("photo"))
    assert isinstance(image, Image)
    assert image.data == data
    assert image.media_type == "image/jpeg"
    assert image.length == len(data)
    assert image.sha256 == original.sha256
    assert image.etag == f'"{original.sha256}"'
    assert image.cache_control == "public, max-age=86400"
    assert image.last_modified is not None

    head = api.result(api.client.head_original("photo"))
    assert isinstance(head, ImageInfo) and not isinstance(head, Image)
    assert (head.length, head.etag, head.media_type) == (len(data), image.etag, "image/jpeg")

    assert api.result(api.client.delete("photo")) is None
    api.failure(api.client.get_original("photo"), NotFound)
    refusal = api.failure(api.client.delete("photo"), NotFound).value
    assert isinstance(refusal, core.ImageNotFound)  # the core's error too
    assert refusal.status == 404 and refusal.type == "/problems/not-found"


def test_upload_from_a_path_sends_its_media_type(api: Harness, tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(png((30, 20)))
    original = api.result(api.client.upload("fromfile", path))
    assert (original.format, original.width) == ("png", 30)
    assert api.result(api.client.get_original("fromfile")).data == path.read_bytes()
    # A media type the service does not take is refused, by the service.
    refusal = api.failure(api.client.upload("typed", path, content_type="text/html"), core.BadUpload)
    assert "text/html" in refusal.value.detail


def test_a_stream_is_sent_a_part_at_a_time_chunked_and_left_open(api: Harness) -> None:
    data = big_png()
    assert len(data) > 200_000
    stream = Reads(data)
    original = api.result(api.client.upload("streamed", stream))  # type: ignore[arg-type]
    assert original.byte_length == len(data)
    assert original.sha256 == hashlib.sha256(data).hexdigest()
    # Never read whole: 64 KiB at a time.
    assert max(stream.sizes) <= 64 * 1024 and len(stream.sizes) > 3
    assert not stream.closed
    assert api.result(api.client.get_original("streamed")).data == data


def test_a_seekable_stream_is_sent_from_where_it_stands(api: Harness) -> None:
    data = png((40, 30))
    stream = io.BytesIO(b"junk" + data)
    stream.seek(4)
    original = api.result(api.client.upload("seeked", stream))
    assert original.byte_length == len(data)
    assert not stream.closed


def test_stream_the_original_and_a_derived_image_into_a_file_and_a_callback(api: Harness) -> None:
    data = big_png()
    api.result(api.client.upload("big", data))
    target = io.BytesIO()
    info = api.result(api.client.stream_original("big", target))
    assert target.getvalue() == data
    assert info.length == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    arrived: list[bytes] = []
    api.result(api.client.stream_original("big", arrived.append))
    assert b"".join(arrived) == data

    parts: list[bytes] = []
    derived = api.result(api.client.stream_derived("big", 800, 600, "png", sink=parts.append))
    whole = b"".join(parts)
    assert opened(whole).size == (800, 600)
    assert derived.media_type == "image/png" and derived.length == len(whole)
    assert derived.url == f"{BASE}/derived/big-800x600.png"


def test_derived_images_conditional_requests_and_modes(api: Harness) -> None:
    api.result(api.client.upload("photo", jpeg((300, 200))))
    image = api.result(api.client.get_derived("photo", 100, 100, "jpg"))
    assert opened(image.data).size == (100, 100)
    assert image.url == api.client.derived_url("photo", 100, 100, "jpg")
    fitted = api.result(api.client.get_derived("photo", 100, 100, "png", "fit"))
    assert opened(fitted.data).size == (100, 67)
    head = api.result(api.client.head_derived("photo", 100, 100, "jpg"))
    assert (head.etag, head.length) == (image.etag, len(image.data))

    assert image.etag is not None
    again = api.result(api.client.get_derived("photo", 100, 100, "jpg", etag=image.etag))
    assert isinstance(again, NotModified) and again.info.etag == image.etag
    changed = api.result(api.client.get_derived("photo", 100, 100, "jpg", etag='"stale"'))
    assert isinstance(changed, Image) and changed.data == image.data
    original = api.result(api.client.get_original("photo"))
    assert original.etag is not None
    assert isinstance(api.result(api.client.get_original("photo", etag=original.etag)), NotModified)
    target = io.BytesIO()
    streamed = api.result(api.client.stream_original("photo", target, etag=original.etag))
    assert isinstance(streamed, NotModified) and target.getvalue() == b""


def test_every_refusal_is_its_problem_types_exception(api: Harness) -> None:
    api.result(api.client.upload("taken", png()))
    taken = api.failure(api.client.upload("taken", jpeg()), IdTaken).value
    assert isinstance(taken, core.ImageIdTaken)
    assert (taken.document.status, taken.document.title) == (409, "Image ID taken")
    assert "taken" in taken.detail and str(taken).startswith("409 Image ID taken: ")
    api.failure(api.client.upload("text", b"not an image at all"), InvalidImage)
    api.failure(api.client.upload("bomb", png_declaring(20_000, 20_000)), TooManyPixels)
    api.failure(api.client.upload("huge", b"\0" * 400_001), UploadTooLarge)
    api.failure(api.client.get_derived("taken", 101, 100, "jpg"), SizeNotAllowed)
    api.failure(api.client.get_derived("nobody", 100, 100, "jpg"), NotFound)
    # An extension no format has is refused before asking.
    api.failure(api.client.get_derived("taken", 100, 100, "zzz"), core.UnsupportedOutputFormat)


def test_writes_send_the_token_and_reads_do_not(database: Database) -> None:
    resource = make_api(database, tokens=(TOKEN,)).resource()
    anonymous = Harness(resource)
    refusal = anonymous.failure(anonymous.client.upload("photo", png()), Unauthorized).value
    assert refusal.token_given is False
    assert refusal.headers.getRawHeaders("www-authenticate") == ['Bearer realm="pymager"']
    wrong = Harness(resource, "wrong-token-0123")
    assert wrong.failure(wrong.client.upload("photo", png()), Unauthorized).value.token_given is True
    writer = Harness(resource, TOKEN)
    writer.result(writer.client.upload("photo", png()))
    assert anonymous.result(anonymous.client.get_derived("photo", 100, 100, "png")).media_type == "image/png"
    anonymous.failure(anonymous.client.delete("photo"), Unauthorized)
    writer.result(writer.client.delete("photo"))


def test_bad_names_fail_before_any_request(api: Harness) -> None:
    api.failure(api.client.upload("not.valid", png()), core.InvalidImageId)
    api.failure(api.client.get_original("a/b"), core.InvalidImageId)
    api.failure(api.client.get_derived("photo", -1, 100, "jpg"), core.DerivedNameInvalid)
    api.failure(api.client.get_derived("photo", 0, 0, "jpg"), core.SizeOutOfBounds)
    api.failure(api.client.get_derived("photo", 100, 100, "jpg", "stretch"), ValueError)


def test_stub_treq_serves_as_the_http_client(database: Database) -> None:
    stub = StubTreq(make_api(database).resource())
    client = PymagerClient(BASE, http_client=stub)  # type: ignore[arg-type]
    original = result_of(client.upload("photo", png((20, 10))))
    assert original.width == 20
    assert result_of(client.get_original("photo")).data == png((20, 10))


def test_replace_with_the_etag_read_then_a_stale_one_is_refused(api: Harness) -> None:
    from pymager_tx.client import PreconditionFailed

    old, new = jpeg((160, 120)), png((30, 20))
    api.result(api.client.upload("photo", old))
    image = api.result(api.client.get_original("photo"))
    replaced = api.result(api.client.replace("photo", new, image.etag or ""))
    assert (replaced.id, replaced.format, replaced.sha256) == (
        "photo",
        "png",
        hashlib.sha256(new).hexdigest(),
    )
    assert api.result(api.client.get_original("photo")).data == new
    stale = api.failure(api.client.replace("photo", old, hashlib.sha256(old).hexdigest()))
    assert isinstance(stale.value, PreconditionFailed) and isinstance(stale.value, core.PreconditionFailed)
    # A bare SHA-256 is taken as the ETag it is; "*" replaces whatever is stored.
    assert (
        api.result(api.client.replace("photo", old, replaced.sha256)).sha256
        == hashlib.sha256(old).hexdigest()
    )
    assert api.result(api.client.replace("photo", new, "*")).format == "png"


def test_list_originals_page_by_page(api: Harness) -> None:
    from pymager_tx.client import InvalidListing, Page

    for image_id in ("c", "a", "b"):
        api.result(api.client.upload(image_id, png()))
    first = api.result(api.client.list_originals(limit=2))
    assert isinstance(first, Page)
    assert ([item.id for item in first.items], first.following) == (["a", "b"], "b")
    last = api.result(api.client.list_originals(after=first.following, limit=2))
    assert ([item.id for item in last.items], last.following) == (["c"], None)
    refused = api.failure(api.client.list_originals(limit=5000))
    assert isinstance(refused.value, InvalidListing)


def test_meta_and_the_focal_point(api: Harness) -> None:
    from pymager_tx.client import InvalidFocalPoint, Meta, Rendition

    api.result(api.client.upload("photo", jpeg((160, 120))))
    api.result(api.client.get_derived("photo", 100, 100, "jpg"))
    meta = api.result(api.client.meta("photo"))
    assert isinstance(meta, Meta)
    assert (meta.original.id, meta.original.width, meta.focal_point) == ("photo", 160, None)
    assert meta.blurhash and meta.dominant_color and meta.dominant_color.startswith("#")
    assert [rendition.name for rendition in meta.renditions] == ["photo-100x100.jpeg"]
    assert isinstance(meta.renditions[0], Rendition) and meta.renditions[0].width == 100
    # A new focal point removes the crops made around the old one.
    moved = api.result(api.client.set_focal_point("photo", (0.25, 0.75)))
    assert (moved.focal_point, moved.renditions) == ((0.25, 0.75), [])
    assert api.result(api.client.meta("photo")).focal_point == (0.25, 0.75)
    assert api.result(api.client.set_focal_point("photo", None)).focal_point is None
    refused = api.failure(api.client.set_focal_point("photo", (1.5, 0.5)))
    assert isinstance(refused.value, InvalidFocalPoint) and isinstance(refused.value, core.InvalidFocalPoint)
    missing = api.failure(api.client.meta("nothing"))
    assert isinstance(missing.value, NotFound)


def test_the_focal_point_needs_the_token(database: Database) -> None:
    anonymous = Harness(make_api(database, tokens=(TOKEN,)).resource(), None)
    refused = anonymous.failure(anonymous.client.set_focal_point("photo", (0.5, 0.5)))
    assert isinstance(refused.value, Unauthorized)
