"""
Pixel modes and colour: what Pillow decodes, brought to 8-bit sRGB.

Every conversion that can wait runs after the resize, on the small picture:
converting a full-size decode costs a full-size copy.  Only what resize()
cannot filter correctly is converted before it (palettes and 1-bit pictures,
which it would resample with nearest neighbour; 16-bit greys, which it
refuses).
"""

from __future__ import annotations

from io import BytesIO

from PIL import Image, ImageCms, ImageFile, ImageMath

# Modes resize() filters properly (it premultiplies alpha for RGBA and LA).
_RESIZABLE = frozenset({"RGB", "RGBA", "L", "LA", "CMYK", "I", "F"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# ICC header bytes 16-19: the colour space a profile describes.
_RGB_SPACE, _CMYK_SPACE = b"RGB ", b"CMYK"

Colour = tuple[int, int, int]


def resizable(image: Image.Image) -> Image.Image:
    """image itself when resize() can filter it, else the least conversion
    that it can (a full-size copy, so only when needed)."""
    if image.mode in _RESIZABLE and not (image.mode in ("RGB", "L") and "transparency" in image.info):
        return image
    if image.mode in _SIXTEEN_BIT:
        wide = image.convert("I")
        key = image.info.get("transparency")
        return _keyed_grey(wide, key) if isinstance(key, int) else wide
    if image.mode == "1":
        return image.convert("L")
    if image.has_transparency_data:
        return image.convert("LA" if image.mode == "L" else "RGBA")
    if image.mode == "P" and image.palette is not None and image.palette.mode == "L":
        return image.convert("L")
    return image.convert("RGB")


def _keyed_grey(wide: Image.Image, key: int) -> Image.Image:
    """A 16-bit grey picture (as mode I) whose pixels of value key are
    transparent (PNG tRNS), as 8-bit grey with alpha."""
    keyed = ImageMath.lambda_eval(lambda names: names["equal"](names["picture"], key), picture=wide)
    assert isinstance(keyed, Image.Image)
    alpha = keyed.point(lambda value: value * -255 + 255).convert("L")
    return Image.merge("LA", (eight_bit(wide), alpha))


def eight_bit_transparency_key(image: ImageFile.ImageFile) -> None:
    """Pillow reads a 16-bit RGB PNG as 8-bit RGB (the high byte of each
    sample) but keeps its tRNS colour in 16 bits, which then marks the wrong
    pixels transparent.  Bring the key to 8 bits as well, before decoding:
    every colour within 1/256 of it is transparent then, the closest 8 bits
    allow."""
    key = image.info.get("transparency")
    if not (image.format == "PNG" and image.mode == "RGB" and isinstance(key, tuple)):
        return
    if image.tile and image.tile[0][3] == "RGB;16B":
        image.info["transparency"] = tuple(value >> 8 for value in key)


def eight_bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit (and 32-bit integer) samples to 8 bits: convert() alone
    would clip everything above 255 to white."""
    if image.mode == "I":
        return image.point(lambda value: value * (1 / 256)).convert("L")
    if image.mode == "F":
        return image.convert("L")
    return image


def to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Pixels in sRGB, converted through the embedded profile where there is
    one that fits them (perceptual intent).  A profile littlecms cannot use
    counts as none: the picture is then taken as sRGB already."""
    profile = _parse(icc)
    space = icc[16:20] if icc else b""
    if image.mode == "CMYK":
        if profile is not None and space == _CMYK_SPACE:
            converted = _transform(image, profile, "RGB")
            if converted is not None:
                return converted
        return image.convert("RGB")
    if profile is not None and space == _RGB_SPACE and image.mode in ("RGB", "RGBA"):
        return _transform(image, profile, image.mode) or image
    # Grey profiles are left out: a grey picture is shown as sRGB grey, which
    # is what grey working spaces (gamma 2.2) are to within a step or two.
    return image


def _parse(icc: bytes | None) -> ImageCms.ImageCmsProfile | None:
    if not icc or len(icc) < 128:
        return None
    try:
        return ImageCms.ImageCmsProfile(BytesIO(icc))
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None


def _transform(image: Image.Image, profile: ImageCms.ImageCmsProfile, mode: str) -> Image.Image | None:
    srgb = ImageCms.createProfile("sRGB")
    try:
        return ImageCms.profileToProfile(
            image, profile, srgb, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode=mode
        )
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None  # a profile that parses but lacks what a transform needs


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA")


def is_transparent(image: Image.Image) -> bool:
    """Whether some pixel is not fully opaque: an alpha channel alone, all
    opaque (as many PNG exports carry), is no transparency."""
    if not has_alpha(image):
        return False
    lowest = image.getchannel("A").getextrema()[0]
    return isinstance(lowest, int | float) and lowest < 255


def flatten(image: Image.Image, background: Colour) -> Image.Image:
    """Composite a picture with alpha onto an opaque background colour."""
    rgba = image.convert("RGBA")
    backdrop = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(backdrop, rgba).convert("RGB")


def pad(image: Image.Image, canvas: tuple[int, int], background: Colour) -> Image.Image:
    """Centre image on an opaque canvas of the background colour (for every
    format alike: the padding is part of the picture, not a hole in it)."""
    if image.size == canvas:
        return image
    mode = "RGBA" if has_alpha(image) else "RGB"
    picture = image.convert(mode)
    fill = (*background, 255) if mode == "RGBA" else background
    padded = Image.new(mode, canvas, fill)
    padded.paste(picture, ((canvas[0] - picture.width) // 2, (canvas[1] - picture.height) // 2))
    return padded
