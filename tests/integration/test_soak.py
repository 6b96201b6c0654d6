"""Nothing acknowledged is ever lost: the soak of tests/soak.py, smaller.

Real `twistd pymager` processes on one store, uploads, deletes, re-uploads
and derived requests from six clients, while extra processes start (their
start-up recovery runs during the uploads) and stop, one is killed and
restarted, and `pymager-admin check --repair` runs beside them.  Every
acknowledged upload must then be there with the acknowledged bytes, every
acknowledged delete must stay a 404, and `pymager-admin check` must find
the store consistent.  bench/soak.py runs the same over 10,000 uploads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pymager_tx.adapters.sql.database import Database, make_engine
from pymager_tx.ports import immediate
from tests.results import result_of
from tests.soak import SoakOptions, run_soak

# About 10-20 s per database on two cores.  Chaos comes every 25 uploads,
# weighted towards starting processes: start-up recovery racing uploads is
# where acknowledged uploads were lost.
UPLOADS = 1000


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_soak_with_processes_starting_dying_and_repairing_loses_nothing_acknowledged(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    database_url = None  # SQLite in the data directory, as by default
    if database == "postgres":
        database_url = request.getfixturevalue("postgres_server_url")
        # The server's database is shared by the session's tests: start empty.
        _drop_schema(database_url)
        request.addfinalizer(lambda: _drop_schema(database_url))
    lines: list[str] = []
    options = SoakOptions(
        directory=tmp_path / "soak",
        database_url=database_url,
        uploads=UPLOADS,
        clients=6,
        processes=2,
        seconds_limit=60.0,
        seed=20261202,
        chaos_every=25,
        max_extras=2,
        repairs_at_once=2,
        weights={"start": 5, "stop": 3, "kill": 1, "repair": 3},
        log=lines.append,
    )
    # run_soak kills every process it started before it returns or raises.
    result = run_soak(options)
    summary = result.summary() + "\nchaos:\n" + "\n".join(lines)
    print(summary)

    assert result.lost == [], summary
    assert result.wrong == [], summary
    assert result.unverifiable == [], summary
    assert result.check_consistent, summary
    assert result.tally.anomalies == [], summary
    assert result.tracebacks == 0, summary
    # The soak did what it says, not a quiet run that proves nothing.
    assert result.tally.uploads_attempted == UPLOADS
    assert result.verified_present > UPLOADS * 0.8, summary
    assert result.verified_absent > 0 and result.tally.reuploads_acknowledged > 0, summary
    assert result.tally.derived_ok > 0, summary
    chaos = result.chaos
    assert chaos.started >= 1 and chaos.stopped >= 1 and chaos.killed >= 1 and chaos.repairs >= 1, summary
    assert chaos.failed_starts == [], summary


def _drop_schema(url: str) -> None:
    database = Database(make_engine(url, 1), immediate)
    try:
        result_of(database.drop_schema())
    finally:
        database.engine.dispose()
