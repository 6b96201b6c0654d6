"""The service's lookups with their bytes read, as most tests want them."""

from __future__ import annotations

from pymager_tx.app.api import ImageServiceAPI, StoredImage
from pymager_tx.core.model import ImageId


async def derived_body(service: ImageServiceAPI, name: str, arrived: float | None = None) -> StoredImage:
    found = await service.derived(name, arrived)
    return await found.body()


async def original_body(service: ImageServiceAPI, image_id: ImageId) -> StoredImage:
    found = await service.original(image_id)
    return await found.body()
