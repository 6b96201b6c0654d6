"""
Domain errors.

Each names a reason the service refuses a request, in words a client can act
on.  They carry no HTTP status: the web layer maps them once, in one table.
"""

from __future__ import annotations


class PymagerError(Exception):
    """A request the service refuses, for a reason it can name."""

    @property
    def detail(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__doc__ or ""


class InvalidImageId(PymagerError):
    """The image ID does not follow the ID rule."""


class ImageNotFound(PymagerError):
    """No original is stored under this ID."""


class OriginalLost(ImageNotFound):
    """An original is recorded under this ID, but its file is lost from
    storage: nothing can be served or derived from it until an operator
    repairs the store (pymager-admin check --repair forgets it)."""


class ImageIdTaken(PymagerError):
    """An original is already stored under this ID."""


class PreconditionFailed(PymagerError):
    """A conditional write's If-Match names no stored original: the image
    changed since the client read it, or there is none under the ID."""


class InvalidListingRequest(PymagerError):
    """A listing's limit or cursor is not one the service takes."""


class InvalidImage(PymagerError):
    """The data is not a complete image in a format the service decodes."""


class TooManyPixels(InvalidImage):
    """The image declares more pixels than the service decodes."""


class UploadTooLarge(PymagerError):
    """The upload is larger than the service accepts."""


class BadUpload(PymagerError):
    """The request body is not an upload the service understands."""


class DerivedNameInvalid(PymagerError):
    """The derived image name does not follow <ID>-<W>x<H>.<ext>."""


class InvalidMetaChange(PymagerError):
    """A change of an image's metadata (PATCH /meta) that is not JSON, or
    names what cannot be changed."""


class InvalidFocalPoint(InvalidMetaChange):
    """A focal point outside the picture (x and y are 0 to 1)."""


class UnsupportedMetaType(PymagerError):
    """A change of metadata sent as something other than JSON."""


class UnsupportedOutputFormat(PymagerError):
    """The service cannot write the requested output format."""


class SizeNotAllowed(PymagerError):
    """The requested size is not one of the allowed sizes."""


class RangeNotSatisfiable(PymagerError):
    """A Range request for bytes the image does not have."""

    def __init__(self, detail: str, complete_length: int) -> None:
        super().__init__(detail)
        self.complete_length = complete_length


class BadSignature(PymagerError):
    """A signed derived URL whose signature does not verify with any of the
    URL signing keys (or the service has none)."""


class SizeOutOfBounds(PymagerError):
    """A derived size the service never makes: 0x0, or a signed size (or a
    side worked out from the aspect ratio) past max_signed_side or max_pixels."""


class Unauthorized(PymagerError):
    """The request needs a valid write token."""

    def __init__(self, detail: str, token_given: bool) -> None:
        super().__init__(detail)
        self.token_given = token_given


class Unavailable(PymagerError):
    """A dependency of the service is failing; the same request may work later."""

    retry_after = 5  # seconds, for the Retry-After header

    def __init__(self, detail: str, reason: str = "") -> None:
        super().__init__(detail)
        # For the operator's log only: driver messages name hosts and paths.
        self.reason = reason or detail


class DatabaseUnavailable(Unavailable):
    """The metadata database cannot be reached or does not answer."""


class StorageUnavailable(Unavailable):
    """Stored files cannot be read or written."""


class StorageFull(StorageUnavailable):
    """The storage has no room left for the file."""

    retry_after = 60


class BlobExists(StorageUnavailable):
    """Another write already stored an object under this key, and the store
    refused to replace it (a conditional write, If-None-Match: *).  Every
    key is one writer's, so this is never the caller's to overwrite: a
    derivation takes it as lost to that other write; anything else answers
    503 as for a failing store."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__("the image storage is failing; try again later", reason)
        self.key = key


class OutOfMemory(Unavailable):
    """The process ran out of memory on this image: a condition of the
    server at this moment, not a fault of the image, so never remembered."""


class Overloaded(Unavailable):
    """Every image thread is busy and the queue in front of them is full:
    the server says "not now" instead of piling the work up."""

    retry_after = 2


class DerivationPending(Unavailable):
    """Another process claimed this derivation and has not finished it within
    the time a derivation may take; asking again later finds it done or
    taken over."""


class BlobNotFound(Exception):
    """Storage holds nothing under this key (an internal condition, not a client error)."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class DerivationTooCostly(PymagerError):
    """Deriving this image takes longer than the time budget allows."""
