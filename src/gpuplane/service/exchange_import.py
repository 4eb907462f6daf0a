"""``gpuplane import DIR``: verify an export, restore it into a fresh installation, and continue
its audit log with a proof that the continuation extends what was exported (docs/exit.md).

Verification comes first and touches no database: the manifest's signature (with the key the
operator kept, ``--key``, else the ``audit-key.pem`` shipped in the export), every file's
SHA-256 and size, and the audit log (every leaf and link, every embedded checkpoint, and
``checkpoint.txt``). Then one write transaction restores every row with its ids, inserts the
audit entries verbatim, appends ``system.import`` and signs a checkpoint with the new
installation's key, and checks the RFC 9162 consistency proof from the exported checkpoint to
the new one; any failure rolls everything back, so a refused import writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gpuplane.governance import audit, checkpoints, merkle, note
from gpuplane.service.exchange import (AUDIT_IDENTITY, AUDIT_LOG, CHECKPOINT, DATA_FILES, FORMAT,
                                       FORMAT_VERSION, MANIFEST, PUBLIC_KEY, SIGNATURE, Progress,
                                       canonical_manifest)
from gpuplane.store import exchange as rows
from gpuplane.store.exchange import ExportRejected


@dataclass
class VerifiedExport:
    """An export whose signature, file hashes and audit log all hold."""

    directory: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    origin: str
    key_source: str  # "--key FILE" or "the export's own audit-key.pem"
    identity: dict[str, Any]
    log: audit.LogFile
    checkpoint_note: str
    checkpoint: note.Checkpoint
    unlisted: list[str] = field(default_factory=list)  # files in DIR the manifest ignores


@dataclass
class ImportReport:
    verified: VerifiedExport
    records: dict[str, int]
    old_size: int
    old_root: str
    new_size: int
    new_root: str
    new_checkpoint: str
    proof: list[str]  # consistency proof old -> new, hex
    new_key: str  # the new installation's verifier key (vkey)
    key_added: bool  # the new key was not among the log's keys before


def _read(directory: Path, name: str) -> str:
    try:
        return (directory / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportRejected(f"{directory / name} is missing; is {directory} a gpuplane "
                             "export?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportRejected(f"{directory / name} cannot be read ({exc})") from None


def verify_export(directory: Path, trusted_key: Path | None = None) -> VerifiedExport:
    """Check an export without touching any database; raise ``ExportRejected`` naming the
    first file (or audit leaf) that does not hold."""
    directory = Path(directory)
    text = _read(directory, MANIFEST)
    try:
        manifest = json.loads(text)
        origin = manifest["origin"]
    except (ValueError, KeyError, TypeError):
        raise ExportRejected(f"{MANIFEST} is not a gpuplane export manifest") from None
    if not isinstance(origin, str) or not origin:
        raise ExportRejected(f"{MANIFEST}: 'origin' is not the log's name")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ExportRejected(f"{MANIFEST}: format {manifest.get('format')!r} version "
                             f"{manifest.get('format_version')!r} is not {FORMAT!r} version "
                             f"{FORMAT_VERSION} (this gpuplane reads only that)")
    key_path = trusted_key or directory / PUBLIC_KEY
    source = f"--key {trusted_key}" if trusted_key else f"the export's own {PUBLIC_KEY}"
    try:
        pem = key_path.read_bytes()
        verifier = note.verifier_from_pem(origin, pem)
    except OSError as exc:
        raise ExportRejected(f"{key_path} cannot be read ({exc.strerror})") from None
    except note.NoteError as exc:
        raise ExportRejected(f"{key_path} is not the Ed25519 audit public key ({exc})") from None
    try:
        body, _ = note.open_note(_read(directory, SIGNATURE), [verifier])
    except note.NoteError as exc:
        raise ExportRejected(f"{SIGNATURE} does not verify with {source} ({exc})",
                             code="gpuplane.exchange.tampered") from None
    if body != text or canonical_manifest(manifest) != text:
        raise ExportRejected(f"{MANIFEST} is not the text {SIGNATURE} signs",
                             code="gpuplane.exchange.tampered")
    _check_files(directory, manifest)
    identity = _load_yaml(directory / AUDIT_IDENTITY, AUDIT_IDENTITY)
    if not isinstance(identity, dict) or identity.get("origin") != origin:
        raise ExportRejected(f"{AUDIT_IDENTITY}: origin does not match the manifest's "
                             f"{origin!r}")
    try:  # export adds its key to the log's keys: a stranger's key is refused
        if not isinstance(identity.get("public_keys"), list):
            raise AttributeError("'public_keys' is not a list")
        known = {note.verifier_from_pem(origin, k.encode()).key_id
                 for k in identity["public_keys"]}
    except (AttributeError, note.NoteError) as exc:
        raise ExportRejected(f"{AUDIT_IDENTITY}: a public key is not usable ({exc})") from None
    if verifier.key_id not in known:
        raise ExportRejected(f"the key that signed {SIGNATURE} is not one of the audit log's "
                             f"keys in {AUDIT_IDENTITY}", code="gpuplane.exchange.tampered")
    cp_note = _read(directory, CHECKPOINT)
    log, cp = _verify_log(directory, origin, identity, cp_note, manifest)
    listed = set(manifest["files"]) | {MANIFEST, SIGNATURE, PUBLIC_KEY}
    unlisted = sorted(p.name for p in directory.iterdir() if p.name not in listed)
    return VerifiedExport(directory, manifest, hashlib.sha256(text.encode()).hexdigest(),
                          origin, source, identity, log, cp_note, cp, unlisted)


def _check_files(directory: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ExportRejected(f"{MANIFEST}: 'files' is not a mapping")
    missing = [name for name in DATA_FILES if name not in files]
    unknown = sorted(set(files) - set(DATA_FILES))
    if missing or unknown:
        raise ExportRejected(f"{MANIFEST}: files missing from it: {missing or 'none'}; "
                             f"unknown to this gpuplane: {unknown or 'none'}")
    for name in DATA_FILES:
        info, path = files[name], directory / name
        if not isinstance(info, dict):
            raise ExportRejected(f"{MANIFEST}: the entry of {name} is not a mapping")
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise ExportRejected(f"{path} cannot be read ({exc.strerror})") from None
        if size != info.get("bytes") or digest.hexdigest() != info.get("sha256"):
            raise ExportRejected(f"{name}: its SHA-256 or size does not match {MANIFEST} (the "
                                 "file was changed after the export)",
                                 code="gpuplane.exchange.tampered")


def _verify_log(directory: Path, origin: str, identity: dict[str, Any], cp_note: str,
                manifest: dict[str, Any]) -> tuple[audit.LogFile, note.Checkpoint]:
    """The audit log must verify with the keys the (signed) identity file lists, which hold
    the manifest's key, and cover ``checkpoint.txt`` (the export's last checkpoint)."""
    verifiers = list({v.key_id: v for v in (note.verifier_from_pem(origin, k.encode())
                                            for k in identity["public_keys"])}.values())
    try:
        log = audit.read_log(directory / AUDIT_LOG)
    except audit.LogFormatError as exc:
        raise ExportRejected(f"{AUDIT_LOG}: {exc}") from None
    result = audit.verify_log(log, verifiers, trusted=cp_note)
    if not result.ok:
        raise ExportRejected(f"{AUDIT_LOG} does not verify against {CHECKPOINT}: "
                             + "; ".join(result.problems[:3]), code="gpuplane.exchange.tampered")
    cp = note.parse_checkpoint(note.unverified_text(cp_note))
    want = manifest.get("checkpoint") or {}
    if want.get("size") != cp.size or want.get("root_hash") != cp.root_hash.hex():
        raise ExportRejected(f"{CHECKPOINT} is not the checkpoint {MANIFEST} names",
                             code="gpuplane.exchange.tampered")
    return log, cp


def _load_yaml(path: Path, name: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ExportRejected(f"{name}: not valid YAML ({exc})") from None


def _items(directory: Path, concept: rows.Concept) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` of one file, ``where`` naming the file and item or line."""
    path = directory / concept.file
    if concept.yaml:
        data = _load_yaml(path, concept.file)
        if data is None:
            data = []
        if not isinstance(data, list):
            raise ExportRejected(f"{concept.file}: expected a list of records")
        for i, item in enumerate(data):
            yield f"{concept.file}, item {i + 1}", item
        return
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield f"{concept.file}, line {lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExportRejected(f"{concept.file}, line {lineno}: not JSON ({exc.msg})"
                                     ) from None


