"""The routes' statuses, headers and problem bodies, on a fake service: the
HTTP contract alone, in milliseconds.  tests/web/test_api.py checks the same
answers end to end, on the real service."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pymager_tx.core import errors
from pymager_tx.core.problems import PROBLEMS
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.ports import immediate
from tests.web.checked import BASE, CheckedClient
from tests.web.fake_service import FakeImageService, derived_record, original_record, renewed

PICTURE = b"\x89PNG picture bytes"
ETAG = '"' + original_record("photo", PICTURE).sha256 + '"'


class Client(CheckedClient):
    def __init__(self, service: FakeImageService, tokens: tuple[str, ...] = ()) -> None:
        api = ImageAPI(service, WriteTokens(tokens), immediate, HttpPolicy())
        super().__init__(api.resource(), guarded=bool(tokens))


def header(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else values[0]


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.code == status, response.body
    assert header(response, "Content-Type") == "application/problem+json"
    document: dict[str, Any] = json.loads(response.body)
    assert document["status"] == status
    return document


@pytest.fixture
def service() -> FakeImageService:
    fake = FakeImageService()
    fake.hold("photo", original_record("photo", PICTURE), PICTURE)
    return fake


@pytest.fixture
def client(service: FakeImageService) -> Client:
    return Client(service)


class TestOriginal:
    def test_get_sends_the_bytes_with_their_validators(
        self, client: Client, service: FakeImageService
    ) -> None:
        response = client.request("GET", "/original/photo")
        assert response.code == 200
        assert response.body == PICTURE
        assert header(response, "ETag") == ETAG
        assert header(response, "Last-Modified") == "Fri, 02 Jan 2026 03:04:05 GMT"
        assert header(response, "Cache-Control") == "public, max-age=86400"
        assert header(response, "Content-Type") == "image/png"
        assert header(response, "X-Content-Type-Options") == "nosniff"
        assert service.calls == ["original", "body"]

    def test_head_confirms_the_file_but_reads_no_bytes(
        self, client: Client, service: FakeImageService
    ) -> None:
        response = client.request("HEAD", "/original/photo")
        assert response.code == 200
        assert response.body == b""
        assert header(response, "Content-Length") == str(len(PICTURE))
        assert service.calls == ["original", "confirm"]

    def test_a_current_copy_is_304_without_reading_the_bytes(
        self, client: Client, service: FakeImageService
    ) -> None:
        response = client.request("GET", "/original/photo", headers={"If-None-Match": ETAG})
        assert response.code == 304
        assert response.body == b""
        assert header(response, "ETag") == ETAG
        assert service.calls == ["original", "confirm"]

    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    def test_a_lost_file_is_the_same_answer_whatever_the_method(
        self, client: Client, service: FakeImageService, method: str
    ) -> None:
        service.found["photo"].fails = errors.OriginalLost("the original is lost from storage")
        response = client.request(method, "/original/photo")
        assert response.code == 404
        if method == "GET":
            assert json.loads(response.body)["type"] == "/problems/original-lost"

    def test_a_large_original_is_streamed(self, service: FakeImageService) -> None:
        large = bytes(range(256)) * 4096  # 1 MiB, past what is sent whole
        service.hold("large", original_record("large", large), large)
        response = Client(service).request("GET", "/original/large")
        assert response.code == 200
        assert response.body == large


class TestWrites:
    def test_put_answers_201_with_the_location_and_a_description(self, service: FakeImageService) -> None:
        response = Client(service).request("PUT", "/original/new", data=PICTURE)
        assert response.code == 201
        assert header(response, "Location") == f"{BASE}/original/new"
        described = json.loads(response.body)
        assert described["id"] == "new"
        assert described["byte_length"] == len(PICTURE)
        assert described["created_at"] == "2026-01-02T03:04:05Z"

    @pytest.mark.parametrize("method", ["PUT", "DELETE"])
    def test_writes_need_a_token_when_tokens_are_set(self, service: FakeImageService, method: str) -> None:
        client = Client(service, tokens=("secret",))
        refused = client.request(method, "/original/photo", data=PICTURE)
        assert problem(refused, 401)["type"] == "/problems/unauthorized"
        assert header(refused, "WWW-Authenticate") == 'Bearer realm="pymager"'
        wrong = client.request(
            method, "/original/photo", data=PICTURE, headers={"Authorization": "Bearer no"}
        )
        assert header(wrong, "WWW-Authenticate") == 'Bearer realm="pymager", error="invalid_token"'
        assert "store_original" not in service.calls and "delete_original" not in service.calls

    def test_delete_answers_204(self, client: Client, service: FakeImageService) -> None:
        response = client.request("DELETE", "/original/photo")
        assert response.code == 204
        assert "photo" not in service.found


class TestReplaceAndList:
    def test_put_with_if_match_replaces_and_answers_200_with_the_new_etag(
        self, client: Client, service: FakeImageService
    ) -> None:
        response = client.request("PUT", "/original/photo", data=b"new bytes", headers={"If-Match": ETAG})
        assert response.code == 200
        assert json.loads(response.body)["byte_length"] == len(b"new bytes")
        assert header(response, "ETag") == '"' + original_record("photo", b"new bytes").sha256 + '"'
        assert header(response, "Location") is None
        assert "replace_original" in service.calls and "store_original" not in service.calls

    def test_a_form_post_with_if_match_replaces_too(self, client: Client) -> None:
        body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nnew\r\n--b--\r\n'
        headers = {"If-Match": ETAG, "Content-Type": "multipart/form-data; boundary=b"}
        assert client.request("POST", "/original/photo", data=body, headers=headers).code == 200

    def test_if_match_lists_and_star_reach_the_service(
        self, client: Client, service: FakeImageService
    ) -> None:
        for value in (f'W/"weak", {ETAG}', "*"):
            assert (
                client.request("PUT", "/original/photo", data=PICTURE, headers={"If-Match": value}).code
                == 200
            )
        stale = client.request("PUT", "/original/photo", data=PICTURE, headers={"If-Match": "W/" + ETAG})
        assert problem(stale, 412)["type"] == "/problems/precondition-failed"

    def test_the_listing_needs_a_token_when_tokens_are_set(self, service: FakeImageService) -> None:
        client = Client(service, tokens=("secret-token-0123",))
        assert problem(client.request("GET", "/originals"), 401)["type"] == "/problems/unauthorized"
        assert "list_originals" not in service.calls
        listed = client.request("GET", "/originals", headers={"Authorization": "Bearer secret-token-0123"})
        assert listed.code == 200
        assert [item["id"] for item in json.loads(listed.body)["items"]] == ["photo"]
        assert header(listed, "Cache-Control") == "no-store"

    def test_a_listing_page_links_the_next(self, service: FakeImageService, client: Client) -> None:
        service.hold("zebra", original_record("zebra", PICTURE), PICTURE)
        document = json.loads(client.request("GET", "/originals?limit=1").body)
        assert [item["id"] for item in document["items"]] == ["photo"]
        assert document["next"] == f"{BASE}/originals?after=photo&limit=1"
        assert json.loads(client.request("GET", "/originals?after=photo").body)["next"] is None

    def test_image_answers_carry_the_cache_tag(self, client: Client) -> None:
        for response in (
            client.request("GET", "/original/photo"),
            client.request("HEAD", "/original/photo"),
            client.request("GET", "/original/photo", headers={"If-None-Match": ETAG}),
        ):
            assert header(response, "Surrogate-Key") == "photo"


class TestDerived:
    def test_headers_describe_the_bytes_sent_when_derived_again(self, service: FakeImageService) -> None:
        found = service.hold("photo-10x10.jpg", derived_record("photo-10x10.jpg", b"old"), b"old")
        renewed(found, b"new rendition")
        response = Client(service).request("GET", "/derived/photo-10x10.jpg")
        assert response.body == b"new rendition"
        assert header(response, "ETag") == '"' + found.renewed[0].sha256 + '"'  # type: ignore[index]

    def test_head_reads_nothing(self, service: FakeImageService) -> None:
        service.hold("photo-10x10.jpg", derived_record("photo-10x10.jpg", b"jpeg"), b"jpeg")
        response = Client(service).request("HEAD", "/derived/photo-10x10.jpg")
        assert response.code == 200
        assert header(response, "Content-Type") == "image/jpeg"
        assert service.calls == ["derived"]


ERRORS = [
    errors.InvalidImageId("bad ID"),
    errors.InvalidImage("not a picture"),
    errors.TooManyPixels("too many"),
    errors.BadUpload("no file part"),
    errors.UnsupportedOutputFormat("cannot write xyz"),
    errors.SizeNotAllowed("not allowed"),
    errors.SizeOutOfBounds("over max_signed_side"),
    errors.BadSignature("does not verify"),
    errors.ImageNotFound("none"),
    errors.OriginalLost("lost"),
    errors.DerivedNameInvalid("bad name"),
    errors.ImageIdTaken("taken"),
    errors.UploadTooLarge("too large"),
    errors.RangeNotSatisfiable("past the end", 10),
    errors.DerivationTooCostly("too costly"),
    errors.DatabaseUnavailable("down", "connection refused to db.internal:5432"),
    errors.StorageFull("full", "ENOSPC on /srv/images"),
    errors.StorageUnavailable("failing", "EIO"),
    errors.OutOfMemory("no memory", "MemoryError in a render"),
    errors.Overloaded("busy", "8 queued"),
    errors.DerivationPending("pending", "claim held by host-1-1234"),
    errors.Unauthorized("writes need a token", token_given=False),
    errors.PreconditionFailed("stale"),
    errors.InvalidListingRequest("limit too large"),
    errors.InvalidMetaChange("not an object"),
    errors.InvalidFocalPoint("x is 2"),
    errors.UnsupportedMetaType("text/plain"),
]


# The refusals only an upload meets; the others are raised by a derivation.
UPLOAD_ONLY = (errors.ImageIdTaken, errors.UploadTooLarge, errors.Unauthorized)
# And the ones only a change of metadata meets.
META_ONLY = (errors.InvalidMetaChange, errors.UnsupportedMetaType)


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_every_domain_error_is_its_problem(service: FakeImageService, error: errors.PymagerError) -> None:
    if isinstance(error, UPLOAD_ONLY):
        service.failures["store_original"] = error
        response = Client(service).request("PUT", "/original/new", data=PICTURE)
    elif isinstance(error, errors.PreconditionFailed):
        service.failures["replace_original"] = error
        response = Client(service).request("PUT", "/original/photo", data=PICTURE, headers={"If-Match": ETAG})
    elif isinstance(error, errors.InvalidListingRequest):
        service.failures["list_originals"] = error
        response = Client(service).request("GET", "/originals")
    elif isinstance(error, META_ONLY):
        service.failures["set_focal_point"] = error
        change = b'{"focal_point": {"x": 0.5, "y": 0.5}}'
        headers = {"Content-Type": ["application/json"]}
        response = Client(service).request("PATCH", "/meta/photo", data=change, headers=headers)
    else:
        service.failures["derived"] = error
        response = Client(service).request("GET", "/derived/photo-10x10.jpg")
    expected = PROBLEMS[type(error)]
    document = problem(response, expected.status)
    assert document == {
        "type": f"/problems/{expected.slug}",
        "title": expected.title,
        "status": expected.status,
        "detail": error.detail,
    }
    retry_after = header(response, "Retry-After")
    if isinstance(error, errors.Unavailable):
        assert retry_after is not None and int(retry_after) > 0
        # The reason is for the operator's log, never the client.
        assert error.reason not in response.body.decode()
    else:
        assert retry_after is None
    authenticate = header(response, "WWW-Authenticate")
    assert (authenticate is not None) == isinstance(error, errors.Unauthorized)


def test_every_problem_type_is_tested() -> None:
    assert {type(error) for error in ERRORS} == set(PROBLEMS)


def test_an_unexpected_failure_is_a_500_without_a_traceback(service: FakeImageService) -> None:
    service.failures["original"] = RuntimeError("boom at line 12")
    response = Client(service).request("GET", "/original/photo")
    assert problem(response, 500)["type"] == "/problems/internal-error"
    assert "boom" not in response.body.decode()


class TestOperations:
    def test_healthz_says_ok_and_is_never_cached(self, client: Client) -> None:
        response = client.request("GET", "/healthz")
        assert response.code == 200
        assert json.loads(response.body) == {"status": "ok"}
        assert header(response, "Cache-Control") == "no-store"

    def test_healthz_is_503_when_the_database_does_not_answer(self, service: FakeImageService) -> None:
        service.failures["check_health"] = errors.DatabaseUnavailable("down", "refused")
        response = Client(service).request("GET", "/healthz")
        assert problem(response, 503)["type"] == "/problems/database-unavailable"
        assert header(response, "Retry-After") is not None

    def test_a_full_queue_is_alive_but_not_ready(self, service: FakeImageService) -> None:
        service.load = {"threads": 2, "busy": 2, "queued": 8, "max_queue": 8, "full": True}
        client = Client(service)
        alive = client.request("GET", "/healthz")
        assert alive.code == 200
        assert json.loads(alive.body)["images"]["full"] is True
        ready = client.request("GET", "/readyz")
        assert problem(ready, 503)["type"] == "/problems/overloaded"
        assert header(ready, "Retry-After") is not None


class TestRouting:
    def test_an_unknown_path_is_404(self, client: Client) -> None:
        assert problem(client.request("GET", "/nothing/here"), 404)["type"] == "/problems/not-found"

    def test_a_wrong_method_is_405_with_allow(self, client: Client) -> None:
        response = client.request("PATCH", "/original/photo")
        problem(response, 405)
        assert header(response, "Allow") == "DELETE, GET, HEAD, POST, PUT"

    def test_an_unknown_method_is_501(self, client: Client) -> None:
        assert problem(client.request("BREW", "/original/photo"), 501)["type"] == "/problems/not-implemented"


@pytest.mark.parametrize(
    "error",
    [
        errors.DatabaseUnavailable("the metadata database does not answer", "db.internal:5432 refused"),
        errors.StorageUnavailable("the image storage does not store and return objects", "EIO on /srv/x"),
    ],
    ids=["database", "storage"],
)
def test_readiness_names_the_part_that_failed(service: FakeImageService, error: errors.Unavailable) -> None:
    service.failures["check_ready"] = error
    response = Client(service).request("GET", "/readyz")
    document = problem(response, 503)
    assert document["type"] == f"/problems/{PROBLEMS[type(error)].slug}"
    assert error.reason not in response.body.decode()
    assert header(response, "Retry-After") is not None
    # Liveness does not probe storage.
    assert Client(service).request("GET", "/healthz").code == 200
