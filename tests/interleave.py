"""Forcing an interleaving: another transaction commits at an exact point of
the one under test, between two of its statements.

The hook runs in the test's own thread, on a connection of its own, while
the transaction under test waits inside its statement callback.  PostgreSQL
(READ COMMITTED) shows the next statement what the hook committed; SQLite
serializes writers and gives a read transaction one snapshot, so there a
race of this kind cannot happen and the hook's effect is not seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


@contextmanager
def after_statement(
    engine: Engine, matching: Callable[[str], bool], then: Callable[[], None], occurrence: int = 1
) -> Iterator[list[str]]:
    """Run then() once, right after the occurrence-th statement (on engine)
    that matching() accepts.  Yields the statements it ran after, so a test
    can assert the interleaving it meant really happened."""
    seen: list[str] = []
    fired: list[str] = []

    def hook(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if fired or not matching(statement):
            return
        seen.append(statement)
        if len(seen) == occurrence:
            fired.append(statement)
            then()

    event.listen(engine, "after_cursor_execute", hook)
    try:
        yield fired
    finally:
        event.remove(engine, "after_cursor_execute", hook)
