"""`pymager-admin import`: folders into the store, resumably, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pymager_tx.admin.imports import Candidate, find_candidates
from tests.admin.conftest import Admin
from tests.images import BLUE, RED, jpeg, png


def photos(root: Path) -> dict[str, bytes]:
    """A folder as a user has one: nested, with files that are not images."""
    files = {
        "beach.jpg": jpeg((80, 60), RED),
        "2024/summer/boat.PNG": png((40, 40), BLUE),
        "2024/notes.txt": b"not an image",
        ".thumbnails/beach.jpg": jpeg((10, 10)),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_a_folder_is_imported_then_skipped_when_run_again(admin: Admin, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos(folder)

    first = admin("import", str(folder), "--jobs", "3")

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[-1].startswith(
        "2 imported, 0 already stored, 0 conflicts, 0 failed, of 2 files"
    )
    # Not a terminal: plain lines, the last with the count.
    assert "import: 2/2 (100%)" in first.stderr
    stats = admin("stats")
    assert "originals: 2," in stats.stdout
    assert "  jpeg: 1," in stats.stdout and "  png: 1," in stats.stdout

    again = admin("import", str(folder))
    assert again.exit_code == 0
    assert again.stdout.splitlines()[-1].startswith("0 imported, 2 already stored, 0 conflicts, 0 failed")
    assert admin("check").exit_code == 0


def test_conflicts_and_failures_are_listed_and_exit_with_1(admin: Admin, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos(folder)
    assert admin("import", str(folder)).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "beach.jpg").write_bytes(jpeg((80, 60), BLUE))  # same ID, other bytes
    (other / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (other / "bad id!.png").write_bytes(png())
    (other / "new.jpg").write_bytes(jpeg())

    result = admin("import", str(other))

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("1 imported, 0 already stored, 1 conflicts, 2 failed, of 4 files")
    assert any(
        re.fullmatch(
            rf"conflict: {re.escape(str(other / 'beach.jpg'))}: beach is stored with other bytes .*", line
        )
        for line in lines
    )
    assert any(line.startswith(f"failed: {other / 'broken.jpg'}: ") for line in lines)
    assert any(line.startswith(f"failed: {other / 'bad id!.png'}: an image ID is") for line in lines)
    # The stored original was not touched.
    stored = admin("stats").stdout
    assert "originals: 3," in stored


def test_id_from_takes_the_id_from_a_pattern(admin: Admin, tmp_path: Path) -> None:
    folder = tmp_path / "catalogue"
    (folder / "sku-1234").mkdir(parents=True)
    (folder / "sku-1234" / "front.jpg").write_bytes(jpeg())
    result = admin("import", str(folder), "--id-from", r"sku-(?P<id>\d+)/")
    assert result.exit_code == 0, result.output
    assert "1 imported" in result.stdout
    assert "oldest: 1234," in admin("stats").stdout


def test_id_from_needs_a_group_named_id(admin: Admin, tmp_path: Path) -> None:
    result = admin("import", str(tmp_path), "--id-from", r"(\d+)")
    assert result.exit_code == 2
    assert "needs a named group id" in result.stderr


def test_candidates_ids_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1")
    (tmp_path / "b" / "x.jpeg").write_bytes(b"2")
    given = tmp_path / "named without extension"
    given.write_bytes(b"3")
    found = find_candidates([tmp_path / "a", tmp_path / "b", given], None)
    assert found[0] == Candidate(tmp_path / "a" / "x.jpg", "x")
    assert found[1].image_id is None and "also" in (found[1].problem or "")
    assert found[2].image_id is None and "an image ID is" in (found[2].problem or "")


def test_a_skip_is_by_sha256(admin: Admin, tmp_path: Path) -> None:
    data = jpeg()
    (tmp_path / "one.jpg").write_bytes(data)
    assert admin("import", str(tmp_path / "one.jpg")).exit_code == 0
    # The same bytes under another file name of the same stem: skipped.
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "one.jpeg").write_bytes(data)
    result = admin("import", str(tmp_path / "again"))
    assert (result.exit_code, hashlib.sha256(data).hexdigest()[:4] != "") == (0, True)
    assert "1 already stored" in result.stdout
