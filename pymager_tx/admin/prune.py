"""
`pymager-admin prune [--apply]`: remove the renditions of sizes no longer in
[images] allowed_sizes, which no URL can ask for any more.  With [security]
url_signing_keys set, a size within the signed bounds can still be asked
for by a signed URL: its renditions stay.

Without --apply it only lists them.  Each removal is one transaction that
deletes the row of that very rendition (its file), unless a claim holds its
derivation (a live process with older settings deriving it anew: left to
it), and counts as a removal so that every process drops it from memory;
then its file goes.  Stopped between the two, a file is left that no row
names: `pymager-admin check --repair` removes it, as any orphan.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

from pymager_tx.adapters.sql.admin_txn import Forgotten, Rendition
from pymager_tx.admin.command import Target, finish, with_target
from pymager_tx.admin.runtime import direct, run
from pymager_tx.admin.stats import shown_size
from pymager_tx.core.model import ResizeMode, Size
from pymager_tx.core.signing import SignedSizeBounds

# A rendition's variant: "<W>x<H>[-<mode>].<format>" (core.model.DerivedSpec.variant).
_MODES = "|".join(mode.value for mode in ResizeMode if mode is not ResizeMode.CROP)
_VARIANT = re.compile(rf"(?P<size>(?:0|[1-9][0-9]*)x(?:0|[1-9][0-9]*))(?:-(?:{_MODES}))?\.[a-z]+")


def stale(
    renditions: list[Rendition], allowed: frozenset[Size], signable: Callable[[Size], bool] | None = None
) -> list[Rendition]:
    """The renditions of sizes not allowed, nor signable (a signed URL may
    still ask for them); variants that name no size (the working copy) are
    never stale."""
    found = []
    for rendition in renditions:
        match = _VARIANT.fullmatch(rendition.variant)
        if match is None:
            continue
        size = Size.parse(match["size"])
        if size not in allowed and not (signable is not None and signable(size)):
            found.append(rendition)
    return found


@click.command(short_help="Remove renditions of sizes no longer allowed.")
@click.option("--apply", "applying", is_flag=True, help="Remove them (without it: list what would go).")
@with_target
def prune(target: Target, applying: bool) -> None:
    """Remove renditions of sizes no longer in [images] allowed_sizes.

    With [security] url_signing_keys set, sizes a signed URL may ask for
    stay.  Lists them first; --apply removes them.  Safe beside running services:
    a rendition being derived under a claim is left alone."""

    async def work(reactor: Any) -> int:
        async with direct(target, reactor, image_threads=0) as store:
            images = target.settings.images
            signable = None
            if target.settings.security.url_signing_keys:
                signable = SignedSizeBounds(images.max_signed_side, images.max_pixels).holds
            found = stale(await store.queries.renditions(), images.sizes, signable)
            if not applying:
                for rendition in found:
                    click.echo(f"would remove: {_shown(rendition)}")
                total = sum(rendition.byte_length for rendition in found)
                click.echo(
                    f"{len(found)} renditions of sizes not allowed{' nor signable' if signable else ''}, "
                    f"{shown_size(total)}" + ("; `pymager-admin prune --apply` removes them" if found else "")
                )
                return 0
            removed = left = freed = 0
            for rendition in found:
                outcome = await store.queries.forget_rendition(rendition)
                if outcome is Forgotten.FORGOTTEN:
                    await store.store.blobs.delete(rendition.blob_key)
                    removed, freed = removed + 1, freed + rendition.byte_length
                    click.echo(f"removed: {_shown(rendition)}")
                elif outcome is Forgotten.CLAIMED:
                    left += 1
                    click.echo(f"left, being derived: {_shown(rendition)}")
            if removed:
                # Processes on this machine drop what they hold at once.
                store.store.epoch.bump()
            click.echo(
                f"removed {removed} renditions, {shown_size(freed)}"
                + (f"; {left} being derived were left (run prune again later)" if left else "")
            )
            return 0

    finish(run(work))


def _shown(rendition: Rendition) -> str:
    return f"{rendition.image_id} {rendition.variant} ({shown_size(rendition.byte_length)})"
