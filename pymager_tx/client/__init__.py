"""
An asynchronous client of pymager-tx for Twisted programs, on treq.

It imports nothing of the server but pymager_tx.core (the ID rule, the
derived-name grammar, the formats and the problem types), so a program that
only calls the service installs `pymager-tx[client]` and never runs Pillow or
SQLAlchemy code.  See PymagerClient, and the README's "A Python client".
"""

from pymager_tx.client.bodies import Source
from pymager_tx.client.client import PymagerClient, Sink
from pymager_tx.client.errors import (
    ERRORS,
    BadRequest,
    BadUpload,
    DatabaseUnavailable,
    DerivationPending,
    DerivationTooCostly,
    IdTaken,
    InternalError,
    InvalidImage,
    InvalidImageId,
    InvalidListing,
    MethodNotAllowed,
    MethodNotImplemented,
    NotFound,
    OriginalLost,
    OutOfMemory,
    Overloaded,
    PreconditionFailed,
    ProblemDocument,
    ProblemError,
    RequestTimeout,
    ServiceUnavailable,
    SizeNotAllowed,
    StorageFull,
    StorageUnavailable,
    TooManyPixels,
    Unauthorized,
    UnsupportedFormat,
    UploadTooLarge,
)
from pymager_tx.client.names import Signer
from pymager_tx.client.records import Image, ImageInfo, NotModified, Original, Page
from pymager_tx.core.model import ResizeMode

__all__ = [
    "ERRORS",
    "BadRequest",
    "BadUpload",
    "DatabaseUnavailable",
    "DerivationPending",
    "DerivationTooCostly",
    "IdTaken",
    "Image",
    "ImageInfo",
    "InternalError",
    "InvalidImage",
    "InvalidImageId",
    "InvalidListing",
    "MethodNotAllowed",
    "MethodNotImplemented",
    "NotFound",
    "NotModified",
    "Original",
    "OriginalLost",
    "OutOfMemory",
    "Overloaded",
    "Page",
    "PreconditionFailed",
    "ProblemDocument",
    "ProblemError",
    "PymagerClient",
    "RequestTimeout",
    "ResizeMode",
    "ServiceUnavailable",
    "Signer",
    "Sink",
    "SizeNotAllowed",
    "Source",
    "StorageFull",
    "StorageUnavailable",
    "TooManyPixels",
    "Unauthorized",
    "UnsupportedFormat",
    "UploadTooLarge",
]
