"""``/metrics`` against a live plane: hosts with whole, shared and MIG GPUs, two tenants in a
cohort (one borrowing), a queue, the control loop ticking. The scrape is parsed with
prometheus-client's own parser; the values must add up; every metric the Grafana dashboard
and the alert rules refer to must be exported; the series count must not grow with workloads.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from functional.dbs import database_params, make_db_url
from prometheus_client.parser import text_string_to_metric_families

from gpuplane.api import create_app
from gpuplane.api.metrics_pool import PLACEMENT_MEMORY
from gpuplane.control import loop as loop_module
from gpuplane.control.loop import ControlLoop
from gpuplane.domain.tenancy import gpu_units
from gpuplane.domain.workloads import WorkloadSpec
from gpuplane.drivers.sim import SimDriver
from gpuplane.service.authz import Principal
from gpuplane.service.specs import (HostSpec, OrganisationSpec, ProjectSpec, QuotaSpec,
                                    SiteSpec)
from gpuplane.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "gpuplane-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "gpuplane-alerts.yml"
SITE = "eu-de-1"
SYSTEM = Principal.system()


class FakeNvml(types.ModuleType):
    """Two GPUs, as ``pynvml`` reports them (the test machine may have no NVIDIA driver)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__("pynvml")
        self.fail = fail

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:  # noqa: N802
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int):  # noqa: N802, ANN201
        return types.SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30, free=0)

    def nvmlDeviceGetUtilizationRates(self, h: int):  # noqa: N802, ANN201
        return types.SimpleNamespace(gpu=40 * h, memory=0)


class Pool:
    def __init__(self, url: str, tmp: Path) -> None:
        settings = Settings(home=tmp / "home", db_url=url)
        self.drivers = {"sim": SimDriver(tmp / "sim")}
        self.app = create_app(settings)
        self.store = self.app.state.store
        self.loop = ControlLoop(self.store, self.drivers, holder="metrics-test", lease_ttl_s=30)
        # the app of this process shows its loop's stats, as `gpuplane up` wires them
        self.app = create_app(settings, store=self.store, migrate=False,
                              loop_stats=self.loop.stats)
        self.s = self.app.state.services
        token = self.s.bootstrap_admin()  # the default priority classes among what it sets up
        self.client = TestClient(self.app, raise_server_exceptions=False,
                                 headers={"Authorization": f"Bearer {token}"})

    def submit(self, project: str, name: str, preemptible: bool | None = None,
               **resources) -> str:  # noqa: ANN003
        spec = WorkloadSpec(name=name, project=project, preemptible=preemptible,
                            tasks=[{"command": ["serve"], "resources": resources}])
        return self.s.workloads.submit_workload(SYSTEM, spec).id

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.loop.tick()

    def scrape(self) -> dict[str, list]:
        """{sample name: [(labels, value)]} of one scrape."""
        resp = self.client.get("/metrics")
        assert resp.status_code == 200, resp.text
        out: dict[str, list] = {}
        for fam in text_string_to_metric_families(resp.text):
            for s in fam.samples:
                out.setdefault(s.name, []).append((dict(s.labels), s.value))
            out.setdefault(fam.name, [])  # family names too (counters without _total)
        return out


