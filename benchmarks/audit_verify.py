"""How long does offline verification of a large audit log take? (issue "Proof, not labels":
100,000 entries in <= 10 s on this 2-core machine.)

Scenario (seeded): 100,000 audit entries shaped like the plane's own (admissions with a
placement detail, submissions, quota changes), with a signed checkpoint embedded every 10,000
entries, written as the export format (``gpuplane audit export``) to a temporary file, plus the
last checkpoint saved separately as an auditor keeps it. Timed: ``gpuplane audit verify FILE
--checkpoint CP --key PUB``'s work (read the file, check every entry's leaf hash and link,
verify each checkpoint's Ed25519 signature and recompute its Merkle root).

Baseline, in the same process on the same file: the hash chain alone (``verify_entries``:
each entry's hash and link, no tree, no signatures) -- what the log checked before it had
signed checkpoints, and which cannot see a truncated tail or a consistent rewrite. The ratio
is the full verification's time over the chain-only time (the price of the Merkle tree and the
signatures).

Run: ``.venv/bin/python benchmarks/audit_verify.py [--entries 100000] [--out
benchmarks/results/audit_verify.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import track

from gpuplane.governance import audit, merkle
from gpuplane.governance.checkpoints import Notary
from gpuplane.store.records import Checkpoint
from gpuplane.store.repos_audit import GENESIS_HASH


def build(path: Path, n: int, every: int, notary: Notary, seed: int) -> str:
    rng = random.Random(seed)
    entries, prev, leaves, cps = [], GENESIS_HASH, [], []
    for seq in track(range(1, n + 1), description="building the log"):
        kind = rng.random()
        detail = ({"placements": {"0": {"host": f"h{rng.randrange(500)}", "gpu_indices": [0, 1],
                                        "gpu_milli": 1000, "site": "fra", "jurisdiction": "EU/DE",
                                        "attested": {}}}} if kind < 0.6 else
                  {"name": f"job-{seq}", "kind": "job", "tasks": 1} if kind < 0.9 else
                  {"resource": "gpu", "guaranteed": rng.randrange(64)})
        e = audit._entry(seq, prev, "ab" * 32, dict(  # noqa: SLF001
            at=1.7e9 + seq, actor=rng.choice(["scheduler", "alice", "bob"]),
            action="workload.admit" if kind < 0.6 else "workload.submit" if kind < 0.9
            else "quota.set", object_kind="workload", object_id=f"wl-{seq:012x}",
            project_id=rng.randrange(1, 50), org_id=1, detail=detail))
        entries.append(e)
        leaves.append(bytes.fromhex(e.hash))
        prev = e.hash
        if seq % every == 0 or seq == n:
            root = merkle.root(leaves)
            cps.append(Checkpoint(len(cps) + 1, seq, root.hex(), notary.sign(seq, root),
                                  "interval", None, 0.0))
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(audit.export_jsonl(entries, cps))
    return cps[-1].note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=10_000, help="entries between checkpoints")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/audit_verify.json"))
    args = ap.parse_args()
    notary = Notary(Ed25519PrivateKey.generate(), "gpuplane.bench/log")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        trusted = build(path, args.entries, args.every, notary, args.seed)
        size_mb = path.stat().st_size / 1e6
        t0 = time.perf_counter()
        log = audit.read_log(path)
        result = audit.verify_log(log, [notary.verifier], trusted)
        full_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        chain_problems = audit.verify_entries(audit.read_log(path).entries)
        chain_s = time.perf_counter() - t0
    assert result.ok and not chain_problems, (result.problems, chain_problems)
    out = {"entries": args.entries, "checkpoints": len(result.checked) + 1, "file_mb": size_mb,
           "verify_s": round(full_s, 3), "chain_only_s": round(chain_s, 3),
           "ratio_full_over_chain": round(full_s / chain_s, 3), "target_s": 10.0,
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    print(f"offline verification of {args.entries:,} entries ({size_mb:.1f} MB, "
          f"{out['checkpoints']} checkpoint checks): {full_s:.2f} s; chain only {chain_s:.2f} s "
          f"(x{out['ratio_full_over_chain']}); target <= 10 s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
