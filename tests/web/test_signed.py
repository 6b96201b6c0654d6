"""Signed derived URLs and sides of 0, over HTTP on the real service in
memory (as tests/web/test_api.py): GET|HEAD /derived/<signature>/<name>."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import pytest
from twisted.logger import LogEvent

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.service import ImagePolicy, ImageService
from pymager_tx.core.model import Size
from pymager_tx.core.signing import signed_path
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.openapi import openapi_document
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.http.signatures import UrlSignatures
from pymager_tx.ports import Offload, immediate
from tests.conftest import derivations
from tests.fakes import ManualOffload
from tests.images import RED, close_to, jpeg, opened, png
from tests.results import result_of
from tests.web.checked import BASE, CheckedClient
from tests.web.fake_service import FakeImageService, derived_record
from tests.web.test_api import POLICY, Client, assert_problem, content_length, header, store_photo

KEY = "new-key-0123456789abcdef"
OLD_KEY = "old-key-0123456789abcdef"
OTHER_KEY = "not-ours-0123456789abcdef"
SIGNED_POLICY = replace(
    POLICY, allowed_sizes=POLICY.allowed_sizes | {Size(300, 0), Size(0, 50)}, max_signed_side=1000
)


def make_api(
    database: Database,
    keys: tuple[str, ...] = (KEY, OLD_KEY),
    policy: ImagePolicy = SIGNED_POLICY,
    imaging: Offload = immediate,
) -> ImageAPI:
    service = ImageService(database, MemoryBlobStore(), imaging, policy)
    return ImageAPI(service, WriteTokens(()), immediate, HttpPolicy(), UrlSignatures(keys))


@pytest.fixture
def client(database: Database) -> Client:
    made = Client(make_api(database))
    assert made.put("/original/photo", jpeg((300, 200))).code == 201
    return made


def problem_type(response: Any, status: int, detail_contains: str = "") -> str:
    kind: str = assert_problem(response, status, detail_contains)["type"]
    return kind


class TestSignedSizes:
    def test_an_unlisted_size_is_served_when_signed(self, client: Client, log_events: list[LogEvent]) -> None:
        response = client.request("GET", signed_path("photo-150x90.jpg", KEY))
        assert response.code == 200, response.body
        assert header(response, "Content-Type") == "image/jpeg"
        assert opened(response.body).size == (150, 90)
        again = client.request("GET", signed_path("photo-150x90.jpg", KEY))
        assert again.body == response.body
        assert derivations(log_events) == ["photo-150x90.jpeg"]

    def test_the_signature_is_the_documented_hmac(self, client: Client) -> None:
        # Computed here as the README tells a back end to, not with the core's code.
        digest = hmac.new(KEY.encode(), b"photo-150x90-fit.png", hashlib.sha256).digest()
        signature = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        response = client.request("GET", f"/derived/{signature}/photo-150x90-fit.png")
        assert response.code == 200, response.body
        assert opened(response.body).size == (135, 90)

    def test_unsigned_the_same_size_stays_refused(self, client: Client) -> None:
        refused = client.request("GET", "/derived/photo-150x90.jpg")
        assert problem_type(refused, 403, "allowed: ") == "/problems/size-not-allowed"

    def test_listed_sizes_are_served_unsigned_and_signed(self, client: Client) -> None:
        unsigned = client.request("GET", "/derived/photo-100x100.jpg")
        signed = client.request("GET", signed_path("photo-100x100.jpg", KEY))
        assert unsigned.code == signed.code == 200
        assert signed.body == unsigned.body

    @pytest.mark.parametrize(
        "path",
        [
            signed_path("photo-150x90.jpg", OTHER_KEY),
            # A signature of one size, on another.
            signed_path("photo-150x90.jpg", KEY).replace("150x90", "1000x900"),
            "/derived/not-a-signature/photo-150x90.jpg",
            "/derived/" + "A" * 43 + "/photo-150x90.jpg",
            # Listed sizes too: a signed URL is checked whatever it names.
            signed_path("photo-100x100.jpg", OTHER_KEY),
        ],
        ids=["other key", "other size", "malformed", "wrong", "listed size"],
    )
    def test_a_bad_signature_is_403(self, client: Client, path: str, log_events: list[LogEvent]) -> None:
        response = client.request("GET", path)
        assert problem_type(response, 403, "signature") == "/problems/bad-signature"
        assert derivations(log_events) == []

    def test_a_bad_signature_is_refused_before_the_name_is_read(self, client: Client) -> None:
        response = client.request("GET", "/derived/" + "A" * 43 + "/no such name")
        assert problem_type(response, 403) == "/problems/bad-signature"

    def test_every_key_verifies_and_the_rotated_out_one_no_more(self, database: Database) -> None:
        rotated = Client(make_api(database, keys=(KEY, OLD_KEY)))
        rotated.put("/original/photo", jpeg((300, 200)))
        assert rotated.request("GET", signed_path("photo-150x90.jpg", OLD_KEY)).code == 200
        assert rotated.request("GET", signed_path("photo-150x91.jpg", KEY)).code == 200
        retired = Client(make_api(database, keys=(KEY,)))
        refused = retired.request("GET", signed_path("photo-150x90.jpg", OLD_KEY))
        assert problem_type(refused, 403) == "/problems/bad-signature"

    def test_without_keys_every_signed_url_is_refused(self, database: Database) -> None:
        client = Client(make_api(database, keys=()))
        client.put("/original/photo", jpeg((300, 200)))
        for name in ("photo-150x90.jpg", "photo-100x100.jpg"):
            response = client.request("GET", signed_path(name, KEY))
            assert problem_type(response, 403, "no URL signing keys") == "/problems/bad-signature"
        assert client.request("GET", "/derived/photo-100x100.jpg").code == 200

    def test_head_of_a_signed_url(self, client: Client) -> None:
        path = signed_path("photo-640x480.webp", KEY)
        head_first = client.request("HEAD", path)
        get = client.request("GET", path)
        head = client.request("HEAD", path)
        assert head_first.code == get.code == head.code == 200
        assert head_first.body == head.body == b""
        assert content_length(head_first) == content_length(head) == str(len(get.body))
        assert header(head, "ETag") == header(get, "ETag")
        refused = client.request("HEAD", signed_path("photo-640x480.webp", OTHER_KEY))
        assert refused.code == 403
        assert header(refused, "Content-Type") == "application/problem+json"

    def test_a_signed_url_revalidates(self, client: Client) -> None:
        path = signed_path("photo-150x90.jpg", KEY)
        etag = header(client.request("GET", path), "ETag")
        assert etag is not None
        assert client.request("GET", path, headers={"If-None-Match": etag}).code == 304

    def test_an_unknown_id_is_404_once_signed(self, client: Client) -> None:
        response = client.request("GET", signed_path("nobody-150x90.jpg", KEY))
        assert problem_type(response, 404) == "/problems/not-found"


class TestSignedBounds:
    def test_a_side_over_max_signed_side_is_400(self, client: Client) -> None:
        response = client.request("GET", signed_path("photo-1001x100.jpg", KEY))
        assert problem_type(response, 400, "1000") == "/problems/size-out-of-bounds"

    def test_more_pixels_than_max_pixels_is_400(self, database: Database) -> None:
        policy = replace(SIGNED_POLICY, max_signed_side=4096)  # sides allowed; 2100x2000 > 4,000,000
        client = Client(make_api(database, policy=policy))
        response = client.request("GET", signed_path("photo-2100x2000.jpg", KEY))
        assert problem_type(response, 400, "max_pixels") == "/problems/size-out-of-bounds"

    def test_the_largest_side_allowed_is_served(self, client: Client) -> None:
        response = client.request("GET", signed_path("photo-1000x10-fit.png", KEY))
        assert response.code == 200, response.body
        assert opened(response.body).size == (15, 10)

    def test_unsigned_sizes_out_of_bounds_are_not_allowed_first(self, client: Client) -> None:
        # Without a signature the bounds are not the question: 403 as before.
        response = client.request("GET", "/derived/photo-5000x5000.jpg")
        assert problem_type(response, 403) == "/problems/size-not-allowed"


class TestZeroSide:
    def test_a_listed_zero_side_keeps_the_aspect_ratio(self, client: Client) -> None:
        wide = client.request("GET", "/derived/photo-300x0.jpg")  # the original is 300x200
        high = client.request("GET", "/derived/photo-0x50.png")
        assert wide.code == high.code == 200
        assert opened(wide.body).size == (300, 200)
        assert opened(high.body).size == (75, 50)

    def test_a_signed_zero_side_keeps_the_aspect_ratio(self, client: Client) -> None:
        for name, size in (("photo-120x0.jpg", (120, 80)), ("photo-0x20-pad.png", (30, 20))):
            response = client.request("GET", signed_path(name, KEY))
            assert response.code == 200, response.body
            assert opened(response.body).size == size

    def test_the_aspect_ratio_is_the_displayed_one(self, client: Client) -> None:
        from tests.images import solid, with_orientation

        # Stored 200x100, displayed 100x200 (EXIF 6: turned a quarter).
        client.put("/original/turned", with_orientation(solid((200, 100), RED), 6))
        response = client.request("GET", "/derived/turned-300x0.jpg")
        assert opened(response.body).size == (300, 600)
        assert close_to(opened(response.body).getpixel((150, 300)), RED)

    def test_unsigned_and_unlisted_a_zero_side_is_not_allowed(self, client: Client) -> None:
        response = client.request("GET", "/derived/photo-120x0.jpg")
        assert problem_type(response, 403) == "/problems/size-not-allowed"

    @pytest.mark.parametrize("signed", [False, True])
    def test_no_side_at_all_is_400(self, client: Client, signed: bool) -> None:
        path = signed_path("photo-0x0.jpg", KEY) if signed else "/derived/photo-0x0.jpg"
        assert problem_type(client.request("GET", path), 400, "0x0") == "/problems/size-out-of-bounds"

    def test_a_worked_out_side_is_held_to_max_signed_side(self, client: Client) -> None:
        client.put("/original/tall", png((20, 400)))  # 1:20
        listed = client.request("GET", "/derived/tall-300x0.png")  # would be 300x6000
        assert problem_type(listed, 400, "max_signed_side") == "/problems/size-out-of-bounds"
        signed = client.request("GET", signed_path("tall-50x0.png", KEY))  # 50x1000: the most
        assert signed.code == 200, signed.body
        assert opened(signed.body).size == (50, 1000)

    def test_each_name_is_a_rendition_of_its_own(self, client: Client, log_events: list[LogEvent]) -> None:
        # 300x0 and 300x200 come to the same pixels, but are asked by two names.
        zero = client.request("GET", "/derived/photo-300x0.jpg")
        whole = client.request("GET", signed_path("photo-300x200.jpg", KEY))
        assert opened(zero.body).size == opened(whole.body).size == (300, 200)
        assert client.request("GET", "/derived/photo-300x0.jpg").body == zero.body
        assert sorted(derivations(log_events)) == ["photo-300x0.jpeg", "photo-300x200.jpeg"]


def test_signed_derivations_are_shared_while_in_flight(
    database: Database, log_events: list[LogEvent]
) -> None:
    imaging = ManualOffload()
    client = Client(make_api(database, imaging=imaging))
    store_photo(client, imaging)
    asking = [client.stub.get(BASE + signed_path("photo-150x0.png", key)) for key in (KEY, OLD_KEY, KEY)]
    assert len(imaging.pending) == 1  # one derivation for the three requests
    imaging.run_all()
    client.stub.flush()
    bodies = {result_of(client.stub.content(result_of(each))) for each in asking}
    assert len(bodies) == 1
    assert opened(bodies.pop()).size == (150, 100)
    assert derivations(log_events) == ["photo-150x0.png"]


def test_the_keys_appear_in_no_answer_and_no_log(client: Client, log_events: list[LogEvent]) -> None:
    answers = [
        client.request("GET", signed_path("photo-150x90.jpg", KEY)),
        client.request("GET", signed_path("photo-150x90.jpg", OTHER_KEY)),
        client.request("GET", signed_path("photo-9000x90.jpg", KEY)),
    ]
    shown = json.dumps([str(event) for event in log_events]) + "".join(
        str(answer.headers) + answer.body.decode("latin-1") for answer in answers
    )
    for key in (KEY, OLD_KEY):
        assert key not in shown
    assert KEY not in repr(UrlSignatures((KEY,)))


def test_the_document_describes_signed_urls() -> None:
    document = openapi_document()
    signed = document["paths"]["/derived/{signature}/{name}"]
    assert {"get", "head"} <= set(signed)
    assert "403" in signed["get"]["responses"] and "400" in signed["get"]["responses"]
    schemas = document["components"]["schemas"]
    assert "/problems/bad-signature" in schemas["Problem403"]["properties"]["type"]["enum"]
    assert "/problems/size-out-of-bounds" in schemas["Problem400"]["properties"]["type"]["enum"]


def test_the_route_checks_the_signature_before_asking_the_service() -> None:
    fake = FakeImageService()
    fake.hold("photo-150x90.jpg", derived_record("photo-150x90.jpg", b"jpeg"), b"jpeg")
    api = ImageAPI(fake, WriteTokens(()), immediate, HttpPolicy(), UrlSignatures((KEY,)))
    client = CheckedClient(api.resource())
    assert client.request("GET", signed_path("photo-150x90.jpg", KEY)).code == 200
    assert fake.calls == ["derived", "signed", "body"]
    fake.calls.clear()
    assert client.request("GET", signed_path("photo-150x90.jpg", OTHER_KEY)).code == 403
    assert client.request("GET", "/derived/photo-150x90.jpg").code == 200  # unsigned: as it was
    assert fake.calls == ["derived", "body"]


def test_signed_sizes_use_the_working_copy_where_it_will_do(
    database: Database, log_events: list[LogEvent]
) -> None:
    policy = replace(SIGNED_POLICY, allowed_sizes=frozenset({Size(100, 100), Size(300, 0)}))
    client = Client(make_api(database, policy=policy))
    client.put("/original/large", jpeg((2000, 1500)))
    small = client.request("GET", signed_path("large-200x150.jpg", KEY))
    zero = client.request("GET", "/derived/large-300x0.jpg")
    big = client.request("GET", signed_path("large-1000x750.jpg", KEY))
    assert [opened(answer.body).size for answer in (small, zero, big)] == [
        (200, 150),
        (300, 225),
        (1000, 750),
    ]
    sources = {event["derived_id"]: event["source"] for event in log_events if "derived_id" in event}
    # The copy is made for the listed sizes (twice 300 wide): enough for 200x150 and 300x0, not 1000x750.
    assert sources == {
        "large-200x150.jpeg": "working copy",
        "large-300x0.jpeg": "working copy",
        "large-1000x750.jpeg": "original",
    }


def test_a_zero_side_never_enlarges_when_upscale_is_off(database: Database) -> None:
    policy = replace(SIGNED_POLICY, encoding=replace(SIGNED_POLICY.encoding, upscale=False))
    client = Client(make_api(database, policy=policy))
    client.put("/original/small", png((60, 40)))
    assert opened(client.request("GET", "/derived/small-300x0.png").body).size == (60, 40)
    assert opened(client.request("GET", signed_path("small-30x0.png", KEY)).body).size == (30, 20)
