"""
HEIC/HEIF, through pillow-heif: registered once, for decoding only, when the
imaging layer is first imported (pymager_tx.imaging's __init__).

What the plugin gives, and what the rest of imaging relies on:

- Opening parses the boxes only; the size it reports is the primary image's
  as displayed (after the container's irot/imir transforms), and nothing is
  decoded until load().  So untrusted.opened() checks the pixel count from
  the header before any decoding, as for every other decoder.
- libheif applies irot/imir while decoding, and the plugin sets the EXIF
  orientation it finds to 1 (keeping the original in
  info["original_orientation"]): the EXIF tag only describes the transform
  the container already carries, and is never applied a second time.
- The colour profile, when the file has an ICC one, is info["icc_profile"],
  converted to sRGB like any other.

Nothing writes HEIF: the plugin's encoder is unregistered again, and the
format table marks HEIC and HEIF as read-only.
"""

from __future__ import annotations

import pillow_heif
from PIL import Image

PILLOW_NAME = "HEIF"


def register() -> None:
    """Let Pillow open HEIC/HEIF files (idempotent).  Thumbnails, depth and
    auxiliary images are not read: nothing here uses them, and each is more
    of an untrusted file to parse.  libheif decodes on the calling thread
    alone: the image threads are already one a core, and a derivation's
    budgets count one thread's work."""
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False, decode_threads=1)
    Image.SAVE.pop(PILLOW_NAME, None)
    Image.SAVE_ALL.pop(PILLOW_NAME, None)
