"""Reading the mounts, and what counts as a SQLite file on a network filesystem."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from sqlalchemy import make_url

from pymager_tx.core.owner_names import new_owner_name
from pymager_tx.process.deployment import (
    UnsafeDeployment,
    host_of,
    mount_of,
    refuse_sqlite_on_a_network_filesystem,
    sqlite_file,
)

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
61 27 0:52 / /srv rw,relatime shared:30 - ext4 /dev/vdb rw
62 61 0:53 / /srv/images rw,relatime shared:31 master:7 - nfs4 filer:/export/images rw,vers=4.2
63 61 0:54 / /srv/images-local rw,relatime - xfs /dev/vdc rw
64 27 0:55 / /mnt/with\\040space rw - cifs //nas/share rw
65 62 0:56 / /srv/images/cache rw - tmpfs tmpfs rw
66 27 0:57 / /srv/images/cache rw - fuse.sshfs me@host:/x rw
"""


@pytest.mark.parametrize(
    ("path", "filesystem", "point"),
    [
        ("/", "ext4", "/"),
        ("/home/pymager/data", "ext4", "/"),
        ("/srv", "ext4", "/srv"),
        ("/srv/images", "nfs4", "/srv/images"),
        ("/srv/images/pymager-data", "nfs4", "/srv/images"),
        # A common prefix of characters is not a parent directory.
        ("/srv/images-local/data", "xfs", "/srv/images-local"),
        ("/srv/imagesX", "ext4", "/srv"),
        # Mount points with escaped characters.
        ("/mnt/with space/data", "cifs", "/mnt/with space"),
        # The last of two mounts at one point is the one on top.
        ("/srv/images/cache/x", "fuse.sshfs", "/srv/images/cache"),
    ],
)
def test_the_mount_of_a_path_is_the_longest_mount_point_above_it(
    path: str, filesystem: str, point: str
) -> None:
    mount = mount_of(PurePosixPath(path), MOUNTINFO)
    assert mount is not None
    assert (mount.filesystem, mount.point) == (filesystem, PurePosixPath(point))


def test_a_line_it_does_not_understand_is_skipped() -> None:
    assert mount_of(PurePosixPath("/x"), "garbage\n\n27 1 254:0 / / rw - ext4 /dev/vda rw\n")
    assert mount_of(PurePosixPath("/x"), "garbage\n") is None


def test_the_sqlite_file_of_a_url() -> None:
    assert sqlite_file(make_url("sqlite+pysqlite:////var/lib/pymager/pymager.sqlite3")) == Path(
        "/var/lib/pymager/pymager.sqlite3"
    )
    assert sqlite_file(make_url("sqlite:///file:/data/p.sqlite3?mode=rwc&uri=true")) == Path(
        "/data/p.sqlite3"
    )
    assert sqlite_file(make_url("postgresql+psycopg://pymager@db/pymager")) is None


def test_the_host_part_of_an_owner_name() -> None:
    assert host_of("web-1.example.com-4242-0123456789ab") == "web-1.example.com"
    name = new_owner_name()
    assert name.startswith(host_of(name) + "-")


@pytest.mark.parametrize(("filesystem", "refused"), [("nfs4", True), ("fuse.sshfs", True), ("ext4", False)])
def test_a_sqlite_file_on_a_network_filesystem_is_refused(
    tmp_path: Path, filesystem: str, refused: bool
) -> None:
    # Reached through a symlink, in a directory not made yet.
    real = tmp_path / "mounted"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"27 1 254:0 / / rw - ext4 /dev/vda rw\n70 27 0:60 / {real.resolve()} rw - {filesystem} x rw\n"
    )
    url = make_url(f"sqlite+pysqlite:///{tmp_path / 'link' / 'data' / 'pymager.sqlite3'}")

    if not refused:
        refuse_sqlite_on_a_network_filesystem(url, mountinfo)
        return
    with pytest.raises(UnsafeDeployment) as raised:
        refuse_sqlite_on_a_network_filesystem(url, mountinfo)
    assert f"on a network filesystem ({filesystem} at {real.resolve()})" in str(raised.value)
    assert "PostgreSQL" in str(raised.value)
    # A PostgreSQL database is not SQLite's business.
    refuse_sqlite_on_a_network_filesystem(make_url("postgresql+psycopg://pymager@db/pymager"), mountinfo)
