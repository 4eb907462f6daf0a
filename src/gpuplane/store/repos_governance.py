"""Repositories for governance: policy documents, audit checkpoints, attestation challenges
and results. The logic (hashing, signing, appraisal) lives in ``governance/``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from gpuplane.store.records import AttestationResult, Checkpoint, PolicyDocument
from gpuplane.store.tables import (AttestationChallengeRow, AttestationResultRow,
                                   AuditCheckpointRow, AuditHeadRow, PolicyDocumentRow)


class PolicyDocumentRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    @staticmethod
    def _doc(r: PolicyDocumentRow) -> PolicyDocument:
        return PolicyDocument(r.name, dict(r.data), r.version, r.hash, r.updated_by, r.updated_at)

    def get(self, name: str) -> PolicyDocument | None:
        row = self.s.get(PolicyDocumentRow, name)
        return None if row is None else self._doc(row)

    def list(self) -> list[PolicyDocument]:
        return [self._doc(r) for r in self.s.execute(
            select(PolicyDocumentRow).order_by(PolicyDocumentRow.name)).scalars()]

    def put(self, name: str, data: Mapping[str, Any], digest: str, by: str,
            now: float) -> PolicyDocument:
        row = self.s.get(PolicyDocumentRow, name, with_for_update=True)
        if row is None:
            row = PolicyDocumentRow(name=name, data=dict(data), version=1, hash=digest,
                                    updated_by=by, updated_at=now)
            self.s.add(row)
        else:
            row.data, row.hash, row.updated_by, row.updated_at = dict(data), digest, by, now
            row.version += 1
        self.s.flush()
        return self._doc(row)


class CheckpointRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    @staticmethod
    def _cp(r: AuditCheckpointRow) -> Checkpoint:
        return Checkpoint(r.id, r.size, r.root_hash, r.note, r.reason, r.timestamp_token,
                          r.created_at)

    def add(self, size: int, root_hash: str, note: str, reason: str, now: float,
            timestamp_token: str | None = None) -> Checkpoint:
        row = AuditCheckpointRow(size=size, root_hash=root_hash, note=note, reason=reason,
                                 timestamp_token=timestamp_token, created_at=now)
        self.s.add(row)
        self.s.flush()
        return self._cp(row)

    def set_note(self, cp_id: int, note: str, timestamp_token: str | None) -> None:
        """Replace a checkpoint's note (cosignatures added) and/or its timestamp token."""
        self.s.execute(update(AuditCheckpointRow).where(AuditCheckpointRow.id == cp_id)
                       .values(note=note, timestamp_token=timestamp_token))

    def latest(self) -> Checkpoint | None:
        row = self.s.execute(select(AuditCheckpointRow).order_by(
            AuditCheckpointRow.id.desc()).limit(1)).scalar_one_or_none()
        return None if row is None else self._cp(row)

    def list(self) -> list[Checkpoint]:
        return [self._cp(r) for r in self.s.execute(
            select(AuditCheckpointRow).order_by(AuditCheckpointRow.id)).scalars()]

    def find_size(self, size: int) -> Checkpoint | None:
        row = self.s.execute(select(AuditCheckpointRow).where(AuditCheckpointRow.size == size)
                             .order_by(AuditCheckpointRow.id.desc()).limit(1)
                             ).scalar_one_or_none()
        return None if row is None else self._cp(row)

    def identity(self) -> tuple[str, list[str]]:
        """(origin, public keys as PEM) of the log; ("", []) before the first checkpoint."""
        row = self.s.execute(select(AuditHeadRow.origin, AuditHeadRow.public_keys)
                             .where(AuditHeadRow.id == 1)).first()
        return (row[0] or "", list(row[1] or [])) if row else ("", [])

    def set_identity(self, origin: str, public_keys: list[str]) -> None:
        self.s.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1)
                       .values(origin=origin, public_keys=list(public_keys)))


class AttestationRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add_challenge(self, nonce: str, host: str, now: float, expires_at: float) -> None:
        self.s.execute(delete(AttestationChallengeRow).where(
            AttestationChallengeRow.expires_at < now))
        self.s.add(AttestationChallengeRow(nonce=nonce, host_name=host, created_at=now,
                                           expires_at=expires_at))
        self.s.flush()

    def take_challenge(self, nonce: str, host: str, now: float) -> bool:
        """Consume a nonce issued to ``host`` and still valid; False when there is none."""
        n = self.s.execute(delete(AttestationChallengeRow).where(
            AttestationChallengeRow.nonce == nonce, AttestationChallengeRow.host_name == host,
            AttestationChallengeRow.expires_at >= now)).rowcount
        return bool(n)

    def add_result(self, host: str, kind: str, passed: bool, status: str,
                   reasons: Iterable[str], claims: Mapping[str, Any], ear: Mapping[str, Any],
                   appraised_at: float, expires_at: float) -> AttestationResult:
        row = AttestationResultRow(host_name=host, kind=kind, passed=passed, status=status,
                                   reasons=list(reasons), claims=dict(claims), ear=dict(ear),
                                   appraised_at=appraised_at, expires_at=expires_at)
        self.s.add(row)
        self.s.flush()
        return _result(row)

    def latest(self, hosts: Iterable[str] | None = None) -> dict[tuple[str, str], AttestationResult]:
        """The newest result per (host, kind)."""
        newest = select(func.max(AttestationResultRow.id)).group_by(
            AttestationResultRow.host_name, AttestationResultRow.kind)
        stmt = select(AttestationResultRow).where(AttestationResultRow.id.in_(newest))
        if hosts is not None:
            stmt = stmt.where(AttestationResultRow.host_name.in_(list(hosts)))
        return {(r.host_name, r.kind): _result(r) for r in self.s.execute(stmt).scalars()}

    def history(self, host: str, limit: int = 50) -> list[AttestationResult]:
        return [_result(r) for r in self.s.execute(
            select(AttestationResultRow).where(AttestationResultRow.host_name == host)
            .order_by(AttestationResultRow.id.desc()).limit(limit)).scalars()]


def _result(r: AttestationResultRow) -> AttestationResult:
    return AttestationResult(r.id, r.host_name, r.kind, r.passed, r.status, tuple(r.reasons),
                             dict(r.claims), dict(r.ear), r.appraised_at, r.expires_at)
