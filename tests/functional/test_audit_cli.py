"""``gpuplane audit verify FILE --checkpoint CP --key PUB`` on an exported log, offline: intact,
then tampered (an edited entry, a truncated tail, a rewrite with recomputed hashes, a forged
checkpoint), and the proofs the service hands out."""

from __future__ import annotations

import json
import subprocess
import sys

from gpuplane.domain.workloads import TaskGroup, WorkloadSpec
from gpuplane.governance import audit, checkpoints, merkle, note


def _verify(path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpuplane", "audit", "verify", str(path), *args],
                          capture_output=True, text=True, timeout=60)


def _sign(store, key, now=1.0):
    with store.write() as tx:
        return checkpoints.make_checkpoint(tx, checkpoints.notary_for(tx, key, None), "test", now)


def test_exported_log_verifies_offline_and_tampering_is_caught(svc, admin, store, tmp_path):
    key = checkpoints.load_or_create_key(tmp_path / "keys" / "audit-key.pem")
    assert (tmp_path / "keys" / "audit-key.pem").stat().st_mode & 0o777 == 0o600
    pub = tmp_path / "audit.pub"
    pub.write_text(checkpoints.public_pem(key))
    for i in range(3):
        svc.workloads.submit_workload(admin, WorkloadSpec(
            name=f"w{i}", tasks=[TaskGroup(command=["true"])]))
    first = _sign(store, key)
    svc.workloads.cancel_workload(admin, "w1")
    latest = _sign(store, key, 2.0)
    cp = tmp_path / "cp.txt"
    cp.write_text(latest.note)
    export = tmp_path / "audit.jsonl"
    export.write_text("".join(svc.audit.export(admin)), encoding="utf-8")
    ok = _verify(export, "--checkpoint", cp, "--key", pub)
    assert ok.returncode == 0, ok.stderr
    assert "verifies" in ok.stdout and "2 signed checkpoint(s)" in ok.stdout
    assert svc.audit.verify(admin) == []

    original = export.read_text(encoding="utf-8").splitlines()
    entries = [i for i, line in enumerate(original) if "checkpoint" not in json.loads(line)]
    # an edited entry
    lines = list(original)
    entry = json.loads(lines[entries[2]])
    entry["detail"]["name"] = "someone-else"
    lines[entries[2]] = json.dumps(entry)
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = _verify(export, "--checkpoint", cp, "--key", pub)
    assert bad.returncode == 1 and "leaf 3" in bad.stderr and "Traceback" not in bad.stderr
    # a truncated tail (embedded checkpoints dropped with it)
    export.write_text("\n".join(original[:entries[-1]]) + "\n", encoding="utf-8")
    bad = _verify(export, "--checkpoint", cp, "--key", pub)
    assert bad.returncode == 1 and "truncated" in bad.stderr
    # a rewrite with recomputed hashes
    log = [json.loads(original[i]) for i in entries]
    log[1]["actor"] = "mallory"
    prev = "0" * 64
    for e in log:
        e["prev_hash"] = prev
        e["hash"] = prev = audit.entry_hash(e)
    export.write_text("".join(json.dumps(e) + "\n" for e in log), encoding="utf-8")
    assert audit.verify_entries(log) == []  # the chain alone cannot see it
    bad = _verify(export, "--checkpoint", cp, "--key", pub)
    assert bad.returncode == 1 and "trusted checkpoint: root hash does not match" in bad.stderr
    # a checkpoint signed by another key
    forged = tmp_path / "forged.txt"
    other = checkpoints.Notary(checkpoints.load_or_create_key(tmp_path / "k2.pem"),
                               first.note.splitlines()[0])
    forged.write_text(other.sign(latest.size, bytes.fromhex(latest.root_hash)))
    export.write_text("\n".join(original) + "\n", encoding="utf-8")
    bad = _verify(export, "--checkpoint", forged, "--key", pub)
    assert bad.returncode == 1 and "signature does not verify" in bad.stderr
    # unreadable inputs
    missing = _verify(tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_inclusion_and_consistency_proofs_verify(svc, admin, store, tmp_path):
    key = checkpoints.load_or_create_key(tmp_path / "audit-key.pem")
    svc.workloads.submit_workload(admin, WorkloadSpec(name="a", tasks=[TaskGroup(command=["x"])]))
    old = _sign(store, key)
    for i in range(5):
        svc.workloads.submit_workload(admin, WorkloadSpec(name=f"b{i}",
                                                          tasks=[TaskGroup(command=["x"])]))
    new = _sign(store, key, 2.0)
    verifier = note.make_verifier(svc.audit.identity(admin)[0], key.public_key())
    body = note.parse_checkpoint(note.open_note(new.note, [verifier])[0])
    for seq in (1, new.size // 2, new.size):
        leaf, size, proof = svc.audit.inclusion(admin, seq, None)
        assert size == new.size
        merkle.verify_inclusion(bytes.fromhex(leaf), seq - 1, size,
                                [bytes.fromhex(h) for h in proof], body.root_hash)
    proof = svc.audit.consistency(admin, old.size, new.size)
    merkle.verify_consistency(old.size, new.size, bytes.fromhex(old.root_hash), body.root_hash,
                              [bytes.fromhex(h) for h in proof])
