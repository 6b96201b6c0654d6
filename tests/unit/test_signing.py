"""The signing scheme, the signed bounds and sides of 0, as pure functions;
the [security] and max_signed_side settings."""

from __future__ import annotations

import pytest

from pymager_tx.config import load_settings
from pymager_tx.core.errors import ConfigError, DerivedNameInvalid, SizeOutOfBounds
from pymager_tx.core.formats import format_named
from pymager_tx.core.model import DerivedSpec, Size, parse_derived_name
from pymager_tx.core.signing import SignedSizeBounds, signature, signed_path, signer, verifies


def test_the_signature_is_unpadded_base64url_hmac_sha256() -> None:
    # RFC 4231, test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?")
    # = 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843.
    assert signature("what do ya want for nothing?", "Jefe") == "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM"
    assert signed_path("a-1x1.png", "Jefe") == f"/derived/{signature('a-1x1.png', 'Jefe')}/a-1x1.png"
    assert signer("Jefe")("a-1x1.png") == signature("a-1x1.png", "Jefe")


def test_keys_and_names_are_utf8() -> None:
    assert signature("photo-10x10.jpg", "clé-0123456789abcdef") == signer("clé-0123456789abcdef")(
        "photo-10x10.jpg"
    )
    assert len(signature("photo-10x10.jpg", "clé")) == 43
    assert signature("photo-10x10.jpg", "cle") != signature("photo-10x10.jpg", "clé")


def test_verifies_with_any_key_and_nothing_else() -> None:
    name, keys = "photo-150x90.jpg", ("k" * 16, "l" * 16)
    assert verifies(name, signature(name, keys[1]), keys)
    assert not verifies(name, signature(name, "m" * 16), keys)
    assert not verifies(name, signature("photo-150x91.jpg", keys[0]), keys)
    assert not verifies(name, signature(name, keys[0]) + "=", keys)
    assert not verifies(name, "", keys)
    assert not verifies(name, "\udcff not text", keys)
    assert not verifies(name, signature(name, keys[0]), ())


@pytest.mark.parametrize(
    ("size", "picture", "worked_out"),
    [
        (Size(300, 0), (400, 300), Size(300, 225)),
        (Size(0, 200), (400, 300), Size(267, 200)),
        (Size(1, 0), (10_000, 10), Size(1, 1)),  # never below one pixel
        (Size(300, 200), (400, 300), Size(300, 200)),
    ],
)
def test_a_zero_side_comes_from_the_aspect_ratio(
    size: Size, picture: tuple[int, int], worked_out: Size
) -> None:
    assert size.for_picture(*picture) == worked_out


def test_a_spec_keeps_the_name_it_was_asked_by() -> None:
    spec = DerivedSpec(Size(300, 0), format_named("jpeg"))
    sized = spec.for_picture(400, 300)
    assert (sized.size, sized.variant) == (Size(300, 225), "300x0.jpeg")
    assert DerivedSpec(Size(300, 225), format_named("jpeg")).variant == "300x225.jpeg"
    plain = DerivedSpec(Size(300, 200), format_named("png"))
    assert plain.for_picture(400, 300) is plain


def test_the_grammar_takes_one_zero_side_and_no_leading_zero() -> None:
    assert parse_derived_name("a-300x0.jpg").size == Size(300, 0)
    assert parse_derived_name("a-0x0.jpg").size == Size(0, 0)  # parses; refused 400 by size
    for leading_zero in ("a-00x10.jpg", "a-010x10.jpg", "a-10x00.jpg"):
        with pytest.raises(DerivedNameInvalid):
            parse_derived_name(leading_zero)
    with pytest.raises(ValueError):
        Size.parse("0x0")
    with pytest.raises(ValueError):
        Size.parse("010x10")


def test_the_signed_bounds() -> None:
    bounds = SignedSizeBounds(max_side=1000, max_pixels=500_000)
    bounds.check_named(Size(1000, 500))
    bounds.check_named(Size(1000, 0))
    for size, says in ((Size(1001, 10), "1000"), (Size(1000, 501), "500000"), (Size(0, 0), "0x0")):
        with pytest.raises(SizeOutOfBounds, match=says):
            bounds.check_named(size)
        assert not bounds.holds(size)
    bounds.check_worked_out(Size(100, 0), Size(100, 1000))
    with pytest.raises(SizeOutOfBounds, match="comes to 100x1001"):
        bounds.check_worked_out(Size(100, 0), Size(100, 1001))
    with pytest.raises(SizeOutOfBounds, match="here 1000x1000"):
        bounds.check_worked_out(Size(0, 1000), Size(1000, 1000))


def test_the_settings_hide_the_keys(tmp_path: object) -> None:
    keys = ["first-key-0123456789", "second-key-0123456789"]
    settings = load_settings(None, {"security": {"url_signing_keys": keys}})
    assert settings.security.signing_keys() == tuple(keys)
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert not any(key in shown for key in keys)
    assert settings.images.max_signed_side == 4096
    assert load_settings().security.signing_keys() == ()


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"security": {"url_signing_keys": ["too-short"]}}, "at least 16 characters"),
        ({"security": {"url_signing_keys": [" padded-key-0123456789 "]}}, "without spaces"),
        ({"security": {"url_signing_keys": "one-key-0123456789"}}, "url_signing_keys"),
        ({"images": {"max_signed_side": 16384}}, "max_signed_side"),
        ({"images": {"max_signed_side": 0}}, "max_signed_side"),
        ({"images": {"allowed_sizes": ["0x0"]}}, "one of them 0 at most"),
    ],
)
def test_bad_settings_are_refused_without_the_key(overrides: dict[str, dict[str, object]], says: str) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        load_settings(None, overrides)
    assert "too-short" not in str(refused.value) and "padded-key" not in str(refused.value)
