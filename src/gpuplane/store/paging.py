"""Keyset pagination: ``after`` is the last key of the previous page (opaque to clients)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_after: int | None  # pass back as ``after`` for the next page; None: this was the last


def paginate(session: Session, stmt: Select, key: Any, after: int | None, limit: int,
             convert: Callable[[Any], T], key_of: Callable[[Any], int]) -> Page[T]:
    """Run ``stmt`` ordered by ``key`` ascending, starting after ``after``, ``limit`` rows."""
    if after is not None:
        stmt = stmt.where(key > after)
    rows: Sequence[Any] = session.execute(stmt.order_by(key).limit(limit + 1)).scalars().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([convert(r) for r in rows], key_of(rows[-1]) if more and rows else None)
