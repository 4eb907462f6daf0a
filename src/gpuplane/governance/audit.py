"""The audit log: an append-only transparency log (RFC 9162 Merkle tree) with signed checkpoints.

Each entry is one leaf. Its content is the canonical JSON of FIELDS (time, actor, tenant,
action, object, outcome, detail with the reasons, the hash of the policy set in force, and the
previous entry's hash) and its ``hash`` is the RFC 9162 leaf hash ``SHA-256(0x00 || content)``.
The ``prev_hash`` link makes a changed, removed, inserted or reordered entry visible on its
own; the Merkle root in a signed checkpoint (``governance/checkpoints.py``) makes a truncated
tail or a whole history rewritten with recomputed hashes visible too (DESIGN invariant 6).
Appenders lock the log head row for the rest of their transaction, so the log never forks, on
SQLite or PostgreSQL; an entry commits or rolls back with the change it records.

The export format (``gpuplane audit export FILE``, ``GET /v1/audit/export``) is JSON lines: one
object per entry, in order, and after the entry that ends a checkpoint, one line
``{"checkpoint": "<signed note>", "size": N, "timestamp_token": <base64 or null>}``.
``verify_log`` checks such a file offline, with no server, against a checkpoint and key the
auditor kept, and names the first leaf or checkpoint that does not hold.

Actions recorded (stable strings): ``workload.submit``, ``workload.cancel``, ``workload.delete``,
``quota.set``, ``quota.delete``, ``auth.login_failed`` (from the API: at most one per source
address per minute, with a count; see ``service/login_failures.py``), ``token.create``,
``token.revoke``, ``role.grant``, ``role.revoke``, ``organisation.*``, ``project.*``,
``user.*``, ``host.*`` (``host.attest``: an appraisal with its EAR and reasons), ``site.*``,
``priority_class.*``, ``policy.set``, and from the control loop ``workload.admit`` (each
placement with site, jurisdiction, host and its attested identity), ``task.preempt``,
``workload.preempt`` (beneficiary, grace, outcome, lost GPU-time), ``task.finish``,
``task.attestation_expired``, ``openstack.sync`` / ``openstack.sync_problem`` (the Placement
reconciler's repairs and what it could not repair).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuplane.governance import merkle
from gpuplane.store.records import AuditEntry, Checkpoint
from gpuplane.store.repos_audit import GENESIS_HASH

FIELDS = ("seq", "at", "actor", "action", "object_kind", "object_id", "project_id", "org_id",
          "outcome", "detail", "policy_hash", "prev_hash")


def content(fields: Mapping[str, Any]) -> bytes:
    """The leaf data of one entry: canonical JSON of its FIELDS."""
    material = {k: fields[k] for k in FIELDS}
    return json.dumps(material, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def entry_hash(fields: Mapping[str, Any]) -> str:
    """The RFC 9162 leaf hash of one entry (hex), from its FIELDS (``hash`` excluded)."""
    return merkle.leaf_hash(content(fields)).hex()


def rehash_rows(rows: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int, str, str]]:
    """(seq, prev_hash, hash) of stored rows re-chained with ``entry_hash`` (migration 0004)."""
    prev = GENESIS_HASH
    for row in rows:
        fields = {**row, "policy_hash": row.get("policy_hash") or "", "prev_hash": prev}
        h = entry_hash(fields)
        yield row["seq"], prev, h
        prev = h


def _entry(seq: int, prev: str, policy_hash: str, item: Mapping[str, Any]) -> AuditEntry:
    fields = dict(seq=seq, at=float(item["at"]), actor=item["actor"], action=item["action"],
                  object_kind=item["object_kind"], object_id=str(item["object_id"]),
                  project_id=item.get("project_id"), org_id=item.get("org_id"),
                  outcome=item.get("outcome", "ok"),
                  detail=json.loads(json.dumps(dict(item.get("detail") or {}), default=str)),
                  policy_hash=policy_hash, prev_hash=prev)
    return AuditEntry(**fields, hash=entry_hash(fields))


def record(tx, *, at: float, actor: str, action: str, object_kind: str, object_id: str,  # noqa: ANN001
           project_id: int | None = None, org_id: int | None = None, outcome: str = "ok",
           detail: Mapping[str, Any] | None = None) -> AuditEntry:
    """Append one entry inside the caller's write transaction ``tx`` and return it."""
    return record_many(tx, [dict(at=at, actor=actor, action=action, object_kind=object_kind,
                                 object_id=object_id, project_id=project_id, org_id=org_id,
                                 outcome=outcome, detail=detail)])[0]


