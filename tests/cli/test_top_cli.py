"""``gpuplane top``, ``describe project`` and ``get events`` against a live plane (the control
loop ticking on the sim driver; the CLI's client talks to the app in-process): a pool of whole,
shared and MIG GPUs; org-a's proj-a and proj-b share the cohort "pool" and proj-a borrows one
GPU of proj-b's idle guarantee; proj-c has no quota and waits. A member of proj-a sees only
proj-a's tenancy and queue."""

from __future__ import annotations

import json
import time
import types

import pytest
from cli.inprocess import in_process_cli
from fastapi.testclient import TestClient

from gpuplane.api import create_app
from gpuplane.cli import resources, top
from gpuplane.control.loop import ControlLoop
from gpuplane.domain.workloads import WorkloadSpec
from gpuplane.drivers.sim import SimDriver
from gpuplane.service.authz import Principal
from gpuplane.service.specs import (HostSpec, OrganisationSpec, ProjectSpec, QuotaSpec,
                                    RoleBindingSpec, SiteSpec, TokenSpec, UserSpec)
from gpuplane.settings import Settings

SYSTEM = Principal.system()


class Plane:
    def __init__(self, tmp) -> None:  # noqa: ANN001
        settings = Settings(home=tmp / "home", db_url=f"sqlite:///{tmp / 'gpuplane.db'}")
        self.app = create_app(settings)
        self.store = self.app.state.store
        self.s = self.app.state.services
        self.tokens = {"admin": self.s.bootstrap_admin()}
        self.loop = ControlLoop(self.store, {"sim": SimDriver(tmp / "sim")}, holder="cli-test",
                                lease_ttl_s=30)
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def submit(self, project: str, name: str, preemptible: bool | None = None,
               **resources) -> str:  # noqa: ANN003
        spec = WorkloadSpec(name=name, project=project, preemptible=preemptible,
                            tasks=[{"command": ["serve"], "resources": resources}])
        return self.s.workloads.submit_workload(SYSTEM, spec).id

    def run_until(self, ids: list[str], phases: set[str], ticks: int = 40) -> None:
        for _ in range(ticks):
            self.loop.tick()
            if {self.s.workloads.get_workload(SYSTEM, i).phase.value for i in ids} <= phases:
                return
            time.sleep(0.02)
        raise AssertionError(f"not {phases}: " + "; ".join(
            f"{w.name} {w.phase.value} {w.pending_reason}"
            for w in (self.s.workloads.get_workload(SYSTEM, i) for i in ids)))


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    p = Plane(tmp_path_factory.mktemp("plane"))
    s = p.s
    s.inventory.create_site(SYSTEM, SiteSpec(name="eu-de-1", jurisdiction="EU/DE"))
    s.inventory.register_host(SYSTEM, HostSpec(
        name="whole-1", site="eu-de-1", cpu=64, memory="512Gi", driver="sim",
        gpus=[{"index": i, "model": "H100-80GB", "memory_mib": 81920} for i in range(4)]))
    s.inventory.register_host(SYSTEM, HostSpec(
        name="shared-1", site="eu-de-1", cpu=64, memory="512Gi", driver="sim",
        gpus=[{"index": i, "model": "A100-80GB", "memory_mib": 81920, "mode": "shared"}
              for i in range(2)]))
    for org, projects in (("org-a", ("proj-a", "proj-b")), ("org-c", ("proj-c",))):
        s.tenancy.create_organisation(SYSTEM, OrganisationSpec(name=org))
        for name in projects:
            s.tenancy.create_project(SYSTEM, ProjectSpec(
                name=name, organisation=org, cohort="pool" if org == "org-a" else None))
    s.policy.set_quota(SYSTEM, QuotaSpec(project="proj-a", resource="gpu", guaranteed=2))
    s.policy.set_quota(SYSTEM, QuotaSpec(project="proj-b", resource="gpu", guaranteed=4))
    s.tenancy.create_user(SYSTEM, UserSpec(name="ann", organisation="org-a"))
    s.tenancy.grant_role(SYSTEM, RoleBindingSpec(user="ann", role="member", scope="project",
                                                 scope_name="proj-a"))
    p.tokens["ann"] = s.tenancy.create_token(SYSTEM, TokenSpec(user="ann"))[1]
    running = [p.submit("proj-a", "a-big", preemptible=True, gpus=3,
                        gpu_models=["H100-80GB"]),
               p.submit("proj-b", "b-share", gpus=1, gpu_milli=500, gpu_models=["A100-80GB"])]
    p.run_until(running, {"Running"})
    waiting = [p.submit("proj-c", "c-wait", gpus=1),           # no quota, no cohort
               p.submit("proj-a", "a-more", gpus=2)]            # over proj-a's guarantee
    p.loop.tick()
    p.loop.tick()
    assert {p.s.workloads.get_workload(SYSTEM, i).phase.value for i in waiting} == {"Pending"}
    yield p
    p.client.close()
    p.loop.release()
    p.store.dispose()


@pytest.fixture
def cli(plane, monkeypatch):
    run = in_process_cli(monkeypatch, plane.app, plane.tokens, (top, resources))

    def invoke(user, *args):
        res = run(user, *args)
        assert "Traceback" not in res.output
        return res
    return invoke


