"""
Imaging: pure Pillow functions from untrusted bytes to derived images, run
on the image threads.  Nothing here knows the store, the database or HTTP.
"""

from pymager_tx.imaging import heif as _heif

# Once, for every module of the layer: Pillow opens HEIC/HEIF (decoding only).
_heif.register()