def import_state(store: Any, v: VerifiedExport, key: Ed25519PrivateKey, *, now: float,
                 progress: Progress | None = None) -> ImportReport:
    """Restore the export ``v`` (from ``verify_export``) into the fresh database of ``store``,
    continuing the audit log with ``key`` (the new installation's signing key). All or
    nothing: any problem raises and leaves the database as it was."""
    files = v.manifest["files"]
    total = sum(int(files[c.file].get("records") or 0) for c in rows.CONCEPTS) + len(
        v.log.entries)
    done = 0
    counts: dict[str, int] = {}
    with store.write() as tx:
        problems = rows.fresh_problems(tx)
        if problems:
            raise ExportRejected(
                "the target database is not a fresh installation (" + ", ".join(problems[:4])
                + "); import restores into a new, empty database only: run it before the "
                "first `gpuplane up`, or point --home/--db-url at a new one",
                code="gpuplane.exchange.not_empty")
        for concept in rows.CONCEPTS:
            counts[concept.file] = rows.restore(tx, concept, _items(v.directory, concept))
            done += counts[concept.file]
            if progress is not None:
                progress(concept.file, done, total)
        rows.restore_audit(tx, v.log.entries, v.identity, v.log.checkpoints)
        counts[AUDIT_LOG] = len(v.log.entries)
        if progress is not None:
            progress(AUDIT_LOG, total, total)
        rows.reset_sequences(tx)
        report = _continue_log(tx, v, key, now)
    report.records = counts
    return report