def record_many(tx, entries: Iterable[Mapping[str, Any]]) -> list[AuditEntry]:  # noqa: ANN001
    """``record`` for many entries (each a mapping of ``record``'s keyword arguments): the head
    is locked once, the entries are chained in order and written in one statement; each
    carries the hash of the policy set in force (kept in the log head: see
    ``GovernanceService.set_policy``)."""
    items = list(entries)
    if not items:
        return []
    seq, prev, policy_hash = tx.audit.lock_head()
    out = []
    for item in items:
        seq += 1
        entry = _entry(seq, prev, policy_hash, item)
        out.append(entry)
        prev = entry.hash
    tx.audit.append_many(out)
    return out


def entry_to_dict(entry: AuditEntry) -> dict[str, Any]:
    return {**{k: getattr(entry, k) for k in FIELDS}, "detail": dict(entry.detail),
            "hash": entry.hash}


def export_jsonl(entries: Iterable[AuditEntry],
                 checkpoints: Sequence[Checkpoint] = ()) -> Iterator[str]:
    """The open export format: one JSON object per line, in log order, each checkpoint after
    the entry it ends (checkpoints of size 0 first)."""
    by_size: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        by_size.setdefault(cp.size, []).append(cp)

    def lines(size: int) -> Iterator[str]:
        for cp in by_size.pop(size, ()):
            yield json.dumps({"checkpoint": cp.note, "size": cp.size,
                              "timestamp_token": cp.timestamp_token}, sort_keys=True) + "\n"

    yield from lines(0)
    for e in entries:
        yield json.dumps(entry_to_dict(e), sort_keys=True, ensure_ascii=False) + "\n"
        yield from lines(e.seq)


