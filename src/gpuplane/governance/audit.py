"""The append-only, tamper-evident audit log (DESIGN invariant 6).

Every entry carries ``hash = sha256(canonical JSON of its fields + prev_hash)``; the first entry's
``prev_hash`` is 64 zeros. Changing, removing or reordering any recorded entry breaks a link,
which ``verify_entries`` (and ``gpuplane audit verify FILE`` offline) reports. Appenders lock the
chain head row for the rest of their transaction, so the chain never forks, on SQLite or
PostgreSQL; the entry commits or rolls back together with the change it records.

Actions recorded (stable strings): ``workload.submit``, ``workload.cancel``, ``workload.delete``,
``quota.set``, ``quota.delete``, ``auth.login_failed`` (from the API: at most one per source
address per minute, with a count; see ``service/login_failures.py``), ``token.create``,
``token.revoke``, ``role.grant``, ``role.revoke``, ``organisation.*``, ``project.*``,
``user.*``, ``host.*``, ``site.*``, ``priority_class.*``, and from the control loop ``workload.admit``,
``task.preempt``, ``workload.preempt`` (beneficiary, grace, outcome, lost GPU-time), ``task.finish``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from gpuplane.store.records import AuditEntry
from gpuplane.store.repos_audit import GENESIS_HASH

FIELDS = ("seq", "at", "actor", "action", "object_kind", "object_id", "project_id", "org_id",
          "outcome", "detail", "prev_hash")


def entry_hash(fields: Mapping[str, Any]) -> str:
    """The hash of one entry from its FIELDS (``hash`` itself excluded)."""
    material = {k: fields[k] for k in FIELDS}
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def record(tx, *, at: float, actor: str, action: str, object_kind: str, object_id: str,  # noqa: ANN001
           project_id: int | None = None, org_id: int | None = None, outcome: str = "ok",
           detail: Mapping[str, Any] | None = None) -> AuditEntry:
    """Append one entry inside the caller's write transaction ``tx`` and return it."""
    seq, prev = tx.audit.lock_head()
    fields = dict(seq=seq + 1, at=float(at), actor=actor, action=action, object_kind=object_kind,
                  object_id=str(object_id), project_id=project_id, org_id=org_id,
                  outcome=outcome, detail=json.loads(json.dumps(dict(detail or {}), default=str)),
                  prev_hash=prev)
    entry = AuditEntry(**fields, hash=entry_hash(fields))
    tx.audit.append(entry)
    return entry


def record_many(tx, entries: Iterable[Mapping[str, Any]]) -> list[AuditEntry]:  # noqa: ANN001
    """``record`` for many entries (each a mapping of ``record``'s keyword arguments): the head
    is locked once, the entries are chained in order and written in one statement."""
    items = list(entries)
    if not items:
        return []
    seq, prev = tx.audit.lock_head()
    out = []
    for item in items:
        seq += 1
        fields = dict(seq=seq, at=float(item["at"]), actor=item["actor"], action=item["action"],
                      object_kind=item["object_kind"], object_id=str(item["object_id"]),
                      project_id=item.get("project_id"), org_id=item.get("org_id"),
                      outcome=item.get("outcome", "ok"),
                      detail=json.loads(json.dumps(dict(item.get("detail") or {}), default=str)),
                      prev_hash=prev)
        entry = AuditEntry(**fields, hash=entry_hash(fields))
        out.append(entry)
        prev = entry.hash
    tx.audit.append_many(out)
    return out


def entry_to_dict(entry: AuditEntry) -> dict[str, Any]:
    return {**{k: getattr(entry, k) for k in FIELDS}, "detail": dict(entry.detail),
            "hash": entry.hash}


def export_jsonl(entries: Iterable[AuditEntry]) -> Iterator[str]:
    """One JSON object per line, in chain order: the open export format."""
    for e in entries:
        yield json.dumps(entry_to_dict(e), sort_keys=True, ensure_ascii=False) + "\n"


def verify_entries(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Check a whole chain (from seq 1). Returns the problems found; empty means intact."""
    problems: list[str] = []
    prev_hash, expected_seq = GENESIS_HASH, 1
    for n, e in enumerate(entries, start=1):
        missing = [k for k in (*FIELDS, "hash") if k not in e]
        if missing:
            problems.append(f"entry {n}: missing fields {', '.join(missing)}")
            return problems
        if e["seq"] != expected_seq:
            problems.append(f"entry {n}: seq {e['seq']}, expected {expected_seq} "
                            "(an entry was removed or reordered)")
        if e["prev_hash"] != prev_hash:
            problems.append(f"entry seq {e['seq']}: prev_hash does not match the previous entry")
        if entry_hash(e) != e["hash"]:
            problems.append(f"entry seq {e['seq']}: content does not match its hash "
                            "(the entry was changed)")
        prev_hash, expected_seq = e["hash"], e["seq"] + 1
    return problems


def verify_file(path: str | Path) -> list[str]:
    """Verify an exported JSONL chain offline (``gpuplane audit verify FILE``)."""
    entries = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                return [f"line {lineno}: not JSON ({exc.msg})"]
    return verify_entries(entries)