def _continue_log(tx: Any, v: VerifiedExport, key: Ed25519PrivateKey,
                  now: float) -> ImportReport:
    """Append ``system.import``, sign a checkpoint with the new key, prove it extends the
    exported checkpoint. Raises (rolling the import back) if the proof does not verify."""
    _, keys_before = tx.checkpoints.identity()
    audit.record(tx, at=now, actor="system", action="system.import", object_kind="installation",
                 object_id=v.origin, detail={
                     "exported_at": v.manifest.get("created_at"),
                     "exported_by_version": v.manifest.get("gpuplane_version"),
                     "manifest_sha256": v.manifest_sha256,
                     "checkpoint": {"size": v.checkpoint.size,
                                    "root_hash": v.checkpoint.root_hash.hex()},
                     "key": v.key_source})
    notary = checkpoints.notary_for(tx, key, None)
    cp = checkpoints.make_checkpoint(tx, notary, "import", now)
    if cp is None:  # cannot happen: the log just grew by one entry
        raise ExportRejected("no checkpoint could be signed after the import entry",
                             code="gpuplane.exchange.inconsistent")
    old, new_root = v.checkpoint, bytes.fromhex(cp.root_hash)
    proof = checkpoints.consistency(tx, old.size, cp.size)
    if old.size == 0:
        pass  # an empty exported log: every tree extends it, nothing to prove
    else:
        try:
            merkle.verify_consistency(old.size, cp.size, old.root_hash, new_root,
                                      [bytes.fromhex(h) for h in proof])
        except merkle.ProofError as exc:
            raise ExportRejected(f"the continued audit log is not consistent with {CHECKPOINT} "
                                 f"({exc})", code="gpuplane.exchange.inconsistent") from None
    pub = key.public_key()
    return ImportReport(v, {}, old.size, old.root_hash.hex(), cp.size, cp.root_hash, cp.note,
                        proof, note.verifier_key(notary.origin, pub),
                        checkpoints.public_pem(key) not in keys_before)
