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
    BadSignature,
    BadUpload,
    DatabaseUnavailable,
    DerivationPending,
    DerivationTooCostly,
    IdTaken,
    InternalError,
    InvalidFocalPoint,
    InvalidImage,
    InvalidImageId,
    InvalidListing,
    InvalidMetaChange,
    MethodNotAllowed,
    MethodNotImplemented,
    NotFound,
    OriginalLost,
    OutOfMemory,
    Overloaded,
    PreconditionFailed,
    ProblemDocument,
    ProblemError,
    RangeNotSatisfiable,
    RequestTimeout,
    ServiceUnavailable,
    SizeNotAllowed,
    SizeOutOfBounds,
    StorageFull,
    StorageUnavailable,
    TooManyPixels,
    Unauthorized,
    UnsupportedFormat,
    UnsupportedMetaType,
    UploadTooLarge,
)
from pymager_tx.client.names import Signer
from pymager_tx.client.records import Image, ImageInfo, NotModified, Original, Page
from pymager_tx.core.model import ResizeMode

__all__ = [
    "ERRORS",
    "BadRequest",
    "BadSignature",
    "BadUpload",
    "DatabaseUnavailable",
    "DerivationPending",
    "DerivationTooCostly",
    "IdTaken",
    "Image",
    "ImageInfo",
    "InternalError",
    "InvalidFocalPoint",
    "InvalidImage",
    "InvalidImageId",
    "InvalidListing",
    "InvalidMetaChange",
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
    "RangeNotSatisfiable",
    "RequestTimeout",
    "ResizeMode",
    "ServiceUnavailable",
    "Signer",
    "Sink",
    "SizeNotAllowed",
    "SizeOutOfBounds",
    "Source",
    "StorageFull",
    "StorageUnavailable",
    "TooManyPixels",
    "Unauthorized",
    "UnsupportedFormat",
    "UnsupportedMetaType",
    "UploadTooLarge",
]
