"""The scheduler's memory: named JSON documents (``scheduler_state``), one row per name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from gpuplane.store.tables import SchedulerStateRow


@dataclass(frozen=True)
class StateDocument:
    name: str
    data: dict[str, Any]
    epoch: int  # the lease epoch that wrote it
    updated_at: float


class SchedulerStateRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self, names: Iterable[str]) -> dict[str, StateDocument]:
        """The stored documents among ``names`` (absent names are left out)."""
        names = sorted(set(names))
        if not names:
            return {}
        rows = self.s.execute(select(SchedulerStateRow)
                              .where(SchedulerStateRow.name.in_(names))).scalars().all()
        return {r.name: StateDocument(r.name, dict(r.data or {}), int(r.epoch), r.updated_at)
                for r in rows}

    def put(self, name: str, data: Mapping[str, Any], epoch: int, now: float) -> None:
        """Store (insert or replace) one document. Run it inside a fenced write transaction:
        the lease fence (and, on SQLite, the exclusive write) keeps two leaders from racing."""
        values = dict(data=dict(data), epoch=epoch, updated_at=now)
        n = self.s.execute(update(SchedulerStateRow).where(SchedulerStateRow.name == name)
                           .values(**values)
                           .execution_options(synchronize_session=False)).rowcount
        if n == 0:
            self.s.execute(insert(SchedulerStateRow).values(name=name, **values))
