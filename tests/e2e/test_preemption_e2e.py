"""Preemption through `gpuplane up` and the CLI: a borrower's real task is signalled when the
owner's job arrives, and `describe workload` shows the beneficiary, outcome and lost GPU-time."""

from __future__ import annotations

import json
import sys
import time

import pytest

from .conftest import Server, kill_leftover_tasks

pytestmark = pytest.mark.slow

FLEET = """
kind: Organisation
name: lab
---
kind: Project
name: owner
organisation: lab
cohort: lab
---
kind: Project
name: borrower
organisation: lab
cohort: lab
---
kind: Quota
project: owner
resource: gpu
guaranteed: 2
---
kind: Quota
project: borrower
resource: gpu
guaranteed: 0
"""


def job(project: str, name: str, gpus: int, priority_class: str) -> str:
    return f"""
kind: Job
name: {name}
project: {project}
priority_class: {priority_class}
tasks:
  - name: main
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)"]
    resources: {{cpu: 0.5, memory: 256Mi, gpus: {gpus}}}
    selector: {{gpuplane.io/driver: local}}
"""


def test_describe_shows_who_preempted_a_task_how_it_ended_and_the_work_lost(make_server,
                                                                            tmp_path):
    srv = make_server(args=("--no-demo", "--local-gpus", "2xL40S-48GB"))
    srv.env = lambda: {**Server.env(srv), "GPUPLANE_PREEMPT_GRACE_S": "1"}  # type: ignore
    srv.start()
    try:
        (tmp_path / "fleet.yaml").write_text(FLEET)
        (tmp_path / "b.yaml").write_text(job("borrower", "scavenger", 2, "preemptible"))
        (tmp_path / "o.yaml").write_text(job("owner", "train", 2, "standard"))
        for f in ("fleet.yaml", "b.yaml"):
            res = srv.cli("apply", "-f", str(tmp_path / f))
            assert res.returncode == 0, res.stderr

        def phase(name: str, project: str) -> dict:
            got = srv.cli("get", "workload", name, "-p", project, "-o", "json")
            assert got.returncode == 0, got.stderr
            return json.loads(got.stdout)

        def wait(name: str, project: str, want: str) -> dict:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                wl = phase(name, project)
                if wl["status"]["phase"] == want:
                    return wl
                time.sleep(0.3)
            raise AssertionError(f"{name} is {wl['status']['phase']}, not {want}")

        wait("scavenger", "borrower", "Running")
        time.sleep(1.0)
        assert srv.cli("apply", "-f", str(tmp_path / "o.yaml")).returncode == 0
        wait("train", "owner", "Running")
        victim = wait("scavenger", "borrower", "Pending")
        p = victim["status"]["tasks"][0]["preemption"]
        assert p["beneficiary_name"] == "owner/train" and p["outcome"] == "acknowledged", p
        assert p["grace_s"] == 1 and p["lost_gpu_s"] > 1.0, p   # 2 GPUs for over a second

        described = srv.cli("describe", "workload", "scavenger", "-p", "borrower")
        assert described.returncode == 0, described.stderr
        out = described.stdout
        assert "Last preemption" in out and "owner/train" in out and "acknowledged" in out, out
        assert out.count("Preempting") == 1 and "Preempted" in out, out
        assert "lost" in out and "GPU-s since its last start" in out
    finally:
        srv.stop()
        kill_leftover_tasks(srv.home)
