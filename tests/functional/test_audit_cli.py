"""``gpuplane audit verify FILE`` on an exported chain: intact, then tampered."""

from __future__ import annotations

import json
import subprocess
import sys

from gpuplane.domain.workloads import TaskGroup, WorkloadSpec


def _verify(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpuplane", "audit", "verify", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_exported_chain_verifies_offline_and_tampering_is_caught(svc, admin, tmp_path):
    for i in range(3):
        svc.workloads.submit_workload(admin, WorkloadSpec(
            name=f"w{i}", tasks=[TaskGroup(command=["true"])]))
    svc.workloads.cancel_workload(admin, "w1")
    export = tmp_path / "audit.jsonl"
    export.write_text("".join(svc.audit.export(admin)), encoding="utf-8")
    ok = _verify(export)
    assert ok.returncode == 0, ok.stderr
    assert "intact" in ok.stdout

    lines = export.read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[2])
    entry["detail"]["name"] = "someone-else"
    lines[2] = json.dumps(entry)
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = _verify(export)
    assert bad.returncode == 1
    assert "seq 3" in bad.stderr and "Traceback" not in bad.stderr

    missing = _verify(tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
