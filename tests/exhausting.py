"""A PNG decoder that runs out of memory while the test says so.

Registered with Pillow under a name of its own, for a test's
DecodeLimits.decoders, it reads real PNGs; while its Memory is exhausted,
loading pixels fails the way Pillow's decoders fail when an allocation
does: with MemoryError.  So the code under test meets the condition where
it really meets it, inside Pillow, with no seam of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from PIL import Image, PngImagePlugin

DECODER = "EXHAUSTING-PNG"


class Memory:
    def __init__(self) -> None:
        self.exhausted = False
        self.failed_loads = 0  # how often a load ran out of memory


class _ExhaustingPng(PngImagePlugin.PngImageFile):
    memory: Memory

    def load(self) -> Any:
        if self.memory.exhausted:
            self.memory.failed_loads += 1
            raise MemoryError()
        return super().load()


@contextmanager
def exhausting_decoder(memory: Memory) -> Iterator[str]:
    """The decoder's name, registered with Pillow while the block runs."""

    def factory(fp: IO[bytes], filename: str | bytes | None) -> _ExhaustingPng:
        image = _ExhaustingPng(fp, filename)
        image.memory = memory
        return image

    Image.init()
    Image.register_open(DECODER, factory, PngImagePlugin._accept)
    try:
        yield DECODER
    finally:
        del Image.OPEN[DECODER]
        Image.ID.remove(DECODER)
