"""Every answer of the HTTP interface, over real sockets, with real threads."""

from __future__ import annotations

import hashlib
import json
from io import BytesIO
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import deferLater
from twisted.logger import LogEvent
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from tests.conftest import derivations
from tests.images import FIXTURES, jpeg, opened, png, png_declaring, psnr, truncated_jpeg
from tests.integration.conftest import TOKEN, Running
from tests.multipart import form


def header(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else values[0]


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.code == status
    assert header(response, "Content-Type") == "application/problem+json"
    document: dict[str, Any] = json.loads(await treq.content(response))
    assert document["status"] == status
    return document


async def upload(server: Running, image_id: str, data: bytes) -> Any:
    response = await server.request("PUT", f"/original/{image_id}", data=data)
    await treq.content(response)
    return response


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

        got = await server.request("GET", "/original/photo")
        assert got.code == 200
        assert await treq.content(got) == data
        assert got.length == len(data)
        assert header(got, "Content-Type") == "image/jpeg"
        assert header(got, "ETag") == f'"{described["sha256"]}"'
        assert header(
            got,
            "Last-Modified",
        ).endswith("GMT")
        assert header(got, "Cache-Control") == "public, max-age=86400"

        head = await server.request("HEAD", "/original/photo")
        assert head.code == 200
        assert await treq.content(head) == b""
        assert header(head, "Content-Length") == str(len(data))
        assert header(head, "ETag") == header(got, "ETag")

        deleted = await server.request("DELETE", "/original/photo")
        assert deleted.code == 204
        await problem(await server.request("GET", "/original/photo"), 404)
        await problem(await server.request("DELETE", "/original/photo"), 404)

    @pytest_twisted.ensureDeferred
    async def test_conditional_requests(self, server: Running) -> None:
        await upload(server, "photo", jpeg((160, 120)))
        for path in ("/original/photo", "/derived/photo-100x100.jpg"):
            first = await server.request("GET", path)
            await treq.content(first)
            etag, last_modified = header(first, "ETag"), header(first, "Last-Modified")
            for conditions in ({"If-None-Match": etag}, {"If-Modified-Since": last_modified}):
                again = await server.request("GET", path, headers=conditions)
                assert again.code == 304, (path, conditions)
                assert await treq.content(again) == b""
                assert header(again, "ETag") == etag
            stale = await server.request("GET", path, headers={"If-None-Match": '"stale"'})
            assert stale.code == 200
            await treq.content(stale)

    @pytest_twisted.ensureDeferred
    async def test_refusals(self, server: Running) -> None:
        assert (
            "1 to 128 characters"
            in (await problem(await server.request("PUT", "/original/not.valid", data=png()), 400))["detail"]
        )
        text = (FIXTURES / "somethingthatisnotanimage.txt").read_bytes()
        response = await server.request(
            "POST", "/original/text", files={"file": ("a.txt", "text/plain", BytesIO(text))}
        )
        assert "not an image" in (await problem(response, 400))["detail"]
        await problem(await server.request("PUT", "/original/cut", data=truncated_jpeg()), 400)
        await problem(await server.request("PUT", "/original/bomb", data=png_declaring(20_000, 20_000)), 400)
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
        await problem(
            await server.request("PUT", "/original/typed", data=png(), headers={"Content-Type": "text/html"}),
            400,
        )
        await upload(server, "taken", png())
        await problem(await server.request("PUT", "/original/taken", data=jpeg()), 409)
        for path in ("/original/cut", "/original/bomb", "/original/two", "/original/text"):
            await problem(await server.request("GET", path), 404)

    @pytest_twisted.ensureDeferred
    async def test_a_failing_store_answers_503_with_retry_after_and_no_details(
        self, server: Running, log_events: list[LogEvent]
    ) -> None:
        await upload(server, "photo", png())
        # Break the store on purpose: a directory where the file should be.
        [stored] = [p for p in (server.service.blobs.root / "originals").rglob("*") if p.is_file()]
        stored.unlink()
        stored.mkdir()
        response = await server.request("GET", "/original/photo")
        document = await problem(response, 503)
        assert document["type"] == "/problems/storage-unavailable"
        assert header(response, "Retry-After") == "5"
        assert str(stored) not in json.dumps(document)
        # The operator's log has the reason the client is not told.
        assert any("Is a directory" in str(e.get("reason")) for e in log_events)


class TestDerived:
    @pytest_twisted.ensureDeferred
    async def test_derive_and_the_original_order_of_checks(self, server: Running) -> None:
        await upload(server, "photo", jpeg((300, 200)))
        response = await server.request("GET", "/derived/photo-100x100.jpg")
        assert response.code == 200
        body = await treq.content(response)
        assert opened(body).size == (100, 100)
        assert header(response, "Content-Type") == "image/jpeg"
        assert response.length == len(body)
        head = await server.request("HEAD", "/derived/photo-100x100.jpg")
        assert header(head, "Content-Length") == str(len(body))
        await problem(await server.request("GET", "/derived/photo.jpg"), 404)
        await problem(await server.request("GET", "/derived/photo-100x100.zzz"), 400)
        await problem(await server.request("GET", "/derived/photo-101x100.jpg"), 403)
        await problem(await server.request("GET", "/derived/nobody-100x100.jpg"), 404)

    @pytest_twisted.ensureDeferred
    async def test_concurrent_first_requests_share_one_derivation(
        self, server: Running, log_events: list[LogEvent]
    ) -> None:
        # A large original, so the derivation takes long enough to overlap.
        from PIL import Image

        from tests.images import encode

        await upload(server, "big", encode(Image.effect_noise((1400, 1000), 60).convert("RGB"), "JPEG"))
        responses = await DeferredList(
            [server.request("GET", "/derived/big-800x600.png") for _ in range(12)], consumeErrors=False
        )
        bodies = set()
        for ok, response in responses:
            assert ok and response.code == 200
            bodies.add(await treq.content(response))
        assert len(bodies) == 1
        assert opened(bodies.pop()).size == (800, 600)
        assert derivations(log_events) == ["big-800x600.png"]

    @pytest_twisted.ensureDeferred
    async def test_the_original_services_fixtures(self, server: Running) -> None:
        for name, image_id in (
            ("yemmaGourayaInBejaia.jpg", "yemmaGouraya"),
            ("cornicheKabyle.jpg", "cornicheKabyle"),
        ):
            data = (FIXTURES / name).read_bytes()
            assert (await upload(server, image_id, data)).code == 201
            assert await treq.content(await server.request("GET", f"/original/{image_id}")) == data
        response = await server.request("GET", "/derived/yemmaGouraya-100x100.jpg")
        reference = opened((FIXTURES / "yemmaGouraya-100x100.jpg").read_bytes())
        assert psnr(opened(await treq.content(response)), reference) >= 28


class TestDeleteRacingDerivations:
    @pytest_twisted.ensureDeferred
    async def test_never_a_500_never_a_stranded_id_never_a_stray_file(self, server: Running) -> None:
        from PIL import Image

        from tests.images import encode

        photo = encode(Image.effect_noise((600, 400), 60).convert("RGB"), "JPEG")
        names = [
            f"{size}.{ext}"
            for size in ("100x100", "800x600", "40x30")
            for ext in ("jpg", "png", "webp", "gif")
        ]
        for round_ in range(12):
            assert (await upload(server, "raced", photo)).code == 201, round_
            requests = [server.request("GET", f"/derived/raced-{name}") for name in names]
            requests.append(server.request("DELETE", "/original/raced"))
            results = await DeferredList(requests)
            codes = []
            for ok, response in results:
                assert ok
                await treq.content(response)
                codes.append(response.code)
            assert codes[-1] == 204, round_
            assert set(codes[:-1]) <= {200, 404}, (round_, codes)
        # Each derivation that lost the race took its file back out.
        assert [p for p in server.service.blobs.root.rglob("*") if p.is_file()] == []


class TestConcurrentUploads:
    @pytest_twisted.ensureDeferred
    async def test_exactly_one_of_many_uploads_to_one_id_wins(self, server: Running) -> None:
        images = [jpeg((64, 48), (i * 20, 0, 0)) for i in range(10)]
        results = await DeferredList([server.request("PUT", "/original/contested", data=d) for d in images])
        codes = []
        winner = None
        for (ok, response), data in zip(results, images, strict=True):
            assert ok
            await treq.content(response)
            codes.append(response.code)
            if response.code == 201:
                winner = data
        assert sorted(codes) == [201] + [409] * 9
        assert await treq.content(await server.request("GET", "/original/contested")) == winner


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
        response = await server.request("PUT", "/original/huge", data=b"\0" * 3_000_000)
        assert "limited to 2000000" in (await problem(response, 413))["detail"]

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
        response = await guarded.request("PUT", "/original/photo", data=png())
        await problem(response, 401)
        assert header(response, "WWW-Authenticate") == 'Bearer realm="pymager"'
        response = await guarded.request("PUT", "/original/photo", data=png(), token="wrong-token-0123456789")
        await problem(response, 401)
        assert 'error="invalid_token"' in (header(response, "WWW-Authenticate") or "")
        response = await guarded.request("PUT", "/original/photo", data=png(), token=TOKEN)
        assert response.code == 201
        await treq.content(response)
        response = await guarded.request("GET", "/derived/photo-100x100.png")
        assert response.code == 200
        await treq.content(response)
        await problem(await guarded.request("DELETE", "/original/photo"), 401)
        response = await guarded.request("DELETE", "/original/photo", token=TOKEN)
        assert response.code == 204


async def _tick() -> None:
    await deferLater(reactor, 0, lambda: None)
