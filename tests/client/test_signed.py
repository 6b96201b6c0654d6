"""The client signing derived URLs with a key, against the real ImageAPI in
memory (tests/web/test_signed.py's setup)."""

from __future__ import annotations

import pytest

from pymager_tx.adapters.sql.database import Database
from pymager_tx.client import BadSignature, PymagerClient, SizeNotAllowed, SizeOutOfBounds
from pymager_tx.core import errors as core
from pymager_tx.core.signing import signed_path
from tests.client.harness import BASE, Harness
from tests.images import jpeg, opened
from tests.web.test_signed import KEY, OLD_KEY, OTHER_KEY, make_api


@pytest.fixture
def service(database: Database) -> Harness:
    """The service, with an original uploaded through an unsigned client."""
    harness = Harness(make_api(database).resource())
    harness.result(harness.client.upload("photo", jpeg((300, 200))))
    return harness


def signing(service: Harness, key: str | None) -> PymagerClient:
    return PymagerClient(BASE, reactor=service.clock, http_client=service.http, signing_key=key)


def test_a_signing_client_fetches_any_size(service: Harness) -> None:
    client = signing(service, KEY)
    image = service.result(client.get_derived("photo", 150, 0, "webp"))
    assert opened(image.data).size == (150, 100)
    assert image.url == BASE + signed_path("photo-150x0.webp", KEY)
    head = service.result(client.head_derived("photo", 150, 0, "webp"))
    assert (head.length, head.etag) == (len(image.data), image.etag)
    assert client.derived_url("photo", 64, 48, "png", "fit") == BASE + signed_path("photo-64x48-fit.png", KEY)
    # Listed sizes too: every derived URL of the client is signed.
    listed = service.result(client.get_derived("photo", 100, 100, "jpg"))
    assert opened(listed.data).size == (100, 100)


def test_a_key_kept_for_rotation_still_verifies(service: Harness) -> None:
    image = service.result(signing(service, OLD_KEY).get_derived("photo", 90, 60, "png"))
    assert opened(image.data).size == (90, 60)


def test_refusals_are_their_exceptions(service: Harness) -> None:
    refused = service.failure(signing(service, OTHER_KEY).get_derived("photo", 150, 90, "jpg"), BadSignature)
    assert isinstance(refused.value, core.BadSignature) and refused.value.status == 403
    assert OTHER_KEY not in str(refused.value)
    service.failure(signing(service, KEY).get_derived("photo", 1001, 90, "jpg"), SizeOutOfBounds)
    service.failure(service.client.get_derived("photo", 150, 90, "jpg"), SizeNotAllowed)


def test_zero_by_zero_is_refused_before_any_request(service: Harness) -> None:
    with pytest.raises(core.SizeOutOfBounds):
        signing(service, KEY).derived_url("photo", 0, 0, "jpg")


def test_a_key_or_a_signer_not_both(service: Harness) -> None:
    with pytest.raises(ValueError, match="not both"):
        PymagerClient(BASE, reactor=service.clock, signing_key=KEY, signer=lambda name: name)
