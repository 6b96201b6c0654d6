"""The service keeps the source it decoded for one size for the next, and
an upload's decode for its first size, by the key it was stored under: a
replaced original is decoded afresh."""

from __future__ import annotations

from dataclasses import replace

from PIL import Image

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.core.model import Size
from pymager_tx.imaging.decoded import DecodedPictures
from pymager_tx.ports import immediate
from tests.images import encode, opened
from tests.results import result_of
from tests.service_calls import derived_body
from tests.unit.test_service import PHOTO, POLICY, run


def photo(seed: int) -> bytes:
    noise = Image.effect_noise((960, 640), 40 + seed).convert("RGB")
    return encode(noise, "JPEG", quality=90)


def test_later_sizes_of_an_original_reuse_its_decode_until_it_is_replaced(
    database: Database, blobs: FilesystemBlobStore
) -> None:
    pictures = DecodedPictures(max_bytes=16_000_000, max_item_bytes=4_000_000)
    # 240x160 and 200x100 (fit) both decode a 960x640 JPEG at 1/2 scale.
    policy = replace(POLICY, allowed_sizes=frozenset({Size(240, 160), Size(200, 100)}))
    service = ImageService(database, blobs, immediate, policy, decoded=pictures)
    result_of(run(service.store_original(PHOTO, photo(0))))
    # The upload's probe decoded it whole, as its working copy (480x320)
    # needs, and kept that for it.
    assert (len(pictures), pictures.bytes) == (1, 960 * 640 * 4)
    first = result_of(run(derived_body(service, "photo-240x160-fit.jpg")))
    # The working copy was made from the kept decode, and its own decode kept.
    assert (len(pictures), pictures.bytes) == (2, 960 * 640 * 4 + 480 * 320 * 4)
    kept = pictures.bytes
    second = result_of(run(derived_body(service, "photo-200x100-fit.jpg")))
    assert (len(pictures), pictures.bytes) == (2, kept)
    assert opened(first.data).size == (240, 160) and opened(second.data).size == (150, 100)

    result_of(run(service.delete_original(PHOTO)))
    result_of(run(service.store_original(PHOTO, photo(1))))
    again = result_of(run(derived_body(service, "photo-240x160-fit.jpg")))
    # Decoded anew from the new upload (new keys), not from what was kept.
    assert len(pictures) == 4
    assert again.data != first.data
