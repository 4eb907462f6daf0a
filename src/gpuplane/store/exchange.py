"""Rows to plain records and back, for ``gpuplane export`` / ``gpuplane import`` (docs/exit.md).

Pure row plumbing: which table goes to which file, in which order, nested how, and how a
record is checked and inserted again with its ids, generations and timestamps. Signing,
hashing and the audit continuation live in ``service/exchange*.py``.

A record holds every column of its row under the column's name, except the parent's key in a
nested child (implied by the nesting) and secrets (``api_tokens.token_hash``). Rows come out
ordered by primary key (or name) so two exports of one state are byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text, func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError

from gpuplane.domain.errors import GpuplaneError
from gpuplane.store.tables import (ApiTokenRow, AttestationResultRow, AuditCheckpointRow,
                                   AuditHeadRow, AuditRow, Base, EventRow, GpuRow, HostRow,
                                   IdentityLinkRow, OrganisationRow, PolicyDocumentRow, PriorityClassRow,
                                   ProjectRow, QuotaRow, RoleBindingRow, SchedulerStateRow,
                                   SiteRow, TaskRow, UsageRow, UserRow, WorkloadRow)

BATCH = 1000
# An imported token keeps its metadata but can never authenticate: a presented token's hash
# is 64 hex digits, this is not. Its owner gets a new token (docs/exit.md "Tokens").
UNUSABLE_TOKEN_HASH = "imported:{id}:unusable"


class ExportRejected(GpuplaneError):
    """An export directory (or one of its files) cannot be imported; nothing was written."""

    def __init__(self, detail: str, code: str = "gpuplane.exchange.invalid") -> None:
        super().__init__(code=code, detail=detail)


@dataclass(frozen=True)
class Child:
    """Rows nested in their parent's record under ``key`` (a host's GPUs, a workload's tasks)."""

    key: str
    table: type[Base]
    parent_fk: str  # the child's column naming the parent; implied by the nesting
    order: tuple[str, ...]
    omit: tuple[str, ...] = ()


@dataclass(frozen=True)
class Concept:
    """One exported file: the rows of ``table`` (and their children), in ``order``."""

    file: str
    table: type[Base]
    order: tuple[str, ...]
    children: tuple[Child, ...] = ()

    @property
    def yaml(self) -> bool:
        return self.file.endswith(".yaml")


# In foreign-key order: importing them in this order never points at a missing row.
CONCEPTS: tuple[Concept, ...] = (
    Concept("sites.yaml", SiteRow, ("id",)),
    Concept("hosts.yaml", HostRow, ("id",), (Child("gpus", GpuRow, "host_id", ("idx",)),)),
    Concept("organisations.yaml", OrganisationRow, ("id",)),
    Concept("projects.yaml", ProjectRow, ("id",)),
    Concept("users.yaml", UserRow, ("id",), (
        Child("role_bindings", RoleBindingRow, "user_id", ("id",)),
        Child("tokens", ApiTokenRow, "user_id", ("id",), omit=("token_hash",)))),
    Concept("identity-links.yaml", IdentityLinkRow, ("id",)),
    Concept("quotas.yaml", QuotaRow, ("id",)),
    Concept("priority-classes.yaml", PriorityClassRow, ("id",)),
    Concept("policies.yaml", PolicyDocumentRow, ("name",)),
    Concept("workloads.jsonl", WorkloadRow, ("pk",),
            (Child("tasks", TaskRow, "workload_pk", ("idx",)),)),
    Concept("events.jsonl", EventRow, ("id",)),
    Concept("usage.jsonl", UsageRow, ("id",)),
    Concept("attestations.jsonl", AttestationResultRow, ("id",)),
    Concept("scheduler-state.jsonl", SchedulerStateRow, ("name",)),
)
# Tables an import fills; none may hold a row beforehand (leases and attestation
# challenges are not exported: see docs/exit.md).
FILLED = tuple(t for c in CONCEPTS for t in (c.table, *(ch.table for ch in c.children))) + (
    AuditRow, AuditCheckpointRow)


def _columns(table: type[Base], omit: Iterable[str] = ()) -> list[Any]:
    skip = set(omit)
    return [c for c in table.__table__.columns if c.name not in skip]


def _pk(table: type[Base]) -> str:
    return table.__table__.primary_key.columns.values()[0].name


def _record(row: Any, columns: list[Any]) -> dict[str, Any]:
    return {c.name: getattr(row, c.key) for c in columns}


def _ordered(table: type[Base], order: tuple[str, ...]) -> Any:
    return select(table).order_by(*(getattr(table, name) for name in order))