# -- offline verification -----------------------------------------------------------------------
@dataclass
class LogFile:
    """A parsed export: entries (dicts) and embedded checkpoints ((size, note, token))."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[tuple[int, str, str | None]] = field(default_factory=list)


class LogFormatError(ValueError):
    """The file is not an audit log export (names the line)."""


def read_log(path: str | Path) -> LogFile:
    with open(path, encoding="utf-8") as fh:
        return parse_log(fh)


def parse_log(lines: Iterable[str]) -> LogFile:
    """The export format's lines -> entries and checkpoints (LogFormatError naming the line)."""
    out = LogFile()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LogFormatError(f"line {lineno}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise LogFormatError(f"line {lineno}: not a JSON object")
        if "checkpoint" in obj:
            if not isinstance(obj.get("checkpoint"), str) or \
                    not isinstance(obj.get("size"), int):
                raise LogFormatError(f"line {lineno}: a checkpoint line needs "
                                     "'checkpoint' (text) and 'size' (integer)")
            out.checkpoints.append((obj["size"], obj["checkpoint"], obj.get("timestamp_token")))
        else:
            out.entries.append(obj)
    return out


@dataclass
class Verification:
    """What ``verify_log`` found: ``problems`` (empty = the log holds), the leaf hashes it
    computed, and the checkpoints it checked (size -> signer names)."""

    problems: list[str] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    checked: dict[int, list[str]] = field(default_factory=dict)
    timestamped: dict[int, str] = field(default_factory=dict)  # size -> the TSA's time (ISO)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_entries(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Check every entry's own hash and its link to the previous one (from seq 1); the
    problems found, empty when the chain is intact. Without a checkpoint this cannot see a
    truncated tail or a consistent rewrite: ``verify_log`` can."""
    return _check_chain(entries, [])


def _check_chain(entries: Iterable[Mapping[str, Any]], leaves: list[bytes]) -> list[str]:
    problems: list[str] = []
    prev_hash, expected_seq = GENESIS_HASH, 1
    for n, e in enumerate(entries, start=1):
        missing = [k for k in (*FIELDS, "hash") if k not in e]
        if missing:
            problems.append(f"leaf {n}: missing fields {', '.join(missing)}")
            return problems
        if e["seq"] != expected_seq:
            problems.append(f"leaf {n} (seq {e['seq']}): expected seq {expected_seq} "
                            "(an entry was removed, inserted or reordered)")
        if e["prev_hash"] != prev_hash:
            problems.append(f"leaf {n} (seq {e['seq']}): prev_hash does not match the "
                            "previous entry")
        try:
            h = merkle.leaf_hash(content(e))
        except (TypeError, ValueError) as exc:
            problems.append(f"leaf {n} (seq {e['seq']}): content cannot be encoded ({exc})")
            return problems
        if h.hex() != e["hash"]:
            problems.append(f"leaf {n} (seq {e['seq']}): content does not match its hash "
                            "(the entry was changed)")
        leaves.append(h)
        prev_hash, expected_seq = e["hash"], e["seq"] + 1
    return problems


def verify_log(log: LogFile, verifiers: Sequence[Any] = (), trusted: str | None = None,
               tsa_roots: Sequence[bytes] = ()) -> Verification:
    """Verify an exported log offline: every entry (hash and link), every embedded checkpoint
    (signature by one of ``verifiers``, root over its leaves), and the auditor's own
    ``trusted`` checkpoint (a signed note kept from earlier: the file must still hold every
    entry it covers, unchanged). ``verifiers`` are ``note.Verifier`` objects. Checkpoint
    signatures are checked only when verifiers are given (a problem is reported otherwise).
    With ``tsa_roots`` (PEM), each embedded checkpoint's RFC 3161 token is checked too."""
    from gpuplane.governance import note

    out = Verification()
    out.problems = _check_chain(log.entries, out.leaves)
    prefix_roots: dict[int, bytes] = {}

    def root_of(size: int) -> bytes:
        if size not in prefix_roots:
            prefix_roots[size] = merkle.root(out.leaves[:size])
        return prefix_roots[size]

    def check(label: str, size: int, text: str, previous_good: int) -> bool:
        if not verifiers:
            out.problems.append(f"{label}: no public key given (--key), its signature is not "
                                "checked")
            return False
        try:
            body, signers = note.open_note(text, verifiers)
            cp = note.parse_checkpoint(body)
        except note.NoteError as exc:
            out.problems.append(f"{label}: signature does not verify ({exc})")
            return False
        if cp.size != size:
            out.problems.append(f"{label}: says size {cp.size}, the line says {size}")
            return False
        if cp.size > len(out.leaves):
            out.problems.append(f"{label}: covers {cp.size} entries but the file holds only "
                                f"{len(out.leaves)} (the log was truncated)")
            return False
        if root_of(cp.size) != cp.root_hash:
            out.problems.append(f"{label}: root hash does not match leaves 1..{cp.size} (an "
                                f"entry among leaves {previous_good + 1}..{cp.size} was "
                                "changed, removed, inserted or the history was rewritten)")
            return False
        out.checked[cp.size] = list(signers)
        return True

    good = 0
    for i, (size, text, token) in enumerate(log.checkpoints, start=1):
        if check(f"checkpoint {i} (size {size})", size, text, good):
            good = max(good, size)
            if tsa_roots and token:
                _check_timestamp(out, f"checkpoint {i} (size {size})", size, text, token,
                                 tsa_roots)
    if trusted is not None:
        try:
            size = note.parse_checkpoint(note.unverified_text(trusted)).size
        except note.NoteError as exc:
            out.problems.append(f"trusted checkpoint: not a checkpoint ({exc})")
        else:
            check("trusted checkpoint", size, trusted, good)
    return out


def _check_timestamp(out: Verification, label: str, size: int, text: str, token: str,
                     roots: Sequence[bytes]) -> None:
    from gpuplane.governance import note
    from gpuplane.governance.timestamp import TimestampError, verify_timestamp

    try:
        at = verify_timestamp(base64.b64decode(token), note.unverified_text(text).encode(),
                              roots)
    except (TimestampError, ValueError) as exc:
        out.problems.append(f"{label}: its RFC 3161 timestamp does not verify ({exc})")
        return
    out.timestamped[size] = at.isoformat()


def leaf_hashes_of(entries: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """The leaf hash of each stored entry, from the stored ``hash`` (hex)."""
    return [bytes.fromhex(e["hash"] if isinstance(e, Mapping) else e) for e in entries]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
