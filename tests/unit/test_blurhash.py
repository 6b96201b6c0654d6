"""BlurHash encoding: the same characters as the algorithm written out pixel
by pixel and component by component (woltapp/blurhash's Algorithm.md), which
the encoder computes as sums down of sums across."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from pymager_tx.imaging import blurhash


def spelled_out(picture: Image.Image, x_components: int, y_components: int) -> str:
    """Algorithm.md as written: every component visits every pixel."""
    width, height = picture.size
    pixels = picture.convert("RGB").load()
    assert pixels is not None
    factors = []
    for j in range(y_components):
        for i in range(x_components):
            normalisation = 1.0 if i == 0 and j == 0 else 2.0
            red = green = blue = 0.0
            for y in range(height):
                for x in range(width):
                    basis = math.cos(math.pi * i * x / width) * math.cos(math.pi * j * y / height)
                    r, g, b = pixels[x, y]  # type: ignore[misc]
                    red += basis * blurhash._to_linear(r)
                    green += basis * blurhash._to_linear(g)
                    blue += basis * blurhash._to_linear(b)
            scale = normalisation / (width * height)
            factors.append((red * scale, green * scale, blue * scale))
    return blurhash._pack(factors, x_components, y_components)


def gradient(width: int, height: int) -> Image.Image:
    picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    red, green, blue = picture.split()
    return Image.merge("RGB", (red, green.transpose(Image.Transpose.FLIP_TOP_BOTTOM), blue.rotate(90)))


@pytest.mark.parametrize(
    ("picture", "components"),
    [
        (Image.effect_noise((32, 18), 60).convert("RGB"), (4, 3)),
        (Image.effect_noise((18, 32), 90).convert("RGB"), (3, 4)),
        (gradient(32, 24), (4, 3)),
        (gradient(7, 5), (9, 9)),
        (Image.new("RGB", (1, 1), (200, 100, 50)), (1, 1)),
        (
            Image.merge("RGB", [Image.effect_noise((32, 32), sigma).convert("L") for sigma in (20, 50, 80)]),
            (4, 4),
        ),
    ],
)
def test_the_encoding_is_the_algorithm_as_written(picture: Image.Image, components: tuple[int, int]) -> None:
    assert blurhash.encode(picture, *components) == spelled_out(picture, *components)
