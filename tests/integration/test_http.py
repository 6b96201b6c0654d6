"""Every answer of the HTTP interface, over real sockets, with real threads."""

from __future__ import annotations

import hashlib
import json
from email.utils import format_datetime
from io import BytesIO
from typing import Any, TypeVar

import pytest_twisted
import treq
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import LogEvent
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from pymager_tx.client import BadUpload as BadUploadProblem
from pymager_tx.client import (
    IdTaken,
    Image,
    InvalidImage,
    NotFound,
    NotModified,
    ProblemError,
    SizeNotAllowed,
    StorageUnavailable,
    TooManyPixels,
    Unauthorized,
    UploadTooLarge,
)
from tests.conftest import derivations
from tests.images import FIXTURES, jpeg, opened, png, png_declaring, psnr, truncated_jpeg
from tests.integration.conftest import TOKEN, Running
from tests.multipart import form

E = TypeVar("E", bound=BaseException)


def header(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else values[0]


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.code == status
    assert header(response, "Content-Type") == "application/problem+json"
    document: dict[str, Any] = json.loads(await treq.content(response))
    assert document["status"] == status
    return document


async def status_of(work: Deferred[Any], success: int = 200) -> int:
    """The status a client call ended with: success, or its refusal's."""
    try:
        await work
    except ProblemError as refusal:
        return refusal.status
    return success


class TestOriginals:
    @pytest_twisted.ensureDeferred
    async def test_upload_fetch_head_delete(self, server: Running) -> None:
        data = jpeg((160, 120))
        response = await server.request(
            "POST", "/original/photo", files={"file": ("photo.jpg", "image/jpeg", BytesIO(data))}
        )
        assert response.code == 201
        assert header(response, "Location") == f"{server.url}/original/photo"
        described = json.loads(await treq.content(response))
        assert described["sha256"] == hashlib.sha256(data).hexdigest()
        assert (described["width"], described["height"], described["byte_length"]) == (160, 120, len(data))

        client = server.client()
        got = await client.get_original("photo")
        assert got.data == data
        assert got.length == len(data)
        assert got.media_type == "image/jpeg"
        assert got.etag == f'"{described["sha256"]}"' and got.sha256 == described["sha256"]
        assert got.last_modified is not None and got.last_modified.tzinfo is not None
        assert got.cache_control == "public, max-age=86400"

        head = await client.head_original("photo")
        assert not isinstance(head, Image)
        assert head.length == len(data)
        assert head.etag == got.etag

        await client.delete("photo")
        refusal = await failure(client.get_original("photo"), NotFound)
        assert (refusal.status, refusal.type) == (404, "/problems/not-found")
        await failure(client.delete("photo"), NotFound)

    @pytest_twisted.ensureDeferred
    async def test_upload_a_file_and_a_stream_and_stream_back(self, server: Running, tmp_path: Any) -> None:
        client = server.client()
        data = (FIXTURES / "yemmaGourayaInBejaia.jpg").read_bytes()
        original = await client.upload("fromfile", FIXTURES / "yemmaGourayaInBejaia.jpg")
        assert original.sha256 == hashlib.sha256(data).hexdigest()
        with (FIXTURES / "cornicheKabyle.jpg").open("rb") as stream:
            streamed = await client.upload("fromstream", stream)
        assert streamed.byte_length == (FIXTURES / "cornicheKabyle.jpg").stat().st_size
        # Back a part at a time, into a file and to a function.
        target = tmp_path / "copy.jpg"
        with target.open("wb") as sink:
            info = await client.stream_original("fromfile", sink)
        assert target.read_bytes() == data and info.length == len(data)
        parts: list[bytes] = []
        derived = await client.stream_derived("fromfile", 800, 600, "png", sink=parts.append)
        assert len(parts) > 1  # as it arrived, from a real socket
        assert opened(b"".join(parts)).size == (800, 600) and derived.length == len(b"".join(parts))

    @pytest_twisted.ensureDeferred
    async def test_conditional_requests(self, server: Running) -> None:
        client = server.client()
        await client.upload("photo", jpeg((160, 120)))
        original = await client.get_original("photo")
        derived = await client.get_derived("photo", 100, 100, "jpg")
        for first, again, stale in (
            (
                original,
                await client.get_original("photo", etag=original.etag),
                await client.get_original("photo", etag='"stale"'),
            ),
            (
                derived,
                await client.get_derived("photo", 100, 100, "jpg", etag=derived.etag),
                await client.get_derived("photo", 100, 100, "jpg", etag='"stale"'),
            ),
        ):
            assert isinstance(again, NotModified) and again.info.etag == first.etag
            assert isinstance(stale, Image) and stale.data == first.data
            # If-Modified-Since, which the client does not send.
            path = first.url.removeprefix(server.url)
            assert first.last_modified is not None
            response = await server.request(
                "GET", path, headers={"If-Modified-Since": format_datetime(first.last_modified, usegmt=True)}
            )
            assert response.code == 304, path
            assert await treq.content(response) == b""
            assert header(response, "ETag") == first.etag

    @pytest_twisted.ensureDeferred
    async def test_refusals(self, server: Running) -> None:
        client = server.client()
        # An ID the client would refuse to send.
        assert (
            "1 to 128 characters"
            in (await problem(await server.request("PUT", "/original/not.valid", data=png()), 400))["detail"]
        )
        text = (FIXTURES / "somethingthatisnotanimage.txt").read_bytes()
        response = await server.request(
            "POST", "/original/text", files={"file": ("a.txt", "text/plain", BytesIO(text))}
        )
        assert "not an image" in (await problem(response, 400))["detail"]
        await failure(client.upload("cut", truncated_jpeg()), InvalidImage)
        await failure(client.upload("bomb", png_declaring(20_000, 20_000)), TooManyPixels)
        content_type, body = form([("file", png()), ("file", png())])
        await problem(
            await server.request("POST", "/original/two", data=body, headers={"Content-Type": content_type}),
            400,
        )
        await problem(
            await server.request(
                "POST",
                "/original/bad",
                data=b"--x\r\nbroken",
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            ),
            400,
        )
        await failure(client.upload("typed", png(), content_type="text/html"), BadUploadProblem)
        await client.upload("taken", png())
        taken = await failure(client.upload("taken", jpeg()), IdTaken)
        assert taken.document.title == "Image ID taken"
        for image_id in ("cut", "bomb", "two", "text"):
            await failure(client.get_original(image_id), NotFound)

    @pytest_twisted.ensureDeferred
    async def test_a_failing_store_answers_503_with_retry_after_and_no_details(
        self, server: Running, log_events: list[LogEvent]
    ) -> None:
        client = server.client()
        await client.upload("photo", png())
        # Break the store on purpose: a directory where the file should be.
        [stored] = [p for p in (server.service.blobs.root / "originals").rglob("*") if p.is_file()]
        stored.unlink()
        stored.mkdir()
        refusal = await failure(client.get_original("photo"), StorageUnavailable)
        assert refusal.type == "/problems/storage-unavailable"
        assert refusal.retry_after == 5
        assert str(stored) not in json.dumps(vars(refusal.document))
        # The operator's log has the reason the client is not told.
        assert any("Is a directory" in str(e.get("reason")) for e in log_events)


class TestDerived:
    @pytest_twisted.ensureDeferred
    async def test_derive_and_the_original_order_of_checks(self, server: Running) -> None:
        client = server.client()
        await client.upload("photo", jpeg((300, 200)))
        image = await client.get_derived("photo", 100, 100, "jpg")
        assert opened(image.data).size == (100, 100)
        assert image.media_type == "image/jpeg"
        assert image.length == len(image.data)
        head = await client.head_derived("photo", 100, 100, "jpg")
        assert head.length == len(image.data)
        # Names the client would refuse to send.
        await problem(await server.request("GET", "/derived/photo.jpg"), 404)
        await problem(await server.request("GET", "/derived/photo-100x100.zzz"), 400)
        await failure(client.get_derived("photo", 101, 100, "jpg"), SizeNotAllowed)
        await failure(client.get_derived("nobody", 100, 100, "jpg"), NotFound)

    @pytest_twisted.ensureDeferred
    async def test_concurrent_first_requests_share_one_derivation(
        self, server: Running, log_events: list[LogEvent]
    ) -> None:
        # A large original, so the derivation takes long enough to overlap.
        from PIL import Image as Pillow

        from tests.images import encode

        client = server.client()
        await client.upload("big", encode(Pillow.effect_noise((1400, 1000), 60).convert("RGB"), "JPEG"))
        images = await DeferredList(
            [client.get_derived("big", 800, 600, "png") for _ in range(12)], consumeErrors=False
        )
        bodies = set()
        for ok, image in images:
            assert ok
            bodies.add(image.data)
        assert len(bodies) == 1
        assert opened(bodies.pop()).size == (800, 600)
        # Answered as soon as rendered; logged once stored and recorded.
        await server.service.images.derivations_settled()
        assert derivations(log_events) == ["big-800x600.png"]

    @pytest_twisted.ensureDeferred
    async def test_the_original_services_fixtures(self, server: Running) -> None:
        client = server.client()
        for name, image_id in (
            ("yemmaGourayaInBejaia.jpg", "yemmaGouraya"),
            ("cornicheKabyle.jpg", "cornicheKabyle"),
        ):
            data = (FIXTURES / name).read_bytes()
            assert (await client.upload(image_id, data)).byte_length == len(data)
            assert (await client.get_original(image_id)).data == data
        image = await client.get_derived("yemmaGouraya", 100, 100, "jpg")
        reference = opened((FIXTURES / "yemmaGouraya-100x100.jpg").read_bytes())
        assert psnr(opened(image.data), reference) >= 28


class TestDeleteRacingDerivations:
    @pytest_twisted.ensureDeferred
    async def test_never_a_500_never_a_stranded_id_never_a_stray_file(self, server: Running) -> None:
        from PIL import Image as Pillow

        from tests.images import encode

        client = server.client()
        photo = encode(Pillow.effect_noise((600, 400), 60).convert("RGB"), "JPEG")
        sizes_and_extensions = [
            (size, ext)
            for size in ((100, 100), (800, 600), (40, 30))
            for ext in ("jpg", "png", "webp", "gif")
        ]
        for round_ in range(12):
            await client.upload("raced", photo)
            requests = [
                status_of(client.get_derived("raced", *size, ext)) for size, ext in sizes_and_extensions
            ]
            requests.append(status_of(client.delete("raced"), 204))
            codes = await gather(requests)
            assert codes[-1] == 204, round_
            assert set(codes[:-1]) <= {200, 404}, (round_, codes)
        # Each derivation that lost the race took its file back out.
        assert [p for p in server.service.blobs.root.rglob("*") if p.is_file()] == []


class TestConcurrentUploads:
    @pytest_twisted.ensureDeferred
    async def test_exactly_one_of_many_uploads_to_one_id_wins(self, server: Running) -> None:
        client = server.client()
        images = [jpeg((64, 48), (i * 20, 0, 0)) for i in range(10)]
        codes = await gather([status_of(client.upload("contested", data), 201) for data in images])
        assert sorted(codes) == [201] + [409] * 9
        winner = images[codes.index(201)]
        assert (await client.get_original("contested")).data == winner


@implementer(IBodyProducer)
class Chunks:
    """A body of unknown length, so the client sends it chunked."""

    length = UNKNOWN_LENGTH

    def __init__(self, total: int) -> None:
        self.total = total

    def startProducing(self, consumer: Any) -> Deferred[None]:
        sent = 0
        while sent < self.total:
            consumer.write(b"\0" * 65536)
            sent += 65536
        return succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


class TestLimits:
    @pytest_twisted.ensureDeferred
    async def test_too_large_by_content_length(self, server: Running) -> None:
        refusal = await failure(server.client().upload("huge", b"\0" * 3_000_000), UploadTooLarge)
        assert "limited to 2000000" in refusal.detail

    @pytest_twisted.ensureDeferred
    async def test_too_large_while_streaming(self, server: Running) -> None:
        response = await server.request("PUT", "/original/huge", data=Chunks(3_000_000))
        await problem(response, 413)

    @pytest_twisted.ensureDeferred
    async def test_the_upload_limit_itself(self, server: Running) -> None:
        content_type, body = form({"file": b"\0" * 2_000_001})
        response = await server.request(
            "POST", "/original/huge", data=body, headers={"Content-Type": content_type}
        )
        await problem(response, 413)


class TestRouting:
    @pytest_twisted.ensureDeferred
    async def test_405_and_404(self, server: Running) -> None:
        response = await server.request("PATCH", "/original/x")
        await problem(response, 405)
        assert header(response, "Allow") == "DELETE, GET, HEAD, POST, PUT"
        response = await server.request("DELETE", "/derived/x-100x100.jpg")
        await problem(response, 405)
        assert header(response, "Allow") == "GET, HEAD"
        await problem(await server.request("GET", "/nothing/here"), 404)


class TestTokens:
    @pytest_twisted.ensureDeferred
    async def test_writes_need_the_token_reads_do_not(self, guarded: Running) -> None:
        anonymous, writer = guarded.client(), guarded.client(TOKEN)
        refusal = await failure(anonymous.upload("photo", png()), Unauthorized)
        assert refusal.token_given is False
        assert refusal.headers.getRawHeaders("WWW-Authenticate") == ['Bearer realm="pymager"']
        wrong = await failure(guarded.client("wrong-token-0123456789").upload("photo", png()), Unauthorized)
        assert wrong.token_given is True
        assert 'error="invalid_token"' in (wrong.headers.getRawHeaders("WWW-Authenticate") or [""])[0]
        await writer.upload("photo", png())
        assert (await anonymous.get_derived("photo", 100, 100, "png")).media_type == "image/png"
        await failure(anonymous.delete("photo"), Unauthorized)
        await writer.delete("photo")
        await failure(anonymous.get_original("photo"), NotFound)


async def failure(work: Deferred[Any], kind: type[E]) -> E:
    """The refusal a client call must end with."""
    try:
        await work
    except kind as refusal:
        return refusal
    raise AssertionError(f"{kind.__name__} expected")


async def gather(work: list[Any]) -> list[Any]:
    """Run coroutines or Deferreds at once; their results, in order."""
    results = await DeferredList(
        [item if isinstance(item, Deferred) else Deferred.fromCoroutine(item) for item in work],
        consumeErrors=True,
    )
    for ok, result in results:
        if not ok:
            result.raiseException()
    return [result for _, result in results]
