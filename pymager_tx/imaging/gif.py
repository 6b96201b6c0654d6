"""
The canvas a GIF's frames really cover, read from its blocks.

A GIF's header declares a logical screen, but each frame declares its own
position and size, and may reach past the screen: Pillow then grows the
canvas when it reaches that frame.  A tiny first frame followed by frames
declaring 8000x8000 is a small file that decodes to gigabytes, so the
animation budget is counted over the extent of every frame, read here from
the block structure without decoding anything.
"""

from __future__ import annotations

import struct

_SCREEN = struct.Struct("<HHB")  # width, height, flags (after the 6-byte signature)
_DESCRIPTOR = struct.Struct("<HHHHB")  # left, top, width, height, flags
_EXTENSION, _IMAGE = 0x21, 0x2C
_HAS_COLOUR_TABLE = 0x80


def gif_canvas(data: bytes) -> tuple[int, int]:
    """(width, height) covering the logical screen and every frame.

    Reads up to the trailer or the first block it does not understand, as
    Pillow does; a truncated file counts what it holds."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 6 + _SCREEN.size:
        raise ValueError("not a GIF")
    width, height, flags = _SCREEN.unpack_from(data, 6)
    position = 6 + _SCREEN.size + 2 + _colour_table(flags)  # + background index, aspect
    try:
        while position < len(data):
            block = data[position]
            if block == _EXTENSION:
                position = _after_sub_blocks(data, position + 2)  # past the label
            elif block == _IMAGE:
                left, top, frame_width, frame_height, flags = _DESCRIPTOR.unpack_from(data, position + 1)
                width = max(width, left + frame_width)
                height = max(height, top + frame_height)
                position += 1 + _DESCRIPTOR.size + _colour_table(flags)
                position = _after_sub_blocks(data, position + 1)  # past the LZW code size
            else:
                break  # the trailer, or what Pillow would stop at too
    except (struct.error, IndexError):
        pass  # truncated: what was read stands
    return width, height


def _colour_table(flags: int) -> int:
    return 3 * (2 << (flags & 7)) if flags & _HAS_COLOUR_TABLE else 0


def _after_sub_blocks(data: bytes, position: int) -> int:
    """The position after a chain of length-prefixed sub-blocks ending in 0."""
    while True:
        length = data[position]
        position += 1 + length
        if length == 0:
            return position