def _after(table: type[Base], order: tuple[str, ...], last: Any) -> Any:
    stmt = _ordered(table, order)
    return stmt if last is None else stmt.where(getattr(table, order[0]) > last)


# -- export ----------------------------------------------------------------------------------
def count(tx: Any, concept: Concept) -> int:
    """How many top-level records ``concept``'s file will hold."""
    return int(tx.session.execute(select(func.count()).select_from(concept.table)).scalar_one())


def records(tx: Any, concept: Concept) -> Iterator[dict[str, Any]]:
    """The records of one file, in order, fetched in batches (history files can be large)."""
    columns = _columns(concept.table)
    key = concept.order[0]
    pk = _pk(concept.table)
    last = None
    while True:
        rows = tx.session.execute(_after(concept.table, concept.order, last).limit(BATCH)
                                  ).scalars().all()
        if not rows:
            return
        ids = [getattr(r, pk) for r in rows]
        nested = {ch.key: _children(tx, ch, ids) for ch in concept.children}
        for r in rows:
            out = _record(r, columns)
            for ch in concept.children:
                out[ch.key] = nested[ch.key].get(getattr(r, pk), [])
            yield out
        tx.session.expunge_all()  # keep memory flat over a long history
        last = getattr(rows[-1], key)


def _children(tx: Any, child: Child, parent_ids: list[Any]) -> dict[Any, list[dict[str, Any]]]:
    columns = _columns(child.table, (child.parent_fk, *child.omit))
    fk = getattr(child.table, child.parent_fk)
    out: dict[Any, list[dict[str, Any]]] = {}
    stmt = _ordered(child.table, child.order).where(fk.in_(parent_ids))
    for row in tx.session.execute(stmt).scalars():
        out.setdefault(getattr(row, child.parent_fk), []).append(_record(row, columns))
    return out


def audit_identity(tx: Any) -> dict[str, Any]:
    """The log's origin, public keys and checkpoint metadata (notes are in audit.jsonl)."""
    origin, keys = tx.checkpoints.identity()
    cps = sorted(tx.checkpoints.list(), key=lambda cp: (cp.size, cp.id))
    return {"origin": origin, "public_keys": keys,
            "checkpoints": [{"id": cp.id, "size": cp.size, "root_hash": cp.root_hash,
                             "reason": cp.reason, "created_at": cp.created_at} for cp in cps]}


def audit_entries(tx: Any) -> Iterator[Any]:
    """Every audit entry in order, in batches."""
    after = None
    while True:
        batch, _ = tx.audit.list(after=after, limit=BATCH)
        if not batch:
            return
        yield from batch
        after = batch[-1].seq


# -- import ----------------------------------------------------------------------------------
def fresh_problems(tx: Any) -> list[str]:
    """What makes the database not fresh: ``["3 row(s) in users", ...]``; empty when it is."""
    out = []
    for table in FILLED:
        n = tx.session.execute(select(func.count()).select_from(table)).scalar_one()
        if n:
            out.append(f"{n} row(s) in {table.__tablename__}")
    origin, keys = tx.checkpoints.identity()
    if origin or keys:
        out.append(f"the audit log already has an identity (origin {origin!r})")
    return out


_TYPES: list[tuple[type, tuple[type, ...], str]] = [
    (Boolean, (bool,), "true or false"), (Integer, (int,), "an integer"),
    (Float, (int, float), "a number"), (String, (str,), "a string"), (Text, (str,), "a string")]


def _check(where: str, column: Any, value: Any) -> Any:
    if value is None:
        if not column.nullable:
            raise ExportRejected(f"{where}: field {column.name!r} must not be null")
        return None
    if isinstance(column.type, JSON):
        return value
    for kind, allowed, what in _TYPES:
        if isinstance(column.type, kind):
            if not isinstance(value, allowed) or (kind is not Boolean and isinstance(value, bool)):
                raise ExportRejected(f"{where}: field {column.name!r} must be {what}, not "
                                     f"{type(value).__name__}")
            return float(value) if kind is Float else value
    return value


