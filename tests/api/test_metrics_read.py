"""The scrape's plain-column read (``metrics_pool.read_pool``) counts exactly what the domain
records say: the reference below is the former computation over ``HostRecord``s and
``Workload``s (``hosts.list_all``, ``workloads.list_active``, ``list_schedulable``,
``convert.to_running``, ``running_totals``), kept here as the specification. The fleet mixes
whole, shared and MIG GPUs (with a stored layout), a cordoned host, a per-model quota flavour,
tenants in a cohort, a queue; the fragmentation is compared with the learned typical workload
and with the fallback (the task types now holding or waiting), and after a second scrape (the
parse caches warm)."""

from __future__ import annotations

import time

import pytest
from functional.dbs import database_params, make_db_url
from sqlalchemy import delete

from gpuplane.api.metrics_pool import (NOT_EVALUATED, PLACEMENT_MEMORY, fragmented, read_pool,
                                       tenant_usage)
from gpuplane.control.convert import load_quotas, to_request, to_running
from gpuplane.control.loop import ControlLoop
from gpuplane.domain.workloads import WorkloadSpec
from gpuplane.drivers.sim import SimDriver
from gpuplane.scheduling.admission.state import running_totals
from gpuplane.scheduling.placement.fragmentation import FragmentationModel, TypicalWorkload
from gpuplane.scheduling.placement.online import OnlineWorkload
from gpuplane.service import Principal, Services
from gpuplane.service.specs import (HostSpec, HostStateSpec, OrganisationSpec, ProjectSpec,
                                    QuotaSpec, SiteSpec)
from gpuplane.store import Store
from gpuplane.store.tables import SchedulerStateRow

SYSTEM = Principal.system()
LAYOUT = [{"profile": "3g.40gb", "start": 0}, {"profile": "1g.10gb", "start": 4},
          {"profile": "1g.10gb", "start": 5}]


def _gpus(model: str, n: int, mode: str = "whole", layout: list | None = None) -> list[dict]:
    return [{"index": i, "model": model, "memory_mib": 81920, "mode": mode,
             **({"mig_layout": layout} if layout else {})} for i in range(n)]


@pytest.fixture(params=database_params())
def fleet(request, tmp_path):
    for url in make_db_url(request.param, tmp_path):
        store = Store(url)
        store.migrate()
        svc = Services(store)
        svc.bootstrap_admin()
        inv = svc.inventory
        inv.create_site(SYSTEM, SiteSpec(name="de-1", jurisdiction="EU/DE"))
        inv.create_site(SYSTEM, SiteSpec(name="ch-1", jurisdiction="CH"))
        hosts = [("w1", "de-1", _gpus("H100-80GB", 4)), ("w2", "ch-1", _gpus("A100-80GB", 4)),
                 ("s1", "de-1", _gpus("A100-80GB", 2, "shared")),
                 ("m1", "ch-1", _gpus("H100-80GB", 2, "mig", LAYOUT)),
                 ("c1", "de-1", _gpus("H100-80GB", 2)), ("cpu1", "ch-1", [])]
        for name, site, gpus in hosts:
            inv.register_host(SYSTEM, HostSpec(name=name, site=site, cpu=32, memory="256Gi",
                                               driver="sim", gpus=gpus))
        for org, projects in (("org-a", ("pa", "pb")), ("org-c", ("pc",))):
            svc.tenancy.create_organisation(SYSTEM, OrganisationSpec(name=org))
            for p in projects:
                svc.tenancy.create_project(SYSTEM, ProjectSpec(
                    name=p, organisation=org, cohort="pool" if org == "org-a" else None))
        svc.policy.set_quota(SYSTEM, QuotaSpec(project="pa", resource="gpu",
                                               flavor="H100-80GB", guaranteed=4))
        svc.policy.set_quota(SYSTEM, QuotaSpec(project="pb", resource="gpu",
                                               flavor="A100-80GB", guaranteed=6))
        svc.policy.set_quota(SYSTEM, QuotaSpec(project="pb", resource="gpu", guaranteed=1))
        jobs = [("pa", "a-big", {"gpus": 3, "gpu_models": ["H100-80GB"]}),
                ("pb", "b-a100", {"gpus": 1, "gpu_models": ["A100-80GB"]}),
                ("pb", "b-share", {"gpus": 1, "gpu_milli": 300, "gpu_models": ["A100-80GB"]}),
                ("pb", "b-share2", {"gpus": 1, "gpu_milli": 500}),
                ("pb", "b-mig", {"gpus": 1, "mig_profile": "1g.10gb"}),
                ("pb", "b-mig3", {"gpus": 1, "mig_profile": "3g.40gb"}),
                ("pc", "c-wait", {"gpus": 1}),
                ("pa", "a-never", {"gpus": 2, "gpu_models": ["A100-80GB"]})]
        for project, name, res in jobs:
            replicas = 2 if name == "b-a100" else 1
            svc.workloads.submit_workload(SYSTEM, WorkloadSpec(
                name=name, project=project, tasks=[{"command": ["x"], "replicas": replicas,
                                                    "resources": {"cpu": 2, **res}}]))
        loop = ControlLoop(store, {"sim": SimDriver(tmp_path / "sim")}, holder="t",
                           lease_ttl_s=60)
        for _ in range(4):
            loop.tick()
        inv.set_host_state(SYSTEM, "c1", HostStateSpec(state="cordoned"))
        svc.workloads.submit_workload(SYSTEM, WorkloadSpec(  # never evaluated yet
            name="a-late", project="pa", tasks=[{"command": ["x"], "resources": {"gpus": 1}}]))
        loop.release()
        yield store
        store.dispose()


