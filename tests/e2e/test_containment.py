"""No tenant can stall the plane (DESIGN invariant 8), end to end through `gpuplane up`.

Tenant A plants what used to stall every tick: a workload whose command and env hold a NUL
byte (written to the store as an older version accepted it; today the API refuses it at the
edge) and a task on a host then shrunk under it (the API refuses that with 409; the store is
edited behind its back, as a direct DB edit or an old re-registration would). Tenant B's
tasks, real processes on the local host and simulated GPU tasks, still start, succeed and
are cancelled normally, while A's bad task fails alone and the shrunk host is quarantined.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from gpuplane.domain.workloads import WorkloadSpec
from gpuplane.service.authz import Principal
from gpuplane.service.workloads import WorkloadService
from gpuplane.store import Store

from .conftest import wait_phase

pytestmark = pytest.mark.slow

FLEET = Path(__file__).resolve().parents[2] / "examples" / "fleet-demo.yaml"
LOCAL = {"gpuplane.io/driver": "local"}
TERMINAL = {"Succeeded", "Failed", "Cancelled", "Lost"}


def submit(c, **spec) -> str:
    r = c.post("/v1/workloads", json=spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def host_doc(name: str) -> dict:
    doc = next(d for d in yaml.safe_load_all(FLEET.read_text()) if d and d.get("name") == name)
    return {k: v for k, v in doc.items() if k not in ("kind", "apiVersion")}


def test_a_nul_spec_and_a_shrunk_host_leave_other_tenants_running(make_server, db_url):
    srv = make_server(db_url).start()
    store = Store(srv.db_url or f"sqlite:///{(srv.home / 'gpuplane.db').resolve()}")
    try:
        with srv.client() as c:
            for team in ("a", "b"):
                assert c.post("/v1/organisations", json={"name": f"org-{team}"}).status_code == 201
                assert c.post("/v1/projects", json={"name": f"team-{team}",
                                                    "organisation": f"org-{team}"}
                              ).status_code == 201
            # -- tenant A: a task on a simulated host, then the host shrunk under it
            held = submit(c, name="held", project="team-a",
                          tasks=[{"resources": {"gpus": 1, "cpu": 8, "memory": "32Gi"},
                                  "command": ["sleep", "600"]}])
            wl = wait_phase(c, held, {"Running"})
            assert wl["status"]["phase"] == "Running", wl
            host = wl["status"]["tasks"][0]["placement"]["host"]
            body = {**host_doc(host), "cpu": 2}
            refused = c.put(f"/v1/hosts/{host}", json=body)
            assert refused.status_code == 409, refused.text
            problem = refused.json()
            assert problem["code"] == "gpuplane.host.shrink_below_usage"
            assert "team-a/held task 0" in problem["detail"]
            with store.write() as tx:   # behind the API's back
                h = tx.hosts.get(host)
                tx.hosts.replace(host, h.generation, 2000, 4096, list(h.gpus), rack=h.rack,
                                 labels=dict(h.labels), taints=list(h.taints), tee=h.tee,
                                 simulated=h.simulated, declared=h.declared)
            # -- tenant A: a NUL byte in an argument and in an env value
            spec = WorkloadSpec(name="nul", project="team-a",
                                tasks=[{"command": ["true"], "selector": LOCAL}])
            group = spec.tasks[0].model_copy(update={"command": ["echo", "a\x00b"],
                                                     "env": {"X": "c\x00d"}})
            nul = WorkloadService(store).submit_workload(
                Principal.system(), spec.model_copy(update={"tasks": [group]})).id
            # -- tenant B: real processes and simulated GPU tasks, started and stopped
            started = time.monotonic()
            ok = submit(c, name="ok", project="team-b",
                        tasks=[{"command": [sys.executable, "-c", "print('b ran')"],
                                "selector": LOCAL}])
            sleeper = submit(c, name="sleeper", project="team-b",
                             tasks=[{"command": ["sleep", "60"], "selector": LOCAL}])
            gpu = submit(c, name="gpu-job", project="team-b",
                         labels={"gpuplane.io/sim-duration-s": "0.5"},
                         tasks=[{"resources": {"gpus": 2}, "command": ["train"]}])
            svc = submit(c, name="gpu-svc", project="team-b", kind="service",
                         tasks=[{"resources": {"gpus": 1}, "command": ["serve"]}])

            failed = wait_phase(c, nul, TERMINAL)
            assert failed["status"]["phase"] == "Failed", failed
            task = failed["status"]["tasks"][0]
            assert task["reason"] == "StartFailed" and "embedded null byte" in task["message"]
            for uid in (ok, gpu):
                done = wait_phase(c, uid, TERMINAL)
                assert done["status"]["phase"] == "Succeeded", done
                assert done["status"]["tasks"][0]["placement"]["host"] != host
            for uid in (sleeper, svc):
                assert wait_phase(c, uid, {"Running"})["status"]["phase"] == "Running"
                assert c.post(f"/v1/workloads/{uid}/cancel").status_code == 200
                assert wait_phase(c, uid, TERMINAL)["status"]["phase"] == "Cancelled"
            b_seconds = time.monotonic() - started
            # A's task on the quarantined host still runs, and stops normally too
            assert c.get(f"/v1/workloads/{held}").json()["status"]["phase"] == "Running"
            assert c.post(f"/v1/workloads/{held}/cancel").status_code == 200
            assert wait_phase(c, held, TERMINAL)["status"]["phase"] == "Cancelled"

            listed = c.get("/v1/workloads", params={"project": "team-a", "limit": 100})
            assert listed.status_code == 200 and nul in listed.text, listed.text
            metrics = c.get("/metrics").text
        launch = re.search(r'^gpuplane_loop_task_failures_total\{stage="launch"\} (\S+)$',
                           metrics, re.M)
        snapshot = re.search(r'^gpuplane_loop_task_failures_total\{stage="snapshot"\} (\S+)$',
                             metrics, re.M)
        assert launch and float(launch.group(1)) >= 1, metrics
        assert snapshot and float(snapshot.group(1)) >= 1, metrics
        log = srv.log.read_text()
        assert re.search(r"WARNING gpuplane\.control: launch failed for task 0 of workload "
                         + nul, log), log
        assert re.search(rf"WARNING gpuplane\.control: snapshot failed for host {host} "
                         r"\(quarantined", log), log
        assert "Traceback" not in log, log
        with store.read() as tx:
            reasons = [(e.reason, e.message) for e in tx.events.list(None, None, None, 5000).items]
        assert any(r == "HostQuarantined" and host in m for r, m in reasons)
        print(f"\ntenant B: 4 workloads started and succeeded or were cancelled in "
              f"{b_seconds:.1f} s next to a NUL spec and a shrunk host")
    finally:
        store.dispose()
