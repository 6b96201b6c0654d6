"""
BlurHash (https://blurha.sh): a picture's blurred placeholder in a few dozen
characters, which front ends decode into a gradient while the image loads.

The algorithm is small and fully specified (woltapp/blurhash's
Algorithm.md); it is written out here rather than taken from a package so
that it runs on the pixels already decoded for an upload's probe, with no
dependency and no second decode.  Pure Python on a picture of at most a few
thousand pixels: under a millisecond.
"""

from __future__ import annotations

import math
import operator

from PIL import Image

_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
_VALUES = {character: index for index, character in enumerate(_CHARACTERS)}

RGB = tuple[int, int, int]


def components_for(width: int, height: int, most: int = 4) -> tuple[int, int]:
    """Components across and down: most along the longer side, fewer along
    the shorter (at least 3, the usual 4x3 for a landscape photo)."""
    if width >= height:
        return most, max(3, min(most, round(most * height / width)))
    return max(3, min(most, round(most * width / height))), most


def encode(picture: Image.Image, x_components: int, y_components: int) -> str:
    """The BlurHash of an RGB picture (small: every pixel is visited once
    per component across)."""
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("BlurHash takes 1 to 9 components each way")
    rgb = picture.convert("RGB")
    width, height = rgb.size
    # Each channel in linear light, row after row.
    channels = [[_LINEAR[value] for value in band.tobytes()] for band in rgb.split()]
    x_cos = [[math.cos(math.pi * i * x / width) for x in range(width)] for i in range(x_components)]
    y_cos = [[math.cos(math.pi * j * y / height) for y in range(height)] for j in range(y_components)]
    # The basis is a product of a cosine across and one down, so each
    # component is a sum down of sums across, the sums across made once for
    # every component down: a third of the products for 4x3, each in C
    # (sum over map), where a loop per pixel and component took 0.78 ms of
    # every upload for a 32x18 copy (now 0.51).
    rows = range(0, width * height, width)
    across = [
        [
            [sum(map(operator.mul, x_cos[i], channel[row : row + width])) for row in rows]
            for channel in channels
        ]
        for i in range(x_components)
    ]
    factors: list[tuple[float, float, float]] = []
    for j in range(y_components):
        for i in range(x_components):
            scale = (1.0 if i == 0 and j == 0 else 2.0) / (width * height)
            red, green, blue = (sum(map(operator.mul, y_cos[j], sums)) * scale for sums in across[i])
            factors.append((red, green, blue))
    return _pack(factors, x_components, y_components)


def _pack(factors: list[tuple[float, float, float]], x_components: int, y_components: int) -> str:
    dc, ac = factors[0], factors[1:]
    text = _base83((x_components - 1) + (y_components - 1) * 9, 1)
    if ac:
        actual_maximum = max(abs(value) for factor in ac for value in factor)
        quantised = max(0, min(82, math.floor(actual_maximum * 166 - 0.5)))
        maximum = (quantised + 1) / 166
        text += _base83(quantised, 1)
    else:
        maximum = 1.0
        text += _base83(0, 1)
    red, green, blue = (_to_srgb(value) for value in dc)
    text += _base83((red << 16) + (green << 8) + blue, 4)
    for factor in ac:
        r, g, b = (
            max(0, min(18, math.floor(_signed_pow(value / maximum, 0.5) * 9 + 9.5))) for value in factor
        )
        text += _base83(r * 19 * 19 + g * 19 + b, 2)
    return text


def decode(blurhash: str, width: int, height: int) -> Image.Image:
    """The picture a BlurHash stands for, at width x height (for tests and
    for anyone checking what a placeholder looks like)."""
    if len(blurhash) < 6:
        raise ValueError("a BlurHash has at least 6 characters")
    size_flag = _from_base83(blurhash[0])
    x_components, y_components = size_flag % 9 + 1, size_flag // 9 + 1
    if len(blurhash) != 4 + 2 * x_components * y_components:
        raise ValueError("the BlurHash's length does not match its component count")
    maximum = (_from_base83(blurhash[1]) + 1) / 166
    colours: list[tuple[float, float, float]] = []
    value = _from_base83(blurhash[2:6])
    colours.append((_to_linear(value >> 16), _to_linear((value >> 8) & 255), _to_linear(value & 255)))
    for index in range(1, x_components * y_components):
        value = _from_base83(blurhash[4 + index * 2 : 6 + index * 2])
        quantised = (value // (19 * 19), (value // 19) % 19, value % 19)
        r, g, b = (_signed_pow((q - 9) / 9, 2.0) * maximum for q in quantised)
        colours.append((r, g, b))
    picture = Image.new("RGB", (width, height))
    pixels: list[RGB] = []
    for y in range(height):
        for x in range(width):
            red = green = blue = 0.0
            for j in range(y_components):
                for i in range(x_components):
                    basis = math.cos(math.pi * x * i / width) * math.cos(math.pi * y * j / height)
                    r, g, b = colours[i + j * x_components]
                    red += r * basis
                    green += g * basis
                    blue += b * basis
            pixels.append((_to_srgb(red), _to_srgb(green), _to_srgb(blue)))
    picture.putdata(pixels)
    return picture


def components_of(blurhash: str) -> tuple[int, int]:
    size_flag = _from_base83(blurhash[0])
    return size_flag % 9 + 1, size_flag // 9 + 1


def _base83(value: int, length: int) -> str:
    return "".join(_CHARACTERS[(value // 83 ** (length - place - 1)) % 83] for place in range(length))


def _from_base83(text: str) -> int:
    value = 0
    for character in text:
        if character not in _VALUES:
            raise ValueError(f"not a BlurHash character: {character!r}")
        value = value * 83 + _VALUES[character]
    return value


def _to_linear(value: int) -> float:
    v = value / 255
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def _to_srgb(value: float) -> int:
    v = max(0.0, min(1.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _signed_pow(value: float, exponent: float) -> float:
    return math.copysign(abs(value) ** exponent, value)


_LINEAR = [_to_linear(value) for value in range(256)]
