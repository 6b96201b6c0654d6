"""
`pymager-admin sign NAME...`: print the signed path of each derived name
(/derived/<signature>/<NAME>), signed with the first of [security]
url_signing_keys, for a back end without the client library or a person
trying a size.  A name the service would refuse (one that does not parse,
a format it does not write, a size out of the signed bounds) is refused
here, before anyone meets a URL that cannot work.
"""

from __future__ import annotations

import click

from pymager_tx.admin.command import AdminError, Target, finish, with_target
from pymager_tx.core.errors import PymagerError
from pymager_tx.core.model import parse_derived_name
from pymager_tx.core.signing import SignedSizeBounds, signed_path
from pymager_tx.imaging.formats import output_format_for, writable_extensions


@click.command(short_help="Print the signed path of derived names.")
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@with_target
def sign(target: Target, names: tuple[str, ...]) -> None:
    """Print /derived/<signature>/<NAME> for each NAME (<ID>-<W>x<H>[-fit|-pad].<ext>),
    signed with the first of [security] url_signing_keys; any size within
    [images] max_signed_side and max_pixels."""
    keys = target.settings.security.signing_keys()
    if not keys:
        raise AdminError("[security] url_signing_keys is empty: there is no key to sign with")
    images = target.settings.images
    bounds = SignedSizeBounds(images.max_signed_side, images.max_pixels)
    for name in names:
        try:
            parsed = parse_derived_name(name)
            if parsed.size not in images.sizes:
                bounds.check_named(parsed.size)
        except PymagerError as error:
            raise click.BadParameter(error.detail, param_hint="NAME") from None
        if output_format_for(parsed.extension) is None:
            writable = ", ".join(sorted(writable_extensions()))
            raise click.BadParameter(
                f"{name}: the service writes no {parsed.extension!r} images, only {writable}"
            )
    for name in names:
        click.echo(signed_path(name, keys[0]))
    finish(0)
