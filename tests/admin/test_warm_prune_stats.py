"""`pymager-admin warm`, `prune` and `stats` on a real store, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from pymager_tx.adapters.sql.database import make_engine
from pymager_tx.adapters.sql.schema import derivation_claims, derived
from pymager_tx.admin.progress import Progress
from tests.admin.conftest import Admin
from tests.images import jpeg, png


def stored(admin: Admin, tmp_path: Path, *names: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.jpg").write_bytes(jpeg((120, 90)))
    assert admin("import", str(folder)).exit_code == 0


def renditions(admin: Admin) -> list[tuple[str, str]]:
    engine = make_engine(admin.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(derived.c.image_id, derived.c.variant).order_by(derived.c.image_id, derived.c.variant)
            )
            return [(row.image_id, row.variant) for row in rows]
    finally:
        engine.dispose()


def test_warm_derives_every_size_of_every_original(admin: Admin, tmp_path: Path) -> None:
    stored(admin, tmp_path, "a", "b")

    result = admin("warm", "--all", "--sizes", "100x100,800x600", "--jobs", "2")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("4 renditions derived or already there, 0 failed")
    assert "warm: 4/4 (100%)" in result.stderr
    named = renditions(admin)
    for image_id in ("a", "b"):
        assert (image_id, "100x100.jpeg") in named and (image_id, "800x600.jpeg") in named
    # Again: nothing to derive, nothing fails.
    assert admin("warm", "a", "--sizes", "100x100", "--format", "webp", "--mode", "fit").exit_code == 0
    assert ("a", "100x100-fit.webp") in renditions(admin)
    assert admin("check").exit_code == 0


def test_warm_lists_what_failed(admin: Admin, tmp_path: Path) -> None:
    stored(admin, tmp_path, "a")
    result = admin("warm", "a", "missing", "--sizes", "100x100")
    assert result.exit_code == 1
    assert "failed: missing 100x100: " in result.stdout
    assert "1 renditions derived or already there, 1 failed" in result.stdout


def test_warm_refuses_sizes_not_allowed_and_bad_usage(admin: Admin) -> None:
    refused = admin("warm", "a", "--sizes", "101x100")
    assert refused.exit_code == 1
    assert refused.stderr == "pymager-admin: not in [images] allowed_sizes (100x100, 800x600): 101x100\n"
    assert admin("warm", "--sizes", "100x100").exit_code == 2
    assert admin("warm", "a", "--all", "--sizes", "100x100").exit_code == 2
    assert admin("warm", "a", "--sizes", "big").exit_code == 2


def test_prune_lists_then_removes_sizes_no_longer_allowed(admin: Admin, tmp_path: Path) -> None:
    stored(admin, tmp_path, "a", "b")
    assert admin("warm", "--all", "--sizes", "100x100,800x600").exit_code == 0
    files = admin.data / "files" / "derived"
    before = sorted(path for path in files.rglob("*") if path.is_file())
    admin.configure('[images]\nallowed_sizes = ["800x600"]\n')

    dry = admin("prune")

    assert dry.exit_code == 0
    assert [line.split(" (")[0] for line in dry.stdout.splitlines()[:-1]] == [
        "would remove: a 100x100.jpeg",
        "would remove: b 100x100.jpeg",
    ]
    assert dry.stdout.splitlines()[-1].startswith("2 renditions of sizes not allowed, ")
    assert len(renditions(admin)) == 4

    applied = admin("prune", "--apply")

    assert applied.exit_code == 0, applied.output
    assert applied.stdout.splitlines()[-1].startswith("removed 2 renditions, ")
    assert renditions(admin) == [("a", "800x600.jpeg"), ("b", "800x600.jpeg")]
    after = sorted(path for path in files.rglob("*") if path.is_file())
    assert len(after) == len(before) - 2
    assert admin("check").exit_code == 0
    assert admin("prune").stdout.splitlines() == ["0 renditions of sizes not allowed, 0 bytes"]


def test_prune_leaves_a_rendition_being_derived(admin: Admin, tmp_path: Path) -> None:
    stored(admin, tmp_path, "a")
    assert admin("warm", "a", "--sizes", "100x100").exit_code == 0
    engine = make_engine(admin.database_url, pool_size=1)
    try:
        with engine.begin() as connection:
            generation = connection.execute(select(derived.c.blob_key)).scalar_one()
            connection.execute(
                insert(derivation_claims).values(
                    image_id="a",
                    variant="100x100.jpeg",
                    generation=generation.split("/")[-2],
                    owner="someone-alive",
                    token="t" * 32,
                    expires_at=datetime.now(UTC) + timedelta(seconds=30),
                )
            )
    finally:
        engine.dispose()
    admin.configure('[images]\nallowed_sizes = ["800x600"]\n')

    applied = admin("prune", "--apply")

    assert applied.exit_code == 0
    assert applied.stdout.splitlines()[0].startswith("left, being derived: a 100x100.jpeg")
    assert "1 being derived were left" in applied.stdout
    assert renditions(admin) == [("a", "100x100.jpeg")]


def test_stats_counts_bytes_by_format_the_largest_and_the_oldest(admin: Admin, tmp_path: Path) -> None:
    empty = admin("stats")
    assert empty.exit_code == 0
    assert empty.stdout.splitlines()[0] == "originals: 0, 0 bytes"
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "first.png").write_bytes(png((400, 300)))
    assert admin("import", str(folder)).exit_code == 0
    (folder / "big.jpg").write_bytes(jpeg((900, 700)))
    (folder / "small.jpg").write_bytes(jpeg((20, 20)))
    assert admin("import", str(folder)).exit_code == 0
    assert admin("warm", "--all", "--sizes", "100x100").exit_code == 0

    lines = admin("stats").stdout.splitlines()

    assert lines[0].startswith("originals: 3, ")
    # Most bytes first: two JPEGs of photos' sizes outweigh one flat PNG.
    assert [line.split(":")[0] for line in lines[1:3]] == ["  jpeg", "  png"]
    assert any(line.startswith("  largest: big, ") for line in lines)
    assert any(line.startswith("  oldest: first, ") for line in lines)
    assert any(line.startswith("renditions: 3, ") for line in lines)
    assert "unfinished uploads or deletions: 0" in lines
    as_json = admin("stats", "--json")
    assert '"count": 3' in as_json.stdout


def test_plain_progress_lines_come_every_so_often_with_rate_and_eta() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress(100, "import", stream=out, tty=False, clock=lambda: now[0], every=10.0)
    for _ in range(20):
        now[0] += 1.0
        progress.advance()
    progress.close()
    assert out.getvalue().splitlines() == [
        "import: 10/100 (10%), 1.0/s, ETA 0:01:30",
        "import: 20/100 (20%), 1.0/s, ETA 0:01:20",
        "import: 20/100 (20%), 1.0/s, ETA 0:01:20",
    ]


def test_a_terminal_gets_a_bar() -> None:
    out = io.StringIO()
    progress = Progress(3, "warm", stream=out, tty=True)
    progress.advance(3)
    progress.close()
    assert "3/3" in out.getvalue() and "warm" in out.getvalue()
