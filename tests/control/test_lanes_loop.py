"""Lanes in the live loop (SQLite, and PostgreSQL when given): tasks admitted by borrowing are
stored as borrowed, the next ticks read them back and keep guaranteed work off their hosts, and
a guaranteed gang reclaims whole hosts -- what ``tests/unit/test_sharing_lanes.py`` shows of
the cycle, through the store and the ``sim`` driver."""

from __future__ import annotations

import dataclasses
import time

import pytest

from gpuplane.control.loop import ControlLoop
from gpuplane.domain.workloads import Phase, WorkloadSpec
from gpuplane.drivers.sim import SimDriver
from gpuplane.scheduling.placement import profiles
from gpuplane.service.auth import AuthService
from gpuplane.service.authz import Principal
from gpuplane.service.inventory import InventoryService
from gpuplane.service.policy import PolicyService
from gpuplane.service.specs import HostSpec, OrganisationSpec, ProjectSpec, QuotaSpec, SiteSpec
from gpuplane.service.tenancy import TenancyService
from gpuplane.service.workloads import WorkloadService
from gpuplane.store.db import Store

SYSTEM = Principal.system()


@pytest.fixture
def plane(db_url, tmp_path):
    store = Store(db_url)
    store.migrate()
    AuthService(store).bootstrap_admin()
    inv = InventoryService(store)
    inv.create_site(SYSTEM, SiteSpec(name="here"))
    for i in range(3):
        inv.register_host(SYSTEM, HostSpec(
            name=f"h-{i}", site="here", cpu=64, memory="512Gi", driver="sim",
            gpus=[{"index": g, "model": "H100-80GB", "memory_mib": 81920} for g in range(8)]))
    ten, pol = TenancyService(store), PolicyService(store)
    ten.create_organisation(SYSTEM, OrganisationSpec(name="lab"))
    for name, guaranteed in (("p0", 0), ("p1", 6), ("p2", 16)):   # as in test_sharing_lanes
        ten.create_project(SYSTEM, ProjectSpec(name=name, organisation="lab", cohort="lab"))
        pol.set_quota(SYSTEM, QuotaSpec(project=name, resource="gpu", guaranteed=guaranteed))
    loop = ControlLoop(store, {"sim": SimDriver(tmp_path)}, holder="test", lease_ttl_s=5,
                       stop_grace_s=0.2, preempt_grace_s=0.2)
    # the sharing simulator's profile: best fit would put guaranteed work on the fullest host
    # with room, a borrowed one, were the marks not read back from the store
    loop.cycle_options = dataclasses.replace(loop.cycle_options, profile=profiles.get("bestfit"))
    yield store, loop, WorkloadService(store)
    loop.release()
    store.dispose()


def submit(svc, project, name, gpus):
    return svc.submit_workload(SYSTEM, WorkloadSpec(
        name=name, project=project, priority_class="preemptible",
        tasks=[{"name": f"t{k}", "resources": {"gpus": g, "cpu": 1, "memory": "1Gi"}}
               for k, g in enumerate(gpus)]))


def settle(loop, svc, uids, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loop.tick()
        if all(svc.get_workload(SYSTEM, u).phase == Phase.RUNNING for u in uids):
            return
        time.sleep(0.05)
    raise AssertionError([svc.get_workload(SYSTEM, u).pending_reason for u in uids])


def test_borrowed_work_keeps_to_its_hosts_and_a_guaranteed_gang_reclaims_whole_hosts(plane):
    store, loop, svc = plane
    for name, project, n in (("g0", "p1", 4), ("b0", "p0", 6), ("g1", "p1", 2),
                             ("b1", "p0", 2)):
        settle(loop, svc, [submit(svc, project, name, (n,)).id])
    hosts: dict[str, set[str]] = {"p0": set(), "p1": set()}
    for w in svc.list_workloads(SYSTEM, None, 100).items:
        task = svc.get_workload(SYSTEM, w.id).tasks[0]
        assert task.placement.borrowed == (w.project == "p0"), (w.name, task.placement)
        hosts[w.project].add(task.placement.host)
    assert len(hosts["p0"]) == len(hosts["p1"]) == 1 and hosts["p0"] != hosts["p1"], hosts

    gang = submit(svc, "p2", "gang", (8, 8))
    settle(loop, svc, [gang.id])
    got = svc.get_workload(SYSTEM, gang.id)
    assert hosts["p0"] <= {t.placement.host for t in got.tasks}
    assert not any(t.placement.borrowed for t in got.tasks)