def test_top_once_shows_the_pool_the_tenants_and_the_queue(cli):
    res = cli("admin", "top", "--once")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for heading in ("MODEL", "Tenants (GPUs)", "Queue (2 pending)", "REASON"):
        assert heading in out
    assert "3.5/6 GPUs allocated" in out and "2 workloads running, 2 pending" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # MODEL GPUS ALLOCATED IDLE UNAVAILABLE ...
    assert lines["H100-80GB"][1:5] == ["4", "3", "1", "0"]
    assert lines["A100-80GB"][1:5] == ["2", "0.5", "1.5", "0"]
    assert "c-wait" in out and "a-more" in out and "1x1 GPU" in out


def test_top_json_has_the_scheduler_ledger_per_tenant(cli):
    doc = json.loads(cli("admin", "top", "-o", "json").stdout)
    tenants = {t["project"]: t for t in doc["tenants"]}
    a, b, c = tenants["proj-a"], tenants["proj-b"], tenants["proj-c"]
    assert (a["guaranteed"], a["used"], a["borrowed"], a["running"], a["pending"]) == \
        (2, 3, 1, 1, 1)
    assert (b["guaranteed"], b["used"], b["borrowed"], b["lendable"]) == (4, 0.5, 0, 3.5)
    assert (c["guaranteed"], c["used"], c["pending"], c["lendable"]) == (0, 0, 1, None)
    queue = {q["name"]: q for q in doc["queue"]}
    assert set(queue) == {"c-wait", "a-more"}
    assert all(q["reason_code"] != "NotEvaluated" and q["reason"] for q in queue.values())
    assert doc["summary"]["gpus"] == 6 and doc["summary"]["workloads_pending"] == 2
    assert {h["host"] for h in doc["hosts"]} == {"whole-1", "shared-1"}


def test_a_member_sees_only_their_projects_in_top(cli):
    doc = json.loads(cli("ann", "top", "-o", "json").stdout)
    assert [t["project"] for t in doc["tenants"]] == ["proj-a"]
    assert [q["name"] for q in doc["queue"]] == ["a-more"]
    assert doc["summary"]["gpus"] == 6  # the shared infrastructure is visible to every role


def test_top_is_live_on_a_terminal(cli, monkeypatch):
    frames = []

    def sleep(s):  # one refresh, then Ctrl-C
        frames.append(s)
        if len(frames) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(top, "_interactive", lambda: True)
    monkeypatch.setattr(top, "time", types.SimpleNamespace(sleep=sleep,
                                                           strftime=time.strftime))
    res = cli("admin", "top", "-n", "5")
    assert res.exit_code == 0 and frames == [5.0, 5.0]
    assert "every 5s, Ctrl-C quits" in res.stdout and "Queue (2 pending)" in res.stdout


def test_describe_project_shows_quota_use_borrowing_and_why_work_waits(cli):
    res = cli("ann", "describe", "project", "proj-a")
    assert res.exit_code == 0, res.output
    out = res.stdout
    row = next(line.split() for line in out.splitlines() if line.startswith("gpu "))
    # RESOURCE FLAVOR GUARANTEED BORROWING_LIMIT LENDING_LIMIT USED BORROWED LENDABLE
    assert row == ["gpu", "*", "2", "-", "-", "3", "1", "0"]
    assert "cohort: pool" in out and "Fair share: weight 1 in cohort pool" in out
    assert "holds 3 of the pool's 6 GPUs (50%)" in out
    assert "Workloads: 1 running, 1 pending" in out and "Why work waits" in out
    doc = json.loads(cli("ann", "describe", "project", "proj-a", "-o", "json").stdout)
    assert doc["usage"]["now"]["gpus"] == 3 and doc["pending"]["workloads"] == 1
    [reason] = doc["pending"]["reasons"]
    assert reason["workloads"] == 1 and reason["code"].startswith(("quota", "gpuplane"))
    lent = json.loads(cli("admin", "describe", "project", "proj-b", "-o", "json").stdout)
    assert [(q["used"], q["borrowed"], q["lendable"]) for q in lent["quotas"]] == [(0.5, 0, 3.5)]
    refused = cli("ann", "describe", "project", "proj-c")  # not ann's: as if it did not exist
    assert refused.exit_code == 4 and "proj-c" in refused.output


@pytest.mark.parametrize("lookups", [20, 0], ids=["one by one", "from one listing"])
def test_get_events_names_workloads_and_hosts(cli, monkeypatch, lookups):
    monkeypatch.setattr(resources, "NAME_LOOKUPS", lookups)
    res = cli("ann", "get", "events")
    assert res.exit_code == 0, res.output
    started = [line for line in res.stdout.splitlines() if " Started " in line]
    assert started and all("a-big" in line and "whole-1" in line for line in started)
    assert "wl-" not in res.stdout
    raw = json.loads(cli("ann", "get", "events", "-o", "json").stdout)
    assert all(e["workload"].startswith("wl-") for e in raw if e["workload"])


def test_top_without_metrics_falls_back_to_usage(cli, monkeypatch):
    monkeypatch.setattr(top.pool, "scrape", lambda client: None)
    doc = json.loads(cli("admin", "top", "-o", "json").stdout)
    a = next(t for t in doc["tenants"] if t["project"] == "proj-a")
    assert (a["used"], a["borrowed"], a["lendable"]) == (3, None, None)
    assert all(m["fragmented"] is None for m in doc["pool"])
    assert "GPUs allocated" in cli("admin", "top", "--once").stdout
