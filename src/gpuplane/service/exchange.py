"""``gpuplane export DIR``: the whole state as documented files with a signed manifest.

The exit path (docs/exit.md): an operator can leave with everything gpuplane knows, in
formats other tools read (YAML for configuration, JSON lines for history, the audit log in
its open export format), and prove on the other side that nothing was changed on the way.
Export works on the store directly (no API server) and writes one consistent snapshot.

Before reading, export signs a checkpoint of the audit log (reason ``export``) if the log grew
since the last one, so ``checkpoint.txt`` covers the log as exported; the manifest (every
file's SHA-256 and size) is signed with the installation's audit key, the key that signs
checkpoints, under the log's origin. The import side is ``service/exchange_import.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gpuplane import __version__
from gpuplane.domain.errors import GpuplaneError
from gpuplane.governance import audit, checkpoints, note
from gpuplane.store import exchange as rows

FORMAT = "gpuplane-export"
FORMAT_VERSION = 1
MANIFEST, SIGNATURE, PUBLIC_KEY = "manifest.json", "manifest.sig", "audit-key.pem"
AUDIT_LOG, CHECKPOINT, AUDIT_IDENTITY = "audit.jsonl", "checkpoint.txt", "audit-log.yaml"
DATA_FILES = tuple(c.file for c in rows.CONCEPTS) + (AUDIT_IDENTITY, AUDIT_LOG, CHECKPOINT)

# (what is being written or read, records done so far, records in all)
Progress = Callable[[str, int, int], None]


class ExportError(GpuplaneError):
    """The export cannot be written (target folder, signing key)."""

    def __init__(self, detail: str, code: str = "gpuplane.exchange.export_failed") -> None:
        super().__init__(code=code, detail=detail)


@dataclass
class FileInfo:
    sha256: str
    bytes: int
    records: int


@dataclass
class ExportReport:
    directory: Path
    origin: str
    audit_size: int
    checkpoint_size: int
    new_checkpoint: bool  # whether export had to sign a checkpoint first
    files: dict[str, FileInfo] = field(default_factory=dict)


def canonical_manifest(manifest: dict[str, Any]) -> str:
    """The manifest's one text: sorted keys, two-space indent, ASCII, newline-terminated.
    ``manifest.json`` holds exactly this and ``manifest.sig`` signs exactly this."""
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PEM keys, messages) as literal blocks, so people can read them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(concept: str, data: Any) -> str:
    """Deterministic YAML (pure-Python dumper, so libyaml or not gives the same bytes)."""
    head = f"# gpuplane export format {FORMAT_VERSION}: {concept} (see docs/exit.md)\n"
    return head + yaml.dump(data, Dumper=_Dumper, sort_keys=True, allow_unicode=True,
                            default_flow_style=False, width=100)


def json_line(record: Any) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class _Writer:
    """Writes one file while hashing it; counts records."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.size = 0
        self.records = 0

    def write(self, text: str, records: int = 0) -> None:
        data = text.encode()
        self.fh.write(text)
        self.digest.update(data)
        self.size += len(data)
        self.records += records

    def close(self) -> FileInfo:
        self.fh.close()
        return FileInfo(self.digest.hexdigest(), self.size, self.records)


def _prepare(directory: Path) -> Path:
    """A hidden sibling folder to write into; renamed to ``directory`` when complete, so an
    interrupted export never leaves a half-written export that looks whole."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError(f"{directory} exists and is not an empty folder; export writes into "
                          "a new or empty folder", code="gpuplane.exchange.target_not_empty")
    directory.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))


def signing_key(store: Any, path: Path) -> Ed25519PrivateKey:
    """The installation's audit key for signing the export. Created only when the log has no
    key yet: a missing key file on a signed log means the wrong home, and a fresh key would
    silently join the log's keys."""
    if not path.exists():
        with store.read() as tx:
            origin, keys = tx.checkpoints.identity()
        if keys:
            raise ExportError(f"the audit signing key {path} does not exist, but the checkpoints "
                              f"of log {origin!r} were signed with {len(keys)} key(s); run "
                              "export with the installation's --home or "
                              "GPUPLANE_AUDIT_KEY_FILE", code="gpuplane.exchange.no_key")
    return checkpoints.load_or_create_key(path)


