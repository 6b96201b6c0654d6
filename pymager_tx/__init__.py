"""pymager-tx: image storage and resizing over HTTP, on Twisted."""

__version__ = "0.2.0"
