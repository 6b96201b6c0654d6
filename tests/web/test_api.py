"""The HTTP interface, in memory: a real Klein resource behind a real Site,
reached through treq's StubTreq, with work run at once instead of in threads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from pymager_tx.adapters.sql.database import Database
from pymager_tx.adapters.storage.memory import MemoryBlobStore
from pymager_tx.app.admission import ImageAdmission
from pymager_tx.app.service import ImagePolicy, ImageService
from pymager_tx.core.model import Size
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.routes import HttpPolicy, ImageAPI
from pymager_tx.http.site import PymagerSite
from pymager_tx.imaging.formats import default_decoders
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions
from pymager_tx.ports import IBlobStore, Offload, immediate
from tests.conftest import derivations
from tests.fakes import ManualOffload
from tests.images import FIXTURES, RED, close_to, jpeg, opened, png, png_declaring, truncated_jpeg
from tests.multipart import form
from tests.results import failure_of, result_of
from tests.web.checked import BASE, CheckedClient

TOKEN = "s3cret-token"
POLICY = ImagePolicy(
    allowed_sizes=frozenset({Size(100, 100), Size(800, 600)}),
    max_upload_bytes=400_000,
    limits=DecodeLimits(max_pixels=4_000_000, decoders=default_decoders()),
    encoding=EncodeOptions(),
)


class Client(CheckedClient):
    """guarded: the API has write tokens."""

    def __init__(self, api: ImageAPI, guarded: bool = False) -> None:
        super().__init__(api.resource(), guarded)

    def put(self, path: str, data: bytes, token: str | None = None, **headers: str) -> Any:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("PUT", path, data=data, headers=headers)

    def post(self, path: str, data: bytes, content_type: str, token: str | None = None) -> Any:
        headers = {"Content-Type": content_type}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", path, data=data, headers=headers)


def make_api(
    database: Database,
    blobs: IBlobStore | None = None,
    tokens: tuple[str, ...] = (),
    imaging: Offload = immediate,
) -> ImageAPI:
    service = ImageService(database, blobs or MemoryBlobStore(), imaging, POLICY)
    return ImageAPI(service, WriteTokens(tokens), immediate, HttpPolicy())


def store_photo(client: Client, imaging: ManualOffload) -> None:
    """PUT a 300x200 JPEG as "photo", its probe run; later image work waits
    in imaging until the test runs it."""
    upload = client.stub.put(BASE + "/original/photo", data=jpeg((300, 200)))
    imaging.run_all()
    client.stub.flush()
    assert result_of(upload).code == 201


@pytest.fixture
def client(database: Database) -> Client:
    return Client(make_api(database))


def raw_exchange(api: ImageAPI, request_bytes: bytes) -> bytes:
    """Send request bytes as they are to the real Site around api."""
    site = PymagerSite(api.resource(), max_upload_bytes=POLICY.max_upload_bytes, reactor=MemoryReactorClock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(request_bytes)
    return bytes(transport.value())


def header(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else values[0].decode() if isinstance(values[0], bytes) else values[0]


def content_length(response: Any) -> str | None:
    """The Content-Length the server sent.  Twisted's client keeps it among the
    connection headers for GET (response.length) and as a header for HEAD."""
    value = header(response, "Content-Length")
    if value is None and isinstance(response.length, int):
        return str(response.length)
    return value


def assert_problem(response: Any, status: int, detail_contains: str = "") -> dict[str, Any]:
    assert response.code == status, response.body
    assert header(response, "Content-Type") == "application/problem+json"
    problem = json.loads(response.body)
    assert problem["status"] == status
    assert problem["type"].startswith("/problems/")
    assert problem["title"]
    assert detail_contains in problem["detail"]
    assert "Traceback" not in response.body.decode()
    return problem


class TestUpload:
    def test_put_stores_the_original_and_describes_it(self, client: Client) -> None:
        data = jpeg((80, 60))
        response = client.put("/original/photo-1", data, **{"Content-Type": "image/jpeg"})
        assert response.code == 201
        assert header(response, "Location") == f"{BASE}/original/photo-1"
        described = json.loads(response.body)
        assert described["id"] == "photo-1"
        assert (described["format"], described["width"], described["height"]) == ("jpeg", 80, 60)
        assert described["byte_length"] == len(data)
        assert len(described["sha256"]) == 64
        assert datetime.fromisoformat(described["created_at"]).tzinfo is not None

    def test_post_takes_the_file_part_of_a_form(self, client: Client) -> None:
        data = png((30, 20))
        content_type, body = form({"file": data})
        response = client.post("/original/from_form", body, content_type)
        assert response.code == 201
        assert client.request("GET", "/original/from_form").body == data

    def test_the_original_fixtures_round_trip_byte_for_byte(self, client: Client) -> None:
        for name, image_id in [
            ("yemmaGourayaInBejaia.jpg", "yemmaGouraya"),
            ("cornicheKabyle.jpg", "cornicheKabyle"),
        ]:
            data = (FIXTURES / name).read_bytes()
            assert client.put(f"/original/{image_id}", data).code == 201
            assert client.request("GET", f"/original/{image_id}").body == data

    def test_the_text_fixture_is_refused(self, client: Client) -> None:
        data = (FIXTURES / "somethingthatisnotanimage.txt").read_bytes()
        content_type, body = form({"file": data})
        assert_problem(client.post("/original/text", body, content_type), 400, "not an image")
        assert_problem(client.request("GET", "/original/text"), 404)

    @pytest.mark.parametrize(
        "image_id", ["has.dot", "has space", "a" * 129, "slash%2Finside", "%C3%A9t%C3%A9"]
    )
    def test_ids_outside_the_rule_are_refused_with_the_rule(self, client: Client, image_id: str) -> None:
        response = client.put(f"/original/{image_id}", png())
        if response.code == 404:
            # An encoded slash may split the path; either way nothing is stored.
            assert_problem(response, 404)
        else:
            assert_problem(response, 400, "1 to 128 characters")

    def test_the_longest_id(self, client: Client) -> None:
        assert client.put("/original/" + "a" * 128, png()).code == 201

    @pytest.mark.parametrize(
        ("data", "detail"),
        [
            (b"", "empty"),
            (b"hello, world", "not an image"),
            (truncated_jpeg(), "truncated or corrupt"),
            (png_declaring(3000, 3000), "pixels"),
        ],
    )
    def test_bad_images_are_refused(self, client: Client, data: bytes, detail: str) -> None:
        assert_problem(client.put("/original/bad", data), 400, detail)
        assert_problem(client.request("GET", "/original/bad"), 404)

    @pytest.mark.parametrize(
        ("content_type", "body", "detail"),
        [
            ("image/png", png(), "POST takes multipart/form-data"),
            ("multipart/form-data; boundary=abc", b"--abc\r\nnonsense", "malformed"),
            ("multipart/form-data", b"", "boundary"),
        ],
    )
    def test_bad_forms_are_refused(self, client: Client, content_type: str, body: bytes, detail: str) -> None:
        assert_problem(client.post("/original/x", body, content_type), 400, detail)

    def test_a_form_without_the_file_or_with_two(self, client: Client) -> None:
        assert_problem(
            client.post("/original/x", *reversed(form({"image": png()}))), 400, "no part named 'file'"
        )
        assert_problem(
            client.post("/original/x", *reversed(form([("file", png()), ("file", png())]))), 400, "2 parts"
        )

    def test_put_of_another_content_type(self, client: Client) -> None:
        assert_problem(client.put("/original/x", png(), **{"Content-Type": "text/plain"}), 400, "PUT takes")

    def test_too_large(self, client: Client) -> None:
        assert_problem(client.put("/original/big", b"\0" * 400_001), 413, "limit is 400000")

    def test_an_id_is_taken_once(self, client: Client) -> None:
        assert client.put("/original/once", png()).code == 201
        assert_problem(client.put("/original/once", jpeg()), 409, "already stored")
        content_type, body = form({"file": jpeg()})
        assert_problem(client.post("/original/once", body, content_type), 409)


class TestOriginals:
    def test_get_and_head(self, client: Client) -> None:
        data = jpeg((64, 48))
        client.put("/original/photo", data)
        response = client.request("GET", "/original/photo")
        assert response.code == 200
        assert response.body == data
        assert header(response, "Content-Type") == "image/jpeg"
        assert content_length(response) == str(len(data))
        assert header(response, "Cache-Control") == "public, max-age=86400"
        assert (
            header(response, "ETag")
            == '"' + json.loads(client.put("/original/other", data).body)["sha256"] + '"'
        )
        assert header(
            response,
            "Last-Modified",
        ).endswith(" GMT")
        head = client.request("HEAD", "/original/photo")
        assert head.code == 200
        assert head.body == b""
        assert content_length(head) == content_length(response)
        for name in ("Content-Type", "ETag", "Last-Modified", "Cache-Control"):
            assert header(head, name) == header(response, name), name

    def test_unknown(self, client: Client) -> None:
        assert_problem(client.request("GET", "/original/nobody"), 404, "nobody")
        head = client.request("HEAD", "/original/nobody")
        assert head.code == 404 and head.body == b""

    def test_delete_removes_the_original_and_its_derived_images(self, database: Database) -> None:
        blobs = MemoryBlobStore()
        client = Client(make_api(database, blobs))
        client.put("/original/photo", jpeg((300, 200)))
        assert client.request("GET", "/derived/photo-100x100.jpg").code == 200
        response = client.request("DELETE", "/original/photo")
        assert response.code == 204
        assert response.body == b""
        assert_problem(client.request("GET", "/original/photo"), 404)
        assert_problem(client.request("GET", "/derived/photo-100x100.jpg"), 404)
        assert blobs.blobs == {}
        assert_problem(client.request("DELETE", "/original/photo"), 404)

    def test_a_new_upload_under_a_deleted_id_gets_new_derived_images(self, client: Client) -> None:
        client.put("/original/photo", jpeg((300, 200), (255, 0, 0)))
        red = client.request("GET", "/derived/photo-100x100.png").body
        client.request("DELETE", "/original/photo")
        client.put("/original/photo", jpeg((300, 200), (0, 0, 255)))
        blue = client.request("GET", "/derived/photo-100x100.png").body
        assert opened(red).getpixel((50, 50))[0] > 200
        assert opened(blue).getpixel((50, 50))[2] > 200


class TestDerived:
    def test_derives_exactly_the_size_asked(self, client: Client, log_events: list[LogEvent]) -> None:
        client.put("/original/photo", jpeg((300, 200)))
        response = client.request("GET", "/derived/photo-100x100.jpg")
        assert response.code == 200
        assert header(response, "Content-Type") == "image/jpeg"
        assert content_length(response) == str(len(response.body))
        assert opened(response.body).size == (100, 100)
        again = client.request("GET", "/derived/photo-100x100.JPEG")
        assert again.body == response.body
        assert header(again, "ETag") == header(response, "ETag")
        assert derivations(log_events) == ["photo-100x100.jpeg"]

    def test_a_client_that_disconnects_cancels_nothing_for_the_others(
        self, database: Database, log_events: list[LogEvent]
    ) -> None:
        imaging = ManualOffload()
        client = Client(make_api(database, imaging=imaging))
        store_photo(client, imaging)
        leaving = client.stub.get(BASE + "/derived/photo-100x100.png")
        staying = client.stub.get(BASE + "/derived/photo-100x100.png")
        assert len(imaging.pending) == 1  # one derivation, held in flight
        leaving.cancel()
        failure_of(leaving)
        client.stub.flush()
        imaging.run_all()
        client.stub.flush()
        response = result_of(staying)
        assert response.code == 200
        assert opened(result_of(client.stub.content(response))).size == (100, 100)
        assert derivations(log_events) == ["photo-100x100.png"]
        assert not [event for event in log_events if "log_failure" in event]

    def test_the_original_fixture_matches_the_original_services_framing(self, client: Client) -> None:
        from tests.images import psnr

        client.put("/original/yemmaGouraya", (FIXTURES / "yemmaGourayaInBejaia.jpg").read_bytes())
        response = client.request("GET", "/derived/yemmaGouraya-100x100.jpg")
        reference = opened((FIXTURES / "yemmaGouraya-100x100.jpg").read_bytes())
        assert psnr(opened(response.body), reference) >= 28

    def test_head_of_a_derived_image(self, client: Client) -> None:
        client.put("/original/photo", jpeg((300, 200)))
        head_first = client.request("HEAD", "/derived/photo-800x600.png")
        get = client.request("GET", "/derived/photo-800x600.png")
        head = client.request("HEAD", "/derived/photo-800x600.png")
        assert head_first.code == get.code == head.code == 200
        assert head.body == head_first.body == b""
        assert content_length(head) == content_length(get) == str(len(get.body))
        assert content_length(head_first) == content_length(get)

    def test_resize_modes_are_part_of_the_name(self, client: Client, log_events: list[LogEvent]) -> None:
        # A 2:1 red picture, under an ID that ends like a mode name would.
        client.put("/original/wide-pic", png((300, 150), RED))
        crop = opened(client.request("GET", "/derived/wide-pic-100x100.png").body)
        fit = client.request("GET", "/derived/wide-pic-100x100-fit.png")
        pad = client.request("GET", "/derived/wide-pic-100x100-pad.PNG")
        assert crop.size == (100, 100)
        assert fit.code == pad.code == 200
        assert opened(fit.body).size == (100, 50)  # inside 100x100, aspect kept
        padded = opened(pad.body).convert("RGB")
        assert padded.size == (100, 100)
        assert padded.getpixel((50, 5)) == (255, 255, 255)  # the background, above the picture
        assert close_to(padded.getpixel((50, 50)), RED, 4)
        # Each mode is a rendition of its own, derived once.
        assert client.request("GET", "/derived/wide-pic-100x100-fit.png").body == fit.body
        assert sorted(derivations(log_events)) == [
            "wide-pic-100x100-fit.png",
            "wide-pic-100x100-pad.png",
            "wide-pic-100x100.png",
        ]

    @pytest.mark.parametrize(
        ("path", "status", "detail"),
        [
            ("/derived/photo-100x100-fill.jpg", 404, "-fit.<ext>"),
            ("/derived/photo-100x100-FIT.jpg", 404, ""),
            ("/derived/photo-100x100-fit-pad.jpg", 404, ""),
            ("/derived/photo-123x45-fit.jpg", 403, "allowed: "),
            ("/derived/photo.jpg", 404, "<ID>-<W>x<H>.<ext>"),
            ("/derived/photo-100x100", 404, "<ID>-<W>x<H>.<ext>"),
            ("/derived/photo-100x100.jpg.png", 404, ""),
            ("/derived/-100x100.jpg", 404, ""),
            ("/derived/photo-100x100.xyz", 400, "supported: "),
            ("/derived/photo-123x45.jpg", 403, "allowed: 100x100, 800x600"),
            ("/derived/nobody-100x100.jpg", 404, "nobody"),
            # The original's order: the format before the size, both before the ID.
            ("/derived/nobody-123x45.xyz", 400, ""),
            ("/derived/nobody-123x45.png", 403, ""),
        ],
    )
    def test_refusals_in_the_original_order(
        self, client: Client, path: str, status: int, detail: str
    ) -> None:
        client.put("/original/photo", jpeg())
        assert_problem(client.request("GET", path), status, detail)

    @pytest.mark.parametrize("extension", ["jpg", "jpeg", "JPG", "png", "gif", "webp", "tiff", "bmp", "avif"])
    def test_formats(self, client: Client, extension: str) -> None:
        client.put("/original/photo", jpeg((200, 150)))
        response = client.request("GET", f"/derived/photo-100x100.{extension}")
        assert response.code == 200
        image = opened(response.body)
        assert image.size == (100, 100)
        assert header(response, "Content-Type") == Image_MIME[image.format]


Image_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
    "AVIF": "image/avif",
}


class TestConditionalRequests:
    @pytest.fixture(params=["/original/photo", "/derived/photo-100x100.jpg"])
    def path(self, request: pytest.FixtureRequest, client: Client) -> str:
        client.put("/original/photo", jpeg((200, 150)))
        return str(request.param)

    def test_if_none_match(self, client: Client, path: str) -> None:
        etag = header(client.request("GET", path), "ETag")
        assert etag is not None
        response = client.request("GET", path, headers={"If-None-Match": etag})
        assert response.code == 304
        assert response.body == b""
        assert header(response, "ETag") == etag
        assert header(response, "Cache-Control") == "public, max-age=86400"
        assert client.request("GET", path, headers={"If-None-Match": f'"other", {etag}'}).code == 304
        assert client.request("GET", path, headers={"If-None-Match": "*"}).code == 304
        assert client.request("GET", path, headers={"If-None-Match": '"other"'}).code == 200

    def test_if_modified_since_compares_dates(self, client: Client, path: str) -> None:
        last_modified = header(client.request("GET", path), "Last-Modified")
        assert last_modified is not None
        assert client.request("GET", path, headers={"If-Modified-Since": last_modified}).code == 304
        when = datetime.strptime(last_modified, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
        later = format_datetime(when + timedelta(hours=1), usegmt=True)
        earlier = format_datetime(when - timedelta(seconds=1), usegmt=True)
        assert client.request("GET", path, headers={"If-Modified-Since": later}).code == 304
        assert client.request("GET", path, headers={"If-Modified-Since": earlier}).code == 200
        assert client.request("GET", path, headers={"If-Modified-Since": "not a date"}).code == 200

    @pytest.mark.parametrize(
        "value",
        [
            "Sun, 06 Nov 99999999999999999999 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 +99999999",
            "\u00e9t\u00e9",
            "",
        ],
    )
    def test_an_if_modified_since_that_is_no_date_is_ignored(
        self, client: Client, path: str, value: str
    ) -> None:
        assert client.request("GET", path, headers={"If-Modified-Since": value}).code == 200

    def test_if_none_match_takes_precedence(self, client: Client, path: str) -> None:
        last_modified = header(client.request("GET", path), "Last-Modified")
        assert last_modified is not None
        response = client.request(
            "GET", path, headers={"If-Modified-Since": last_modified, "If-None-Match": '"stale"'}
        )
        assert response.code == 200


class TestRouting:
    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("PATCH", "/original/photo", "DELETE, GET, HEAD, POST, PUT"),
            ("OPTIONS", "/original/photo", "DELETE, GET, HEAD, POST, PUT"),
            ("POST", "/derived/photo-100x100.jpg", "GET, HEAD"),
            ("PUT", "/derived/photo-100x100.jpg", "GET, HEAD"),
            ("DELETE", "/derived/photo-100x100.jpg", "GET, HEAD"),
        ],
    )
    def test_other_methods_get_405_with_allow(
        self, client: Client, method: str, path: str, allowed: str
    ) -> None:
        response = client.request(method, path)
        assert_problem(response, 405, method)
        assert header(response, "Allow") == allowed

    @pytest.mark.parametrize(
        "path", ["/index.html", "/favicon.ico", "/original/", "/original/a/b", "/derived/", "/originals/x"]
    )
    def test_other_paths_get_404(self, client: Client, path: str) -> None:
        assert_problem(client.request("GET", path), 404)

    @pytest.mark.parametrize("method", ["BREW", "PROPFIND"])
    def test_unknown_methods_get_501(self, client: Client, method: str) -> None:
        assert_problem(client.request(method, "/original/photo"), 501, method)

    @pytest.mark.parametrize(
        "request_bytes",
        [
            b"post /original/photo HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            b"head /original/photo HTTP/1.1\r\nHost: h\r\n\r\n",
        ],
    )
    def test_methods_are_case_sensitive(self, database: Database, request_bytes: bytes) -> None:
        # Sent raw: treq upper-cases methods.
        answer = raw_exchange(make_api(database), request_bytes)
        assert answer.startswith(b"HTTP/1.1 501 ")

    @pytest.mark.parametrize(
        "request_bytes",
        [
            b"GET /original/photo HTTP/1.1\r\n\r\n",
            b"GET /original/photo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ],
        ids=["no Host", "two Hosts"],
    )
    def test_http_1_1_needs_one_host(self, database: Database, request_bytes: bytes) -> None:
        assert raw_exchange(make_api(database), request_bytes).startswith(b"HTTP/1.1 400 ")

    @pytest.mark.parametrize("path", ["/original/%ff", "/derived/%C3-100x100.jpg", "/%80"])
    def test_paths_that_are_not_utf8(self, client: Client, path: str, log_events: list[LogEvent]) -> None:
        assert_problem(client.request("GET", path), 400, "UTF-8")
        assert not [event for event in log_events if "log_failure" in event]

    @pytest.mark.parametrize("host", ["a..b", "-x-.example", "\u00e9" * 70, "xn--"])
    def test_a_host_the_url_map_refuses(self, client: Client, host: str, log_events: list[LogEvent]) -> None:
        response = client.request("GET", "/original/x", headers={"Host": host.encode("utf-8")})
        assert response.code in (400, 404), response.body
        assert header(response, "Content-Type") == "application/problem+json"
        assert not [event for event in log_events if "log_failure" in event]

    def test_a_host_that_is_not_utf8(self, client: Client, log_events: list[LogEvent]) -> None:
        assert_problem(client.request("GET", "/original/x", headers={"Host": b"\xff\xfe"}), 400, "Host")
        assert not [event for event in log_events if "log_failure" in event]

    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/original//photo"), ("DELETE", "/original//photo"), ("GET", "//derived/photo-100x100.jpg")],
    )
    def test_doubled_slashes_are_other_paths(self, client: Client, method: str, path: str) -> None:
        client.put("/original/photo", png())
        response = client.request(method, path, headers={"Host": "evil.example"})
        assert_problem(response, 404)
        assert header(response, "Location") is None

    def test_health(self, client: Client) -> None:
        response = client.request("GET", "/healthz")
        assert response.code == 200
        assert json.loads(response.body) == {"status": "ok"}


class TestWriteTokens:
    @pytest.fixture
    def guarded(self, database: Database) -> Client:
        return Client(make_api(database, tokens=(TOKEN, "another")), guarded=True)

    def test_writes_need_a_token(self, guarded: Client) -> None:
        response = guarded.put("/original/photo", png())
        assert_problem(response, 401, "Bearer")
        assert header(response, "WWW-Authenticate") == 'Bearer realm="pymager"'
        content_type, body = form({"file": png()})
        assert_problem(guarded.post("/original/photo", body, content_type), 401)

    def test_a_wrong_token_is_refused(self, guarded: Client) -> None:
        response = guarded.put("/original/photo", png(), token="guess")
        assert_problem(response, 401, "not valid")
        assert header(response, "WWW-Authenticate") == 'Bearer realm="pymager", error="invalid_token"'

    def test_with_a_token_writes_work_and_reads_never_need_one(self, guarded: Client) -> None:
        assert guarded.put("/original/photo", png(), token=TOKEN).code == 201
        assert guarded.request("GET", "/original/photo").code == 200
        assert guarded.request("GET", "/derived/photo-100x100.png").code == 200
        assert_problem(guarded.request("DELETE", "/original/photo"), 401)
        response = guarded.request("DELETE", "/original/photo", headers={"Authorization": "Bearer another"})
        assert response.code == 204

    def test_the_token_is_checked_before_anything_else(self, guarded: Client) -> None:
        assert_problem(guarded.put("/original/bad.id", b"junk"), 401)
        assert_problem(guarded.request("DELETE", "/original/nobody"), 401)


@implementer(IBlobStore)
class BrokenStore(MemoryBlobStore):
    """A store whose reads fail the way a broken disk does."""

    def get(self, key: str) -> Deferred[bytes]:
        return fail(OSError(5, "Input/output error"))


def test_revalidation_and_head_never_read_the_file(database: Database) -> None:
    client = Client(make_api(database, BrokenStore()))
    described = json.loads(client.put("/original/photo", png()).body)
    etag = f'"{described["sha256"]}"'
    assert client.request("GET", "/original/photo", headers={"If-None-Match": etag}).code == 304
    assert client.request("HEAD", "/original/photo").code == 200


def test_unexpected_failures_are_500_and_logged(database: Database, log_events: list[LogEvent]) -> None:
    client = Client(make_api(database, BrokenStore()))
    assert client.put("/original/photo", png()).code == 201
    problem = assert_problem(client.request("GET", "/original/photo"), 500)
    assert "Input/output" not in problem["detail"]
    failures = [event for event in log_events if "log_failure" in event]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(OSError)
    assert failures[0]["uri"] == "/original/photo"


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_a_derived_image_made_again_while_answering_is_described_by_its_own_validators(
    database: Database,
) -> None:
    # Its file is lost: the row found first describes bytes that are gone,
    # and the image is derived again, a day later, while the request waits.
    blobs = MemoryBlobStore()
    now = [datetime(2026, 11, 1, 12, 0, tzinfo=UTC)]
    service = ImageService(database, blobs, immediate, POLICY, clock=lambda: now[0])
    client = Client(ImageAPI(service, WriteTokens(()), immediate, HttpPolicy()))
    assert client.put("/original/photo", jpeg((300, 200))).code == 201
    assert client.request("GET", "/derived/photo-100x100.jpg").code == 200
    for key in [key for key in blobs.blobs if key.startswith("derived/")]:
        del blobs.blobs[key]
    now[0] += timedelta(days=1)
    response = client.request("GET", "/derived/photo-100x100.jpg")
    assert response.code == 200
    assert header(response, "Last-Modified") == format_datetime(now[0], usegmt=True)


def test_past_the_image_queue_derivations_get_503_and_readiness_says_so(database: Database) -> None:
    imaging = ManualOffload()
    admission = ImageAdmission(slots=1, max_queue=0, clock=Clock())
    service = ImageService(database, MemoryBlobStore(), imaging, POLICY, admission=admission)
    api = ImageAPI(service, WriteTokens(()), immediate, HttpPolicy())
    client = Client(api)
    for name in ("one", "two"):
        uploading = client.stub.request("PUT", f"{BASE}/original/{name}", data=jpeg((300, 200)))
        imaging.run_all()
        client.stub.flush()
        assert result_of(uploading).code == 201
    busy = client.stub.request("GET", f"{BASE}/derived/one-100x100.jpg")  # takes the only thread
    refused = client.request("GET", "/derived/two-100x100.jpg")
    assert_problem(refused, 503, "busy")
    assert json.loads(refused.body)["type"] == "/problems/overloaded"
    assert header(refused, "Retry-After") == "2"
    not_ready = client.request("GET", "/readyz")
    assert_problem(not_ready, 503)
    alive = client.request("GET", "/healthz")
    assert alive.code == 200
    assert json.loads(alive.body)["images"] == {
        "threads": 1,
        "busy": 1,
        "queued": 0,
        "max_queue": 0,
        "full": True,
    }
    imaging.run_all()
    client.stub.flush()
    assert result_of(busy).code == 200
    assert client.request("GET", "/readyz").code == 200
    retried = client.stub.request("GET", f"{BASE}/derived/two-100x100.jpg")
    imaging.run_all()
    client.stub.flush()
    assert result_of(retried).code == 200


def test_a_client_leaving_a_health_check_early_is_no_failed_check(
    database: Database, log_events: list[LogEvent]
) -> None:
    transactions = ManualOffload()
    service = ImageService(Database(database.engine, transactions), MemoryBlobStore(), immediate, POLICY)
    api = ImageAPI(service, WriteTokens(()), immediate, HttpPolicy())
    site = PymagerSite(api.resource(), max_upload_bytes=POLICY.max_upload_bytes, reactor=MemoryReactorClock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: images.example.com\r\n\r\n")
    assert len(transactions.pending) == 1, "the check waits for the database"
    channel.connectionLost(Failure(ConnectionDone("the client left")))
    transactions.run_all()
    assert [
        event for event in log_events if event.get("log_level") in (LogLevel.critical, LogLevel.error)
    ] == []


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/original/photo", {}),
        ("HEAD", "/original/photo", {}),
        ("GET", "/original/photo", {"If-None-Match": "*"}),
        ("GET", "/derived/photo-100x100.jpg", {}),
    ],
)
def test_an_original_whose_file_is_lost_is_the_same_documented_404_everywhere(
    database: Database, log_events: list[LogEvent], method: str, path: str, headers: dict[str, str]
) -> None:
    blobs = MemoryBlobStore()
    client = Client(make_api(database, blobs))
    assert client.put("/original/photo", jpeg((300, 200))).code == 201
    for key in [key for key in blobs.blobs if key.startswith("originals/")]:
        del blobs.blobs[key]  # lost: a disk failed, or an operator erred
    response = client.request(method, path, headers=headers)
    assert response.code == 404
    if method != "HEAD":
        assert json.loads(response.body)["type"] == "/problems/original-lost"
    errors = [event for event in log_events if event.get("log_level") == LogLevel.error]
    assert [event["image_id"] for event in errors] == ["photo"]


def test_health_needs_no_query_while_the_database_is_answering(database: Database) -> None:
    # Under load every database thread is busy: a health check that queued a
    # query behind them would answer late, when all is well.
    transactions = ManualOffload()
    service = ImageService(Database(database.engine, transactions), MemoryBlobStore(), immediate, POLICY)
    client = Client(ImageAPI(service, WriteTokens(()), immediate, HttpPolicy()))
    asked = client.stub.request("GET", f"{BASE}/original/photo")
    transactions.run_all()  # a transaction commits: the database answers
    client.stub.flush()
    assert result_of(asked).code == 404
    assert client.request("GET", "/healthz").code == 200
    assert transactions.pending == [], "answered without a query"
