"""Raw storage of the audit chain. The chain logic (hashing, verification) is in
``governance/audit.py``; this module only locks the head, appends rows and reads them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gpuplane.store.bulk import insert_many
from gpuplane.store.records import AuditEntry
from gpuplane.store.tables import AuditHeadRow, AuditRow

GENESIS_HASH = "0" * 64


class Head(NamedTuple):
    seq: int
    hash: str
    policy_hash: str


def _entry(r: AuditRow) -> AuditEntry:
    return AuditEntry(r.seq, r.at, r.actor, r.action, r.object_kind, r.object_id, r.project_id,
                      r.org_id, r.outcome, dict(r.detail or {}), r.policy_hash or "",
                      r.prev_hash, r.hash)


class AuditRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def lock_head(self) -> Head:
        """Lock the log head for this transaction (row lock on PostgreSQL; SQLite write
        transactions are already exclusive) and return it: last seq, last hash, and the hash
        of the policy set in force (kept here so appending costs no extra read)."""
        row = self.s.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1)
                             .values(seq=AuditHeadRow.seq)
                             .returning(AuditHeadRow.seq, AuditHeadRow.hash,
                                        AuditHeadRow.policy_hash)
                             .execution_options(synchronize_session=False)).first()
        if row is None:
            return Head(0, GENESIS_HASH, "")
        return Head(int(row[0]), row[1], row[2] or "")

    def set_policy_hash(self, policy_hash: str) -> None:
        """Record the hash of the policy set now in force (in the transaction that set it)."""
        self.s.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1)
                       .values(policy_hash=policy_hash)
                       .execution_options(synchronize_session=False))

    def append(self, entry: AuditEntry) -> None:
        self.append_many([entry])

    def append_many(self, entries: Sequence[AuditEntry]) -> None:
        """Append consecutive entries (the first follows the locked head) in one statement
        (``store.bulk``), then move the head once."""
        if not entries:
            return
        self.s.flush()
        insert_many(self.s.connection(), AuditRow.__table__, [
            dict(seq=e.seq, at=e.at, actor=e.actor, action=e.action, object_kind=e.object_kind,
                 object_id=e.object_id, project_id=e.project_id, org_id=e.org_id,
                 outcome=e.outcome, detail=dict(e.detail), policy_hash=e.policy_hash,
                 prev_hash=e.prev_hash, hash=e.hash)
            for e in entries])
        last = entries[-1]
        self.s.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1)
                       .values(seq=last.seq, hash=last.hash)
                       .execution_options(synchronize_session=False))

    def size(self) -> int:
        """How many entries the log holds (read without locking)."""
        return int(self.s.execute(select(AuditHeadRow.seq).where(AuditHeadRow.id == 1)
                                  ).scalar_one_or_none() or 0)

    def hashes(self, size: int | None = None) -> list[str]:
        """The leaf hashes (hex) of entries 1..size (all when ``None``), in order."""
        stmt = select(AuditRow.hash).order_by(AuditRow.seq)
        if size is not None:
            stmt = stmt.where(AuditRow.seq <= size)
        return list(self.s.execute(stmt).scalars())

    def list(self, project_ids: Iterable[int] | None = None, org_ids: Iterable[int] | None = None,
             after: int | None = None, limit: int = 1000,
             action: str | None = None) -> tuple[list[AuditEntry], int | None]:
        """Entries in order; with scopes, only entries of those projects or organisations."""
        stmt = select(AuditRow)
        if project_ids is not None or org_ids is not None:
            conds: list[Any] = []
            if project_ids is not None:
                conds.append(AuditRow.project_id.in_(list(project_ids)))
            if org_ids is not None:
                conds.append(AuditRow.org_id.in_(list(org_ids)))
            stmt = stmt.where(or_(*conds))
        if action is not None:
            stmt = stmt.where(AuditRow.action == action)
        if after is not None:
            stmt = stmt.where(AuditRow.seq > after)
        rows = self.s.execute(stmt.order_by(AuditRow.seq).limit(limit + 1)).scalars().all()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_entry(r) for r in rows], (rows[-1].seq if more and rows else None)