def reference(tx, now: float, learned: bool) -> dict:
    """The former computation, over domain records."""
    hosts, active = tx.hosts.list_all(), tx.workloads.list_active()
    waiting = tx.workloads.list_schedulable(now)
    milli, mig, cpu = {}, {}, {}
    held = [t for w in active for t in w.tasks if t.phase.holds_resources]
    for t in held:
        p = t.placement
        if p is None:
            continue
        cpu[p.host] = cpu.get(p.host, 0) + t.cpu_milli
        for i, m in p.share_milli().items():
            milli[(p.host, i)] = milli.get((p.host, i), 0) + m
        for m in p.mig:
            key = (p.host, int(m.get("gpu_index", p.gpu_indices[0] if p.gpu_indices else 0)))
            mig.setdefault(key, set()).add((str(m.get("profile")), int(m.get("start", -1))))
    sums, instances, states, models, groups = {}, {}, {}, {}, []
    for h in hosts:
        states[(h.state, str(h.simulated).lower())] = \
            states.get((h.state, str(h.simulated).lower()), 0) + 1
        per_model = {}
        for g in h.gpus:
            models[g.model] = models.get(g.model, 0) + 1
            s = sums.setdefault((h.site, g.model, g.mode), [0.0, 0.0, 0.0, 0.0])
            used = min(1000, milli.get((h.name, g.index), 0))
            s[0] += 1
            s[1] += used / 1000
            s[2] += (1000 - used) / 1000 if 0 < used < 1000 else 0.0
            s[3] += 0 if h.state == "ready" else 1
            if g.mode == "mig":
                mine = mig.get((h.name, g.index), set())
                layout = {(str(i.get("profile")), int(i.get("start", -1)))
                          for i in (g.mig_layout or ())}
                for profile, start in layout | mine:
                    k = (h.site, g.model, profile, "used" if (profile, start) in mine else "free")
                    instances[k] = instances.get(k, 0) + 1
            elif h.state == "ready":
                per_model.setdefault(g.model, []).append(
                    max(0, 1000 - milli.get((h.name, g.index), 0)))
        for model, frees in per_model.items():
            groups.append(((h.site, model), max(0, h.cpu_milli - cpu.get(h.name, 0)),
                           tuple(sorted(frees)), model))
    if learned:
        doc = tx.scheduler_state.get([PLACEMENT_MEMORY])[PLACEMENT_MEMORY]
        typical = OnlineWorkload.from_dict(doc.data).workload
    else:
        typical = TypicalWorkload.from_tasks(
            to_request(w, t) for w in [*active, *waiting] for t in w.tasks
            if t.phase.holds_resources or t.phase.value == "Pending")
    frag = {key: 0.0 for key, _, _, _ in groups}
    names = sorted({m for *_, m in groups})
    values = FragmentationModel(typical, names).fragment_keys(
        [(c, g, names.index(m)) for _, c, g, m in groups])
    for (key, *_), f in zip(groups, values):
        frag[key] += f / 1000
    quotas = load_quotas(tx)
    usage = running_totals(to_running(active, now), quotas).usage
    queue = [(w.pending_reason.code if w.pending_reason else NOT_EVALUATED, w.submitted_at)
             for w in waiting]
    return {"sums": sums, "instances": instances, "hosts": states, "models": models,
            "milli": milli, "mig": mig, "cpu": cpu, "tasks_active": len(held),
            "allocated": sum(t.placement.total_milli / 1000 for t in held if t.placement),
            "usage": usage, "queue": queue, "fragmented": frag, "typical": len(typical)}


def ours(tx, now: float) -> dict:
    r = read_pool(tx, now)
    return {"sums": r.sums, "instances": r.instances, "hosts": r.hosts, "models": r.models,
            "milli": r.milli, "mig": r.mig, "cpu": r.cpu, "tasks_active": r.tasks_active,
            "allocated": r.allocated, "usage": tenant_usage(r), "queue": r.waiting,
            "fragmented": fragmented(r), "typical": len(r.typical)}


def test_plain_read_counts_what_the_records_say(fleet):
    now = time.time()
    with fleet.read() as tx:
        want = reference(tx, now, learned=True)
        assert want["tasks_active"] >= 6 and want["queue"] and want["usage"]
        assert any(k[3] == "used" for k in want["instances"])  # a MIG instance is held
        assert any(code == NOT_EVALUATED for code, _ in want["queue"])
        assert ("cordoned", "true") in want["hosts"]
        assert {("pa", "H100-80GB"), ("pb", "A100-80GB")} <= set(want["usage"])
        for _ in range(2):  # the second read answers from the parse caches
            assert ours(tx, now) == want
    with fleet.write() as tx:  # before the leader saved a typical workload
        tx.session.execute(delete(SchedulerStateRow).where(
            SchedulerStateRow.name == PLACEMENT_MEMORY))
    with fleet.read() as tx:
        want = reference(tx, now, learned=False)
        assert want["typical"] > 0 and sum(want["fragmented"].values()) > 0
        assert ours(tx, now) == want