def value(scrape: dict, name: str, **labels: str) -> float:
    hits = [v for lv, v in scrape.get(name, []) if all(lv.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, scrape.get(name))
    return hits[0]


@pytest.fixture(params=database_params())
def pool(request, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    for url in make_db_url(request.param, tmp_path):
        p = Pool(url, tmp_path)
        s = p.s
        s.inventory.create_site(SYSTEM, SiteSpec(name=SITE, jurisdiction="EU/DE"))
        s.inventory.register_host(SYSTEM, HostSpec(
            name="whole-1", site=SITE, cpu=64, memory="512Gi", driver="sim",
            gpus=[{"index": i, "model": "H100-80GB", "memory_mib": 81920} for i in range(4)]))
        s.inventory.register_host(SYSTEM, HostSpec(
            name="shared-1", site=SITE, cpu=64, memory="512Gi", driver="sim",
            gpus=[{"index": i, "model": "A100-80GB", "memory_mib": 81920, "mode": "shared"}
                  for i in range(2)]))
        s.inventory.register_host(SYSTEM, HostSpec(
            name="mig-1", site=SITE, cpu=64, memory="512Gi", driver="sim",
            gpus=[{"index": 0, "model": "H100-80GB", "memory_mib": 81920, "mode": "mig"}]))
        for org, projects in (("org-a", ("proj-a", "proj-b")), ("org-c", ("proj-c",))):
            s.tenancy.create_organisation(SYSTEM, OrganisationSpec(name=org))
            for name in projects:
                s.tenancy.create_project(SYSTEM, ProjectSpec(
                    name=name, organisation=org, cohort="pool" if org == "org-a" else None))
        s.policy.set_quota(SYSTEM, QuotaSpec(project="proj-a", resource="gpu", guaranteed=2))
        s.policy.set_quota(SYSTEM, QuotaSpec(project="proj-b", resource="gpu", guaranteed=4))
        yield p
        p.client.close()
        p.loop.release()
        p.store.dispose()


def _run(pool: Pool, ids: list[str], ticks: int = 40) -> None:
    for _ in range(ticks):
        pool.tick()
        phases = {pool.s.workloads.get_workload(SYSTEM, i).phase.value for i in ids}
        if phases == {"Running"}:
            return
        time.sleep(0.02)
    raise AssertionError("not all running: " + "; ".join(
        f"{w.name} {w.phase.value} {w.pending_reason}"
        for w in (pool.s.workloads.get_workload(SYSTEM, i) for i in ids)))


def test_pool_tenant_queue_and_loop_series_add_up(pool):
    pool.scrape()  # the first scrape starts the event counters
    running = [pool.submit("proj-a", "a-big", preemptible=True, gpus=3, gpu_models=["H100-80GB"]),
               pool.submit("proj-b", "b-share", gpus=1, gpu_milli=500, gpu_models=["A100-80GB"]),
               pool.submit("proj-b", "b-mig", gpus=1, mig_profile="3g.40gb")]
    _run(pool, running)
    waiting = pool.submit("proj-c", "c-wait", gpus=1)  # proj-c has no quota and no cohort
    pool.tick(2)
    with pool.store.write() as tx:
        now = time.time()
        tx.attestation.add_result("whole-1", "tdx", True, "affirming", (), {}, {}, now, now + 600)
    m = pool.scrape()

    # capacity = allocated + free for every (site, model, mode)
    caps = {tuple(sorted(lv.items())): v for lv, v in m["gpuplane_gpu_capacity"]}
    assert {dict(k)["mode"] for k in caps} == {"whole", "shared", "mig"}
    for lv, cap in m["gpuplane_gpu_capacity"]:
        alloc = value(m, "gpuplane_gpu_allocated", **lv)
        free = value(m, "gpuplane_gpu_free", **lv)
        assert cap == pytest.approx(alloc + free), lv
    assert value(m, "gpuplane_gpu_capacity", model="H100-80GB", mode="whole") == 4
    assert value(m, "gpuplane_gpu_allocated", model="H100-80GB", mode="whole") == 3
    assert value(m, "gpuplane_gpu_allocated", model="A100-80GB", mode="shared") == 0.5
    assert value(m, "gpuplane_gpu_free_partial", model="A100-80GB", mode="shared") == 0.5
    assert value(m, "gpuplane_gpu_allocated", model="H100-80GB", mode="mig") == \
        pytest.approx(3 * 1000 // 7 / 1000)
    assert value(m, "gpuplane_mig_instances", profile="3g.40gb", state="used") == 1
    assert sum(v for _, v in m["gpuplane_gpu_allocated"]) == \
        pytest.approx(value(m, "gpuplane_gpus_allocated"))
    frag = {lv["model"]: v for lv, v in m["gpuplane_gpu_fragmented"]}
    assert set(frag) == {"H100-80GB", "A100-80GB"} and all(v >= 0 for v in frag.values())

    # a tenant's used equals what its tasks hold, as quotas count it (a MIG slice of k/7 GPU
    # rounded up); proj-a borrows one GPU of proj-b's guarantee
    held: dict[str, float] = {}
    for w in pool.s.workloads.list_workloads(SYSTEM, None, 1000, phase="Running").items:
        held[w.project] = held.get(w.project, 0) + sum(
            gpu_units(t.gpus, t.gpu_milli, t.mig_profile)
            for t in w.tasks if t.phase.holds_resources) / 1000
    for project in ("proj-a", "proj-b"):
        assert value(m, "gpuplane_tenant_used_gpus", project=project) == \
            pytest.approx(held[project])
    assert value(m, "gpuplane_tenant_guaranteed_gpus", organisation="org-a", project="proj-a",
                 flavor="gpu") == 2
    assert value(m, "gpuplane_tenant_borrowed_gpus", project="proj-a") == 1
    assert value(m, "gpuplane_tenant_borrowed_gpus", project="proj-b") == 0
    assert value(m, "gpuplane_tenant_lent_gpus", project="proj-b") == \
        pytest.approx(4 - held["proj-b"])

    # the queue, the counters and the loop's timings
    reason = pool.s.workloads.get_workload(SYSTEM, waiting).pending_reason
    assert reason is not None
    assert value(m, "gpuplane_queue_workloads", reason=reason.code) == 1
    assert value(m, "gpuplane_queue_oldest_seconds", reason=reason.code) >= 0
    assert value(m, "gpuplane_admissions_total") == 3
    assert value(m, "gpuplane_preemptions_total") == 0
    assert value(m, "gpuplane_scheduling_admission_wait_seconds_count") == 3
    assert value(m, "gpuplane_scheduling_cycle_seconds_count") >= 1
    assert value(m, "gpuplane_loop_tick_seconds_count") >= \
        value(m, "gpuplane_scheduling_cycle_seconds_count")
    assert value(m, "gpuplane_loop_step_seconds_count", step="launch") >= 1
    assert time.time() - value(m, "gpuplane_loop_last_tick_timestamp_seconds") < 60
    assert 500 < value(m, "gpuplane_attestation_expiry_seconds", host="whole-1", kind="tdx") <= 600
    assert value(m, "gpuplane_nvml_gpu_utilization_ratio", gpu="1") == pytest.approx(0.4)
    assert value(m, "gpuplane_nvml_gpu_memory_used_bytes", gpu="0") == 2**30

    # every metric the dashboard and the alert rules use is exported
    for expr in _dashboard_exprs() + _alert_exprs():
        for name in set(re.findall(r"\bgpuplane_[a-z0-9_]+", expr)):
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)  # family name
            assert name in m or base in m, f"{name} (in {expr!r}) is not exported"


def test_series_do_not_grow_with_workloads(pool):
    def series(scrape: dict) -> set:
        return {(n, tuple(sorted(lv.items()))) for n, rows in scrape.items() for lv, _ in rows
                if not n.startswith("gpuplane_http_")}

    first = [pool.submit("proj-b", f"small-{i}", gpus=1, gpu_milli=10,
                         gpu_models=["A100-80GB"]) for i in range(5)]
    _run(pool, first)
    pool.scrape()
    before = series(pool.scrape())
    more = [pool.submit("proj-b", f"small-{i}", gpus=1, gpu_milli=10, gpu_models=["A100-80GB"])
            for i in range(5, 50)]
    _run(pool, more)
    after_scrape = pool.scrape()
    after = series(after_scrape)
    assert len(after) == len(before), sorted(after ^ before)
    ids = set(first + more)
    for _, labels in after:
        assert not any(v in ids or v.startswith("small-") for _, v in labels), labels
    assert value(after_scrape, "gpuplane_tasks_active") == 50


def test_no_nvml_means_no_nvml_series(pool, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(fail=True))
    from gpuplane.api.metrics import Metrics
    from prometheus_client import generate_latest

    text = generate_latest(Metrics(pool.store).registry).decode()
    assert "gpuplane_gpu_capacity{" in text and "gpuplane_nvml" not in text


def test_a_scrape_survives_a_database_that_does_not_answer(pool):
    class Down:
        def read(self):  # noqa: ANN202
            raise RuntimeError("database down")

    from gpuplane.api.metrics import Metrics
    from prometheus_client import generate_latest

    text = generate_latest(Metrics(Down(), pool.loop.stats).registry).decode()
    assert "gpuplane_gpu_capacity" not in text and "gpuplane_loop_tick_seconds" in text


def test_the_metrics_memory_name_is_the_loops():
    assert PLACEMENT_MEMORY == loop_module.PLACEMENT_MEMORY


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and dash["schemaVersion"] >= 30
    exprs = []
    for p in dash["panels"]:
        assert {"id", "type", "title", "gridPos"} <= set(p), p
        exprs.extend(t["expr"] for t in p.get("targets", ()))
    assert len(exprs) >= 15
    return exprs


def _alert_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert all(set(g) >= {"name", "rules"} for g in doc["groups"])
    for r in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(r), r
        assert r["labels"]["severity"] in ("warning", "critical")
    names = {r["alert"] for r in rules}
    assert {"GpuplanePoolNearlyFull", "GpuplaneQueueAgeHigh", "GpuplaneControlLoopNotTicking",
            "GpuplaneLeaderAbsent", "GpuplaneAttestationExpiring",
            "GpuplaneApiErrorRatioHigh"} <= names
    return [r["expr"] for r in rules]


def test_alert_rules_pass_promtool():
    _alert_exprs()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); "
                    "the YAML structure is still checked above")
    out = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
