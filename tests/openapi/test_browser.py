"""The home page in a real browser: headless Chromium opens it from a
listening server, and what a person sees is checked from the page it
built (its DOM) and from a screenshot.

Chromium is the one named by PYMAGER_TEST_CHROMIUM (.ci/run sets it, and a
missing browser then fails the test), else /usr/bin/chromium or `chromium`
on the PATH; without any, the test skips, saying how to install it, unless
CI is set: in CI it fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from PIL import Image
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from pymager_tx import __version__
from pymager_tx.http.guards import WriteTokens
from pymager_tx.http.openapi import openapi_document
from pymager_tx.http.routes import ImageAPI
from pymager_tx.http.site import PymagerSite
from pymager_tx.ports import immediate
from tests.openapi.test_home import Page
from tests.web.fake_service import FakeImageService

CHROMIUM_HOWTO = (
    "the browser test needs Chromium: `apt-get install -y chromium` (Debian), or its path in "
    "PYMAGER_TEST_CHROMIUM"
)
WIDTH, HEIGHT = 1280, 1600


@pytest.fixture(scope="module")
def chromium() -> str:
    named = os.environ.get("PYMAGER_TEST_CHROMIUM")
    if named:
        if not os.access(named, os.X_OK):
            pytest.fail(f"PYMAGER_TEST_CHROMIUM={named} is no executable; {CHROMIUM_HOWTO}")
        return named
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"no Chromium in CI; {CHROMIUM_HOWTO}")
    pytest.skip(CHROMIUM_HOWTO)


@pytest.fixture
def base_url() -> Iterator[str]:
    """The real Site around the routes, listening on a free loopback port."""
    api = ImageAPI(FakeImageService(), WriteTokens(()), immediate)
    site = PymagerSite(api.resource(), max_upload_bytes=1024, reactor=reactor, access_log=False)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(port.stopListening())


async def run_chromium(chromium: str, profile: Path, *arguments: str) -> bytes:
    """Chromium's output, run headless to the end (the reactor serves meanwhile)."""
    out, err, code = await getProcessOutputAndValue(
        chromium,
        [
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            *arguments,
        ],
        env=dict(os.environ),
    )
    assert code == 0, err.decode("utf-8", "replace")
    data: bytes = out
    return data


@pytest_twisted.ensureDeferred
async def test_a_person_sees_the_service_its_version_links_and_reference(
    chromium: str, base_url: str, tmp_path: Path
) -> None:
    dom = await run_chromium(chromium, tmp_path / "profile", "--dump-dom", base_url + "/")
    page = Page(dom.decode("utf-8"))
    assert f"pymager-tx Version {__version__}" in page.visible
    assert {"/openapi.json", "/metrics", "/healthz"} <= set(page.links)
    for path in openapi_document()["paths"]:
        assert path in page.visible
    assert "<ID>-<W>x<H>-fit.<ext>" in page.visible  # escaped, so shown as written
    assert "script" not in page.tags

    screenshot = tmp_path / "home.png"
    await run_chromium(chromium, tmp_path / "profile", f"--screenshot={screenshot}", base_url + "/")
    with Image.open(screenshot) as image:
        assert image.size == (WIDTH, HEIGHT)
        pixels = image.convert("L")
        # Not a blank or an error page's plain canvas: dark text on a light
        # page, with the heading at the top.
        histogram = pixels.histogram()
        dark, light = sum(histogram[:80]), sum(histogram[200:])
        assert light > 0.7 * WIDTH * HEIGHT
        assert dark > 0.005 * WIDTH * HEIGHT
        top = pixels.crop((0, 0, WIDTH, 120)).histogram()
        assert sum(top[:80]) > 200, "no heading at the top of the page"