def _values(where: str, record: Any, columns: list[Any], nested: Iterable[str] = (),
            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ExportRejected(f"{where}: expected a mapping, found {type(record).__name__}")
    names = {c.name for c in columns}
    unknown = sorted(set(record) - names - set(nested))
    missing = sorted(names - set(record))
    if unknown or missing:
        raise ExportRejected(f"{where}: " + "; ".join(
            ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
            + ([f"missing field(s) {', '.join(missing)}"] if missing else [])))
    out = {c.name: _check(where, c, record[c.name]) for c in columns}
    out.update(extra or {})
    return out


def restore(tx: Any, concept: Concept, items: Iterable[tuple[str, Any]]) -> int:
    """Insert one file's records (``(where, record)`` pairs, ``where`` naming file and line
    for messages) with their ids; returns how many top-level records were inserted."""
    columns = _columns(concept.table)
    nested_names = [ch.key for ch in concept.children]
    pk = _pk(concept.table)
    parents: list[dict[str, Any]] = []
    kids: dict[str, list[dict[str, Any]]] = {ch.key: [] for ch in concept.children}
    n = 0
    for where, record in items:
        row = _values(where, record, columns, nested_names)
        parents.append(row)
        for ch in concept.children:
            sub = record.get(ch.key)
            if not isinstance(sub, list):
                raise ExportRejected(f"{where}: field {ch.key!r} must be a list")
            ch_cols = _columns(ch.table, (ch.parent_fk, *ch.omit))
            for i, item in enumerate(sub):
                values = _values(f"{where}, {ch.key}[{i}]", item, ch_cols,
                                 extra={ch.parent_fk: row[pk]})
                if "token_hash" in ch.omit:
                    values["token_hash"] = UNUSABLE_TOKEN_HASH.format(id=values["id"])
                kids[ch.key].append(values)
        n += 1
        if len(parents) >= BATCH:
            _flush(tx, concept, parents, kids)
    _flush(tx, concept, parents, kids)
    return n


def _flush(tx: Any, concept: Concept, parents: list[dict[str, Any]],
           kids: dict[str, list[dict[str, Any]]]) -> None:
    _insert(tx, concept.file, concept.table, parents)
    for ch in concept.children:
        _insert(tx, concept.file, ch.table, kids[ch.key])
    parents.clear()
    for rows in kids.values():
        rows.clear()


def _insert(tx: Any, file: str, table: type[Base], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    try:
        tx.session.connection().execute(insert(table.__table__), rows)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise ExportRejected(f"{file}: its records do not fit the {table.__tablename__} "
                             f"table ({reason})") from None


def restore_audit(tx: Any, entries: Iterable[Mapping[str, Any]], identity: Mapping[str, Any],
                  notes: list[tuple[int, str, str | None]]) -> None:
    """Insert the audit entries verbatim (seq, hashes), point the head at the last one with
    the log's origin and keys and the hash of the (already restored) policies, and restore the
    checkpoints (metadata from ``identity``, note and timestamp token from ``notes``, matched
    in order)."""
    from gpuplane.governance.policies import policy_set_hash

    columns = _columns(AuditRow)
    batch: list[dict[str, Any]] = []
    last: Mapping[str, Any] | None = None
    for e in entries:
        batch.append(_values(f"audit.jsonl, seq {e.get('seq')}", e, columns))
        last = e
        if len(batch) >= BATCH:
            _insert(tx, "audit.jsonl", AuditRow, batch)
            batch.clear()
    _insert(tx, "audit.jsonl", AuditRow, batch)
    tx.session.execute(AuditHeadRow.__table__.update().where(AuditHeadRow.id == 1).values(
        seq=last["seq"] if last else 0, hash=last["hash"] if last else "0" * 64,
        origin=identity["origin"], public_keys=list(identity["public_keys"]),
        policy_hash=policy_set_hash({d.name: d.hash for d in tx.policy_docs.list()})))
    meta = identity["checkpoints"]
    if len(meta) != len(notes):
        raise ExportRejected(f"audit-log.yaml lists {len(meta)} checkpoint(s) but audit.jsonl "
                             f"holds {len(notes)}")
    rows = []
    for i, (m, (size, note, token)) in enumerate(zip(meta, notes)):
        if m.get("size") != size:
            raise ExportRejected(f"audit-log.yaml: checkpoints[{i}] has size {m.get('size')} "
                                 f"but checkpoint line {i + 1} of audit.jsonl has size {size}")
        cols = _columns(AuditCheckpointRow, ("note", "timestamp_token"))
        rows.append(_values(f"audit-log.yaml, checkpoints[{i}]", m, cols,
                            extra={"note": note, "timestamp_token": token}))
    _insert(tx, "audit-log.yaml", AuditCheckpointRow, rows)


def reset_sequences(tx: Any) -> None:
    """PostgreSQL: move each id sequence past the imported ids (SQLite needs nothing: a new
    rowid is always the largest one plus one)."""
    if tx.dialect != "postgresql":
        return
    for table in FILLED:
        col = table.__table__.primary_key.columns.values()[0]
        if col.autoincrement is not True:  # names, audit seq: no sequence behind them
            continue
        name = table.__tablename__
        tx.session.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{name}', '{col.name}'), "
            f"COALESCE((SELECT MAX({col.name}) FROM {name}), 0) + 1, false)"))
