"""
Deployments start-up refuses, because SQLite would lose data in them.

SQLite locks its file with POSIX locks and keeps its WAL index in memory
shared through a file: both hold among the processes of one kernel, and
neither across machines.  On a network filesystem the locks are at best
advisory and the shared memory is not shared at all, so two machines would
write one database as if each were alone, and corrupt it.  So a SQLite
database on a network filesystem is refused, and so is one whose data
directory is shared with live processes of another machine (whatever the
filesystem: the check must not depend on recognising it).  Several machines
need PostgreSQL.

All functions block: call them from a thread pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import URL

from pymager_tx.adapters.cluster.owners import Owners

MOUNTINFO = Path("/proc/self/mountinfo")

# Filesystems that other machines may mount too (mountinfo's type field).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "fuse.ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "sshfs",
        "lustre",
        "afs",
        "ocfs2",
        "gfs2",
        "gpfs",
        "beegfs",
        "davfs",
        "fuse.davfs2",
        "fuse.s3fs",
        "fuse.rclone",
    }
)
_SEVERAL_MACHINES = "use PostgreSQL ([database] url) when several machines share the data directory"


class UnsafeDeployment(Exception):
    """The service would run where it cannot keep its data safe; the message
    says why and what to do, in one line."""


@dataclass(frozen=True)
class Mount:
    point: PurePosixPath
    filesystem: str  # the type, e.g. "ext4", "nfs4", "fuse.sshfs"
    source: str


def mounts(mountinfo: str) -> Iterator[Mount]:
    """The mounts of /proc/<pid>/mountinfo text, in its order (later lines
    are mounted over earlier ones at the same point)."""
    for line in mountinfo.splitlines():
        fields = line.split()
        # ID, parent, device, root, mount point, options, optional fields..., "-", type, source, ...
        if "-" not in fields[5:]:
            continue
        separator = fields.index("-", 5)
        if len(fields) < separator + 3:
            continue
        yield Mount(
            PurePosixPath(_unescaped(fields[4])), fields[separator + 1], _unescaped(fields[separator + 2])
        )


def mount_of(path: PurePosixPath, mountinfo: str) -> Mount | None:
    """The mount that holds path (absolute, symlinks resolved): the one with
    the longest mount point above it, the last mounted of equals."""
    found: Mount | None = None
    for mount in mounts(mountinfo):
        if (path == mount.point or mount.point in path.parents) and (
            found is None or len(mount.point.parts) >= len(found.point.parts)
        ):
            found = mount
    return found


def sqlite_file(url: URL) -> Path | None:
    """The database file a SQLite URL names; None for other databases."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    database = url.database
    if database.startswith("file:"):  # an SQLite URI (?uri=true)
        database = database.removeprefix("file:").split("?", 1)[0]
    return Path(database)


def refuse_sqlite_on_a_network_filesystem(url: URL, mountinfo: Path = MOUNTINFO) -> None:
    """Raise UnsafeDeployment if url is a SQLite file on a network filesystem.
    Reads only: runs before start-up writes anything."""
    database = sqlite_file(url)
    if database is None or not mountinfo.exists():  # not Linux: nothing to read the mounts from
        return
    # Symlinks resolved as far as the path exists: the directory may be made later.
    directory = database.absolute().parent.resolve()
    mount = mount_of(PurePosixPath(directory), mountinfo.read_text(errors="surrogateescape"))
    if mount is not None and mount.filesystem in NETWORK_FILESYSTEMS:
        raise UnsafeDeployment(
            f"the SQLite database {database} is on a network filesystem ({mount.filesystem} "
            f"at {mount.point}), where SQLite's locks do not hold: keep it on a local disk, or "
            f"{_SEVERAL_MACHINES}"
        )


def refuse_sqlite_shared_with_other_machines(url: URL, owners: Owners) -> None:
    """Raise UnsafeDeployment if url is a SQLite file and live processes of
    another machine have registered in owners' directory.  Call it after
    owners.register(): of two machines starting at once, at least the
    second to register sees the first."""
    if sqlite_file(url) is None:
        return
    others = sorted(set(_other_machines(owners)))
    if others:
        raise UnsafeDeployment(
            f"processes of other machines ({', '.join(others)}) are running on the data directory "
            f"{owners.directory.parent}, and a SQLite database serves one machine: {_SEVERAL_MACHINES}"
        )


def _other_machines(owners: Owners) -> Iterable[str]:
    here = host_of(owners.me)
    for path in owners.directory.glob("*.lock"):
        owner = path.name.removesuffix(".lock")
        if host_of(owner) != here and owners.is_alive(owner):
            yield host_of(owner)


def host_of(owner: str) -> str:
    """The host part of an owner name (pymager_tx.adapters.cluster.owners.new_owner_name:
    host-pid-random, where the host may itself contain dashes)."""
    return owner.rsplit("-", 2)[0]


def _unescaped(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for escape, character in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escape, character)
    return field
