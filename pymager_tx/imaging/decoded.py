"""
Pictures decoded lately, kept for the next rendition of the same source.

A page asks for several sizes of a new picture at once (a srcset), and each
rendition decodes the same bytes again, mostly at the same DCT scale: the
working copy at 1/2, say.  Decoding is a third of such a render (3.5 of 9 ms
from a working copy on the bench machine), so the decoded pixels are kept
by source and scale in a small LRU, and a render that needs a decode
another thread is making right now waits for it instead of decoding too:
one decode however many sizes ask at once.

Only small decodes are kept (max_item_bytes each: working copies and small
photos at a reduced scale, never a large original), within max_bytes in
all: a few megabytes, against the hundreds a burst of large originals
takes while they are decoded.  The same bytes
decoded at the same scale are the same pixels, so a rendition comes out the
same whether its source was kept or not.  Kept pictures are shared between
threads read-only: a render resizes from them and never changes them.  A
source is named by its storage key, which a new upload never reuses, so
nothing kept outlives its meaning; it is only ever evicted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from PIL import Image

__all__ = ["DecodedPictures", "KeptSource", "Reuse", "bytes_per_pixel", "picture_bytes"]

# Bytes a pixel takes in Pillow's memory, by mode: RGB is stored as four.
_ONE_BYTE = frozenset({"1", "L", "P"})
_TWO_BYTES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def picture_bytes(picture: Image.Image) -> int:
    return picture.width * picture.height * bytes_per_pixel(picture.mode)


def bytes_per_pixel(mode: str) -> int:
    if mode in _ONE_BYTE:
        return 1
    if mode in _TWO_BYTES:
        return 2
    return 4


@dataclass(frozen=True)
class KeptSource:
    """What a render needs of a JPEG besides its pixels, read from its
    header when it was decoded: with a picture of it kept, a render needs
    neither its bytes nor their header (see imaging.render.render_kept)."""

    stored: tuple[int, int]  # as stored, before its EXIF orientation
    orientation: int
    icc_profile: bytes | None


class _Decoding:
    """A decode under way, which other threads wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.picture: Image.Image | None = None
        self.error: BaseException | None = None


class DecodedPictures:
    def __init__(self, max_bytes: int, max_item_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_item_bytes = min(max_item_bytes, max_bytes)
        self._lock = threading.Lock()
        self._kept: OrderedDict[Hashable, Image.Image] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._decoding: dict[Hashable, _Decoding] = {}
        # The facts of each source a kept picture was decoded from, and
        # how many of its pictures are kept: dropped with the last.
        self._sources: dict[Hashable, tuple[KeptSource, int]] = {}
        self._source_of: dict[Hashable, Hashable] = {}  # by picture key

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._kept)

    def source(self, name: Hashable) -> KeptSource | None:
        """The facts of the source so named, while a picture of it is kept."""
        with self._lock:
            entry = self._sources.get(name)
        return None if entry is None else entry[0]

    def holds(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._kept

    def peek(self, key: Hashable) -> Image.Image | None:
        """The picture kept under key, if it is (never decoding)."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
            return kept

    def get(
        self,
        key: Hashable,
        decode: Callable[[], Image.Image],
        source: tuple[Hashable, KeptSource] | None = None,
    ) -> Image.Image:
        """The picture kept under key, or decode()'s, kept if small enough;
        while another thread decodes key, its picture (or its error) once
        it is done.  The caller must not change the picture.  source: the
        name and facts of the source the picture is decoded from."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                return kept
            under_way = self._decoding.get(key)
            if under_way is None:
                mine = self._decoding[key] = _Decoding()
        if under_way is not None:
            under_way.done.wait()
            if under_way.error is not None:
                raise under_way.error  # the same bytes would fail the same way here
            assert under_way.picture is not None
            return under_way.picture
        try:
            picture = decode()
        except BaseException as error:
            mine.error = error
            raise
        else:
            mine.picture = picture
            self._keep(key, picture, source)
            return picture
        finally:
            with self._lock:
                del self._decoding[key]
            mine.done.set()

    def offer(
        self, key: Hashable, picture: Image.Image, source: tuple[Hashable, KeptSource] | None = None
    ) -> None:
        """Keep picture under key, as if get() had decoded it (if small
        enough): for a decode made before anyone asked, an upload's."""
        with self._lock:
            if key in self._decoding:
                return  # its decoder keeps its own
        self._keep(key, picture, source)

    def _keep(self, key: Hashable, picture: Image.Image, source: tuple[Hashable, KeptSource] | None) -> None:
        size = picture_bytes(picture)
        if size > self.max_item_bytes:
            return
        with self._lock:
            if key in self._kept:
                return
            self._kept[key] = picture
            self._bytes += size
            if source is not None:
                name, facts = source
                _, count = self._sources.get(name, (facts, 0))
                self._sources[name] = (facts, count + 1)
                self._source_of[key] = name
            while self._bytes > self.max_bytes:
                evicted_key, evicted = self._kept.popitem(last=False)
                self._bytes -= picture_bytes(evicted)
                self._forget_source(evicted_key)

    def _forget_source(self, key: Hashable) -> None:
        name = self._source_of.pop(key, None)
        if name is None:
            return
        facts, count = self._sources[name]
        if count > 1:
            self._sources[name] = (facts, count - 1)
        else:
            del self._sources[name]


@dataclass(frozen=True)
class Reuse:
    """Where a render may find its source decoded already: pictures, and
    the source's name there (its storage key)."""

    pictures: DecodedPictures
    source: str
