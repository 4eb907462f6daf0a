"""Generation-guarded updates (STYLE habit 7): update where generation = seen, else Conflict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from gpuplane.domain.errors import Conflict
from gpuplane.store.bulk import update_from_arrays


def guarded_update(session: Session, table: Any, key_col: Any, key: Any, seen_generation: int,
                   what: str, **values: Any) -> int:
    """Apply ``values`` to the row whose key is ``key`` if its generation is still
    ``seen_generation``; bump the generation and return the new one.

    Raises ``Conflict(gpuplane.generation.conflict)`` when another writer got there first (or
    the row is gone): reload and retry."""
    result = session.execute(
        update(table)
        .where(key_col == key, table.generation == seen_generation)
        .values(generation=table.generation + 1, **values)
        .execution_options(synchronize_session=False))
    session.expire_all()
    if result.rowcount != 1:
        raise Conflict(f"{what} changed since it was read (generation {seen_generation}); "
                       "reload it and try again", code="gpuplane.generation.conflict")
    return seen_generation + 1


def guarded_update_many(session: Session, table: Any, key: str,
                        rows: Sequence[tuple[Any, int, Mapping[str, Any]]], what: str) -> None:
    """``guarded_update`` for many rows in a few round trips: ``rows`` are (key, seen
    generation, values); rows with the same value columns go in one executemany statement.

    Raises ``Conflict`` if any row's generation moved (the caller should have locked and
    checked the rows first: then this never happens, and a raise means a bug or a writer that
    ignored the lock). All or nothing only together with the enclosing transaction."""
    t = table.__table__
    groups: dict[tuple[str, ...], list[tuple[Any, int, Mapping[str, Any]]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row[2])), []).append(row)
    conn = session.connection()
    for cols, group in groups.items():
        if conn.dialect.name == "postgresql" and len(group) > 1:
            n = conn.execute(*update_from_arrays(t, key, cols, group, conn.dialect)).rowcount
            if n != len(group):
                raise Conflict(f"{len(group) - n} {what}(s) changed since they were read; "
                               "reload and try again", code="gpuplane.generation.conflict")
            continue
        # a bound None is what ``guarded_update`` writes too (JSON columns: JSON null)
        stmt = (update(t).where(t.c[key] == bindparam("_key"),
                                t.c.generation == bindparam("_seen"))
                .values(generation=t.c.generation + 1,
                        **{c: bindparam(f"v_{c}") for c in cols}))
        params = [{"_key": k, "_seen": seen, **{f"v_{c}": v[c] for c in cols}}
                  for k, seen, v in group]
        n = conn.execute(stmt, params).rowcount
        if n != len(params):
            raise Conflict(f"{len(params) - n} {what}(s) changed since they were read; reload "
                           "and try again", code="gpuplane.generation.conflict")
    session.expire_all()

