"""Running out of memory on an image is the server's condition, not the
image's: every entry point of imaging says OutOfMemory, never InvalidImage."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pymager_tx.core.errors import InvalidImage, OutOfMemory
from pymager_tx.core.formats import format_named
from pymager_tx.core.model import DerivedSpec, ResizeMode, Size
from pymager_tx.imaging.formats import default_decoders
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions, make_working_copy, probe, render
from tests.exhausting import Memory, exhausting_decoder
from tests.images import png

SPEC = DerivedSpec(Size(100, 100), format_named("png"), ResizeMode.CROP)
WORK: dict[str, Callable[[bytes, DecodeLimits], object]] = {
    "probe": probe,
    "render": lambda data, limits: render(data, SPEC, limits, EncodeOptions()),
    "make_working_copy": lambda data, limits: make_working_copy(data, limits, [SPEC.size], EncodeOptions()),
}


@pytest.fixture
def memory() -> Memory:
    return Memory()


@pytest.fixture
def limits(memory: Memory) -> Iterator[DecodeLimits]:
    with exhausting_decoder(memory) as decoder:
        yield DecodeLimits(max_pixels=4_000_000, decoders=(decoder,))


@pytest.mark.parametrize("work", sorted(WORK))
def test_a_memory_error_inside_pillow_is_out_of_memory(
    work: str, memory: Memory, limits: DecodeLimits
) -> None:
    data = png((800, 600))
    WORK[work](data, limits)  # a good image: works while memory lasts
    memory.exhausted = True

    with pytest.raises(OutOfMemory) as raised:
        WORK[work](data, limits)

    assert not isinstance(raised.value, InvalidImage)
    assert memory.failed_loads == 1
    assert "try again later" in raised.value.detail
    assert "MemoryError" in raised.value.reason


# Runs in a process of its own: the address-space limit stays there.
_LIMITED = """
import resource, sys
from pathlib import Path
from pymager_tx.imaging.formats import default_decoders
from pymager_tx.imaging.render import DecodeLimits, EncodeOptions, probe, render
from pymager_tx.core.formats import format_named
from pymager_tx.core.model import DerivedSpec, ResizeMode, Size

work, data = sys.argv[1], Path(sys.argv[2]).read_bytes()
limits = DecodeLimits(max_pixels=100_000_000, decoders=default_decoders())
# Padding a small picture, not enlarged, onto a 16000x16000 canvas: the
# canvas is made after decoding, while resizing and encoding.
pad = DerivedSpec(Size(16000, 16000), format_named("png"), ResizeMode.PAD)
spec = DerivedSpec(Size(100, 100), format_named("png"), ResizeMode.CROP)
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
room = (size + 16 * 1024) * 1024  # 16 MiB more than now: far from the 144 MB of either
resource.setrlimit(resource.RLIMIT_AS, (room, room))
try:
    if work == "probe":
        probe(data, limits)
    elif work == "render":
        render(data, spec, limits, EncodeOptions())
    else:
        render(data, pad, limits, EncodeOptions(upscale=False))
except Exception as error:
    print(type(error).__name__)
else:
    print("decoded")
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc")
@pytest.mark.parametrize(
    ("work", "size"), [("probe", (6000, 6000)), ("render", (6000, 6000)), ("pad", (64, 48))]
)
def test_a_real_allocation_failure_is_out_of_memory(work: str, size: tuple[int, int], tmp_path: Path) -> None:
    source = tmp_path / "picture.png"
    source.write_bytes(png(size))  # 6000x6000: small compressed, 36 MP decoded
    assert "PNG" in default_decoders()

    ran = subprocess.run(
        [sys.executable, "-c", _LIMITED, work, str(source)], capture_output=True, text=True, check=True
    )

    assert ran.stdout.strip() == "OutOfMemory", ran.stderr