def export_state(store: Any, directory: Path, key: Ed25519PrivateKey, *, now: float,
                 configured_origin: str | None = None,
                 progress: Progress | None = None) -> ExportReport:
    """Write the whole state into ``directory`` (new or empty); see docs/exit.md."""
    work = _prepare(directory)
    try:
        report = _export(store, work, directory, key, now, configured_origin, progress)
        if directory.exists():
            directory.rmdir()
        os.replace(work, directory)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report


def _export(store: Any, work: Path, directory: Path, key: Ed25519PrivateKey, now: float,
            configured_origin: str | None, progress: Progress | None) -> ExportReport:
    with store.write() as tx:
        notary = checkpoints.notary_for(tx, key, configured_origin)
        signed = checkpoints.make_checkpoint(tx, notary, "export", now)
    files: dict[str, FileInfo] = {}
    with store.read() as tx:
        counts = {c.file: rows.count(tx, c) for c in rows.CONCEPTS}
        audit_size = tx.audit.size()
        total, done = sum(counts.values()) + audit_size, 0

        def tick(label: str, n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(label, done, total)

        for concept in rows.CONCEPTS:
            w = _Writer(work / concept.file)
            if concept.yaml:
                items = list(rows.records(tx, concept))
                w.write(dump_yaml(concept.file.removesuffix(".yaml"), items), len(items))
                tick(concept.file, len(items))
            else:
                for i, record in enumerate(rows.records(tx, concept), start=1):
                    w.write(json_line(record), 1)
                    if i % rows.BATCH == 0:
                        tick(concept.file, rows.BATCH)
                tick(concept.file, w.records % rows.BATCH)
            files[concept.file] = w.close()
        identity = rows.audit_identity(tx)
        latest = tx.checkpoints.latest()
        files[AUDIT_LOG] = _write_audit(work, tx, tick)
    w = _Writer(work / AUDIT_IDENTITY)
    w.write(dump_yaml("audit log identity and checkpoints", identity),
            len(identity["checkpoints"]))
    files[AUDIT_IDENTITY] = w.close()
    w = _Writer(work / CHECKPOINT)
    w.write(latest.note, 1)
    files[CHECKPOINT] = w.close()
    cp = note.parse_checkpoint(note.unverified_text(latest.note))
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "gpuplane_version": __version__,
        "created_at": iso(now), "origin": notary.origin,
        "checkpoint": {"size": cp.size, "root_hash": cp.root_hash.hex()},
        "files": {name: vars(info) for name, info in sorted(files.items())},
    }
    text = canonical_manifest(manifest)
    (work / MANIFEST).write_text(text, encoding="utf-8")
    (work / SIGNATURE).write_text(note.sign_note(text, [notary.signer]), encoding="utf-8")
    (work / PUBLIC_KEY).write_text(checkpoints.public_pem(key), encoding="utf-8")
    return ExportReport(directory, notary.origin, audit_size, cp.size, signed is not None, files)


def _write_audit(work: Path, tx: Any, tick: Callable[[str, int], None]) -> FileInfo:
    w = _Writer(work / AUDIT_LOG)
    cps = tx.checkpoints.list()
    for line in audit.export_jsonl(_ticking(rows.audit_entries(tx), tick), cps):
        w.write(line, 0 if line.startswith('{"checkpoint"') else 1)
    return w.close()


def _ticking(entries: Iterable[Any], tick: Callable[[str, int], None]) -> Iterator[Any]:
    n = 0
    for e in entries:
        yield e
        n += 1
        if n % rows.BATCH == 0:
            tick(AUDIT_LOG, rows.BATCH)
    tick(AUDIT_LOG, n % rows.BATCH)
