"""The Accept header of a negotiated rendition, parsed and chosen from."""

from __future__ import annotations

import pytest

from pymager_tx.core.negotiation import MediaRange, negotiate, parse_accept, quality

ALL = frozenset({"avif", "webp", "jpeg", "png"})


def chosen(accept: str | None, writable: frozenset[str] = ALL) -> str:
    output, alpha_output = negotiate(accept, writable)
    return output.name if alpha_output is None else f"{output.name}|{alpha_output.name}"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "jpeg|png"),
        ("", "jpeg|png"),
        ("*/*", "jpeg|png"),
        ("image/*", "jpeg|png"),
        ("image/avif,image/webp,*/*", "avif"),
        ("image/webp,*/*", "webp"),
        ("image/webp;q=0.9,image/avif;q=0.8", "webp"),
        ("image/webp;q=0.8,image/avif;q=0.8", "avif"),  # a tie goes to the smaller files
        ("image/webp;q=0.8,image/jpeg", "jpeg|png"),
        ("image/avif;q=0,image/webp;q=0", "jpeg|png"),
        ("image/webp, image/jpeg;q=0, image/png;q=0, */*;q=0", "webp"),
        ("image/avif;level=2;q=0.5, image/webp;q=0.4", "avif"),
        ("image/avif;q=1.5", "jpeg|png"),
        ("image/avif;q=", "jpeg|png"),
        ("image/avif;q=0.0001", "jpeg|png"),
        (",,;, image/webp ,/,*/avif", "webp"),
        ("image/avif" + ",x/y" * 1000, "avif"),
    ],
)
def test_the_choice(accept: str | None, expected: str) -> None:
    assert chosen(accept) == expected


def test_a_format_this_process_cannot_write_is_never_chosen() -> None:
    assert chosen("image/avif,image/webp", ALL - {"avif"}) == "webp"
    assert chosen("image/avif", ALL - {"avif"}) == "jpeg|png"


def test_the_most_specific_range_gives_the_q_value() -> None:
    ranges = parse_accept("image/*;q=0.2, */*;q=0.9, image/png;q=0.5")
    assert quality(ranges, "image/png", wildcards=True) == 0.5
    assert quality(ranges, "image/jpeg", wildcards=True) == 0.2
    assert quality(ranges, "text/html", wildcards=True) == 0.9
    assert quality(ranges, "image/jpeg", wildcards=False) == 0.0


def test_parameters_after_q_are_extensions() -> None:
    assert parse_accept("Image/WebP ; q=0.7 ; ext=1") == [MediaRange("image", "webp", 0.7)]
