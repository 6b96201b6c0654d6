"""The service keeps the source it decoded for one size for the next, and
an upload's decode for its first size, by the key it was stored under: a
replaced original is decoded afresh, and a size whose source is kept
decoded reads no bytes."""

from __future__ import annotations

from dataclasses import replace

from PIL import Image

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.filesystem import FilesystemBlobStore
from pymager_tx.app.service import ImageService
from pymager_tx.core.model import Size
from pymager_tx.imaging.decoded import DecodedPictures
from pymager_tx.ports import immediate
from tests.fakes import CountedGets
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


def test_a_size_whose_source_is_kept_decoded_reads_no_bytes(
    database: Database, blobs: FilesystemBlobStore
) -> None:
    # 1600x1000 into these: no working copy is worth making, and each size
    # fitted decodes the photo at 1/2, as the upload's check keeps it.
    policy = replace(POLICY, allowed_sizes=frozenset({Size(420, 420), Size(400, 300)}))
    counted = CountedGets(blobs)
    pictures = DecodedPictures(max_bytes=16_000_000, max_item_bytes=4_000_000)
    service = ImageService(database, counted, immediate, policy, decoded=pictures)
    upload = encode(Image.effect_noise((1600, 1000), 50).convert("RGB"), "JPEG", quality=75)
    result_of(run(service.store_original(PHOTO, upload)))
    first = result_of(run(derived_body(service, "photo-420x420-fit.jpg")))
    second = result_of(run(derived_body(service, "photo-400x300-fit.jpg")))
    assert counted.gets == []  # neither the upload's bytes nor their header read again

    # The same renditions as from the bytes, by a service keeping nothing.
    result_of(run(service.delete_original(PHOTO)))
    plain = ImageService(database, counted, immediate, policy)
    result_of(run(plain.store_original(PHOTO, upload)))
    assert result_of(run(derived_body(plain, "photo-420x420-fit.jpg"))).data == first.data
    assert result_of(run(derived_body(plain, "photo-400x300-fit.jpg"))).data == second.data
    assert len(counted.gets) == 2
