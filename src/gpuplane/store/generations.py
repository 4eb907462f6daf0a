"""Generation-guarded updates (STYLE habit 7): update where generation = seen, else Conflict."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from gpuplane.domain.errors import Conflict


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
