"""The pool's series on ``/metrics``: capacity, allocation, fragmentation, tenants, queue,
attestation expiry, scheduler counters and NVML readings (docs/observability.md lists them).

``read_pool`` takes what the series need from one read transaction, as plain columns (hosts,
GPUs, the tasks holding resources, the queue), not domain records: building those was most of a
scrape of a large fleet. Parsed placements and checked task shapes are kept between scrapes.
``pool_families`` turns the read into metric families without touching the store; the console's
history (``api/history.py``) samples the same numbers. Labels are bounded by the infrastructure
(site, GPU model, offering mode, MIG profile, host for attestation) and the tenancy
(organisation, project, flavour); no series names a task or a workload.

Fragmentation is the placement engine's own measure (``scheduling/placement/fragmentation``):
the FGD fragment amount ``F`` of each ready host, the expected free milli-GPU a random task of
the typical workload could not use there, with the typical workload the leader learned online
(scheduler memory ``placement_workload``) or, before one is saved, the types of the tasks now
holding or waiting for resources. MIG GPUs are left out of it (the measure does not apply to
them). The plainer ``gpuplane_gpu_free_partial`` is the free share of partly used GPUs.
The event counters and NVML readings are in ``metrics.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Text, case, select, type_coerce

log = logging.getLogger("gpuplane.metrics")

#: the scheduler memory holding the online placement workload (``control/loop.py``)
PLACEMENT_MEMORY = "placement_workload"
#: task phases that hold resources (``Phase.holds_resources``)
HOLDING = ("Admitted", "Running")
#: the label of queued workloads the scheduler has not given a reason yet
NOT_EVALUATED = "NotEvaluated"


def guarded(what: str, fn: Callable[[], Any], default: Any = None) -> Any:
    """``fn()``, or ``default`` when it raises: one unreadable part leaves its series out and
    the rest of the scrape goes on."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail
        log.debug("metrics: %s not read: %s", what, exc)
        return default


@dataclass
class PoolRead:
    """What one scrape read in one transaction, reduced to what the series need as it is read
    (no record per host or GPU: a scrape of 2,000 hosts made 16,000 of them, and the garbage
    collector's full passes over them cost as much as the rest)."""

    now: float
    hosts: dict = field(default_factory=dict)     # (state, simulated) -> hosts
    models: dict = field(default_factory=dict)    # GPU model -> GPUs
    sums: dict = field(default_factory=dict)      # (site, model, mode) -> [capacity,
    #                                               allocated, free of partly held, not ready]
    instances: dict = field(default_factory=dict)  # (site, model, profile, used|free) -> n
    groups: list = field(default_factory=list)    # fragmentation inputs per ready host & model
    milli: dict = field(default_factory=dict)     # (host, GPU index) -> milli-GPU held
    mig: dict = field(default_factory=dict)       # (host, GPU index) -> {(profile, start)}
    cpu: dict = field(default_factory=dict)       # host -> CPU milli held
    tasks_active: int = 0                         # tasks holding resources
    allocated: float = 0.0                        # GPUs they hold
    charged: dict = field(default_factory=dict)   # (project, TaskRequest) -> tasks
    waiting: list | None = None                   # (pending reason code, submitted_at)
    quotas: Any = None                            # QuotaTree
    attestation: dict | None = None
    typical: Any = None                           # TypicalWorkload or None


# Parsed JSON, placements and checked task requests, kept between scrapes: a running task's
# placement does not change while it runs, and a fleet has few task shapes. Keyed by the
# stored text (SQLite); where the driver hands parsed values (PostgreSQL) they are used as is.
_PARSED: dict[str, Any] = {}
_PLACED: dict[str, Any] = {}
_REQUESTS: dict[tuple, Any] = {}
_CACHE_MAX = 100_000
_MISS = object()


def _remember(cache: dict, key: Any, value: Any) -> Any:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def _json(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    hit = _PARSED.get(raw, _MISS)
    return _remember(_PARSED, raw, json.loads(raw)) if hit is _MISS else hit


def _placed(raw: Any) -> tuple | None:
    """What a stored placement holds: (host, ((host, GPU index), milli) per GPU, ((host, GPU
    index), (MIG profile, start)) per MIG instance, GPUs in all, whether the cycle can read it
    (``convert.to_placement``)); None where there is none."""
    hit = _PLACED.get(raw) if isinstance(raw, str) else None
    if hit is None:
        from gpuplane.control.convert import to_placement
        from gpuplane.domain.workloads import TaskPlacement

        d = _json(raw)
        if not d:
            return None
        p = TaskPlacement(host=d["host"], gpu_indices=tuple(d.get("gpu_indices", ())),
                          gpu_milli=int(d.get("gpu_milli", 1000)), mig=tuple(d.get("mig", ())))
        shares = guarded("placement", p.share_milli, {})
        first = p.gpu_indices[0] if p.gpu_indices else 0
        hit = (p.host, tuple(((p.host, i), m) for i, m in shares.items()),
               guarded("placement", lambda: tuple(
                   ((p.host, int(m.get("gpu_index", first))),
                    (str(m.get("profile")), int(m.get("start", -1)))) for m in p.mig), ()),
               sum(shares.values()) / 1000,
               guarded("placement", lambda: to_placement(p) is not None, False))
        if isinstance(raw, str):
            _remember(_PLACED, raw, hit)
    return hit


def _request(cpu: int, mem: int, gpus: int, milli: int, mig: str | None, models: Any) -> Any:
    """The ``TaskRequest`` ``convert.to_request`` builds for a task of this shape (selector and
    tolerations change nothing counted here), or None where it refuses the task. ``models``:
    the stored JSON text (or the parsed list)."""
    key = (cpu, mem, gpus, milli, mig, models if isinstance(models, str) else
           tuple(models or ()))
    hit = _REQUESTS.get(key, _MISS)
    if hit is _MISS:
        from gpuplane.domain.requests import TaskRequest

        from gpuplane.scheduling.queueing import task_units

        def build() -> Any:
            req = TaskRequest(cpu_milli=cpu, memory_mib=mem, gpus=gpus,
                              gpu_milli=milli if gpus else 1000, mig_profile=mig,
                              gpu_models=frozenset(_json(models) or ()))
            task_units(req)  # raises where the quota count cannot read the MIG profile
            return req

        hit = _remember(_REQUESTS, key, guarded("task request", build))
    return hit


def read_pool(tx: Any, now: float) -> PoolRead:
    """What the store's series need, in the caller's read transaction: plain columns of the
    hosts, GPUs and tasks holding resources, the queue, quotas, attestation results."""
    from gpuplane.control.convert import load_quotas

    r = PoolRead(now)
    conn = tx.session.connection()  # Core, not the ORM session: a third of the time per row
    _read_holding(conn, r)
    _read_inventory(conn, r)
    r.waiting = guarded("queue", lambda: _read_waiting(conn, now))
    r.quotas = guarded("quotas", lambda: load_quotas(tx))
    r.attestation = guarded("attestation", tx.attestation.latest)
    r.typical = guarded("typical workload", lambda: _typical(tx, now))
    return r


def _read_inventory(s: Any, r: PoolRead) -> None:
    """Hosts and GPUs, summed as they are read (after ``_read_holding``): hosts by state,
    GPUs by model, capacity by (site, model, mode) with what is held of it, MIG instances, and
    the free GPU vector of every ready host and model (the fragmentation measure's input), in
    host and GPU index order."""
    from gpuplane.store.tables import GpuRow, HostRow, SiteRow

    hosts = {}
    for host_id, name, site, state, sim, cpu in s.execute(
            select(HostRow.id, HostRow.name, SiteRow.name, HostRow.state, HostRow.simulated,
                   HostRow.cpu_milli).join(SiteRow, SiteRow.id == HostRow.site_id)):
        hosts[host_id] = (name, site, state == "ready", cpu)
        key = (state, str(bool(sim)).lower())
        r.hosts[key] = r.hosts.get(key, 0) + 1
    milli, held_mig, models, sums, instances = r.milli, r.mig, r.models, r.sums, r.instances
    layout = case((GpuRow.mode == "mig", type_coerce(GpuRow.mig_layout, Text)), else_=None)
    current, per_model = None, {}
    for host_id, idx, model, mode, raw in s.execute(
            select(GpuRow.host_id, GpuRow.idx, GpuRow.model, GpuRow.mode, layout)
            .order_by(GpuRow.host_id, GpuRow.idx)):
        if host_id != current:
            _flush(r, hosts.get(current), per_model)
            current, per_model = host_id, {}
        name, site, ready, _ = hosts[host_id]
        models[model] = models.get(model, 0) + 1
        key = (site, model, mode)
        v = sums.get(key)
        if v is None:
            v = sums[key] = [0.0, 0.0, 0.0, 0.0]
        used = milli.get((name, idx), 0)
        if used > 1000:
            used = 1000
        v[0] += 1
        v[1] += used / 1000
        v[2] += (1000 - used) / 1000 if 0 < used < 1000 else 0.0
        v[3] += 0 if ready else 1
        if mode == "mig":
            held = held_mig.get((name, idx), set())
            listed = None if raw is None or raw == "null" else _json(raw)
            for profile, start in {(str(i.get("profile")), int(i.get("start", -1)))
                                   for i in (listed or ())} | held:
                k = (site, model, profile, "used" if (profile, start) in held else "free")
                instances[k] = instances.get(k, 0) + 1
        elif ready:
            frees = per_model.get(model)
            if frees is None:
                frees = per_model[model] = []
            frees.append(max(0, 1000 - used))
    _flush(r, hosts.get(current), per_model)


def _flush(r: PoolRead, host: tuple | None, per_model: dict) -> None:
    if host is None:
        return
    name, site, _, cpu = host
    cpu_free = max(0, cpu - r.cpu.get(name, 0))
    for model, frees in per_model.items():
        r.groups.append(((site, model), cpu_free, tuple(sorted(frees)), model))


def _task_columns() -> tuple:
    from gpuplane.store.tables import TaskRow

    return (TaskRow.cpu_milli, TaskRow.memory_mib, TaskRow.gpus, TaskRow.gpu_milli,
            TaskRow.mig_profile, type_coerce(TaskRow.gpu_models, Text))


def _read_holding(s: Any, r: PoolRead) -> None:
    """What the tasks holding resources hold (by GPU, MIG instance and host CPU, in all) and
    what their tenants are charged for: tasks per (project, request), of the workloads whose
    every holding task the cycle can read (``to_running`` skips the others whole)."""
    from gpuplane.store.tables import ProjectRow, TaskRow, WorkloadRow

    rows = s.execute(
        select(TaskRow.workload_pk, ProjectRow.name, type_coerce(TaskRow.placement, Text),
               *_task_columns())
        .join(WorkloadRow, WorkloadRow.pk == TaskRow.workload_pk)
        .join(ProjectRow, ProjectRow.id == WorkloadRow.project_id)
        .where(TaskRow.phase.in_(HOLDING)).order_by(TaskRow.workload_pk, TaskRow.idx))
    milli, mig, cpu = r.milli, r.mig, r.cpu
    allocated, n = 0.0, 0
    current, work = None, None     # the workload being read: (project, [request | None])
    for pk, project, raw, cpu_milli, mem, gpus, gpu_milli, profile, models in rows:
        n += 1
        if pk != current:
            _charge(r.charged, work)
            current, work = pk, (project, [])
        placed = _placed(raw)
        if placed is None:
            continue
        host, shares, instances, total, readable = placed
        allocated += total
        cpu[host] = cpu.get(host, 0) + cpu_milli
        for key, m in shares:
            milli[key] = milli.get(key, 0) + m
        for key, instance in instances:
            held = mig.get(key)
            if held is None:
                held = mig[key] = set()
            held.add(instance)
        work[1].append(_request(cpu_milli, mem, gpus, gpu_milli, profile, models)
                       if readable else None)
    _charge(r.charged, work)
    r.tasks_active, r.allocated = n, allocated


def _charge(charged: dict, work: tuple | None) -> None:
    if work is None or None in work[1]:
        return
    for req in work[1]:
        key = (work[0], req)
        charged[key] = charged.get(key, 0) + 1


def _waiting_pks(now: float) -> Any:
    """The schedulable workloads (``WorkloadRepo.schedulable``), as a subquery of pks."""
    from gpuplane.store.repos_workloads import WorkloadRepo
    from gpuplane.store.tables import WorkloadRow

    return select(WorkloadRow.pk).where(WorkloadRepo.schedulable(now))


def _read_waiting(s: Any, now: float) -> list[tuple[str, float]]:
    from gpuplane.store.tables import WorkloadRow

    rows = s.execute(select(WorkloadRow.pending_reason, WorkloadRow.submitted_at)
                     .where(WorkloadRow.pk.in_(_waiting_pks(now))).order_by(WorkloadRow.pk))
    return [(reason["code"] if reason else NOT_EVALUATED, at) for reason, at in rows]


def _typical(tx: Any, now: float) -> Any:
    """The typical workload of the fragmentation measure: the one the leader learned, else the
    task types now holding or waiting for resources (the tasks, Pending or holding, of the
    workloads holding resources and of those in the queue)."""
    from gpuplane.scheduling.placement.fragmentation import TypicalWorkload
    from gpuplane.scheduling.placement.online import OnlineWorkload
    from gpuplane.store.tables import TaskRow

    def learned() -> Any:
        doc = tx.scheduler_state.get([PLACEMENT_MEMORY]).get(PLACEMENT_MEMORY)
        return None if doc is None else OnlineWorkload.from_dict(doc.data).workload

    known = guarded("placement workload", learned)
    if known is not None and len(known):
        return known
    holding = select(TaskRow.workload_pk).where(TaskRow.phase.in_(HOLDING))
    requests = []
    for pks in (holding, _waiting_pks(now)):  # a workload in both counts twice, as before
        for row in tx.session.connection().execute(select(*_task_columns()).where(
                TaskRow.workload_pk.in_(pks), TaskRow.phase.in_((*HOLDING, "Pending")))):
            req = _request(*row)
            if req is not None:
                requests.append(req)
    return TypicalWorkload.from_tasks(requests)


def pool_families(r: PoolRead) -> Iterable[Any]:
    yield from _capacity(r)
    yield from _fragmentation(r)
    yield from _tenants(r)
    yield from _queue(r)
    yield from _attestation(r)


# -- capacity ------------------------------------------------------------------------------------
def _capacity(r: PoolRead) -> Iterable[Any]:
    labels = ["site", "model", "mode"]
    cap = GaugeMetricFamily("gpuplane_gpu_capacity", "GPUs registered", labels=labels)
    alloc = GaugeMetricFamily("gpuplane_gpu_allocated",
                              "GPUs held by Admitted/Running tasks (fractional: shares and MIG "
                              "instances count their part)", labels=labels)
    free = GaugeMetricFamily("gpuplane_gpu_free", "GPUs not held (capacity - allocated)",
                             labels=labels)
    partial = GaugeMetricFamily("gpuplane_gpu_free_partial",
                                "Free part of GPUs that are partly held", labels=labels)
    unsched = GaugeMetricFamily("gpuplane_gpu_unschedulable",
                                "GPUs on hosts taking no new tasks (cordoned, draining, down)",
                                labels=labels)
    mig = GaugeMetricFamily("gpuplane_mig_instances",
                            "MIG instances by profile, held by a task (used) or not (free)",
                            labels=["site", "model", "profile", "state"])
    sums, instances = r.sums, r.instances
    for key, (c, a, p, u) in sorted(sums.items()):
        cap.add_metric(list(key), c)
        alloc.add_metric(list(key), a)
        free.add_metric(list(key), c - a)
        partial.add_metric(list(key), p)
        unsched.add_metric(list(key), u)
    for key, n in sorted(instances.items()):
        mig.add_metric(list(key), n)
    return cap, alloc, free, partial, unsched, mig


# -- fragmentation -------------------------------------------------------------------------------
def fragmented(r: PoolRead) -> dict[tuple[str, str], float]:
    """{(site, model): the FGD fragment amount in GPUs, summed over the ready hosts}."""
    from gpuplane.scheduling.placement.fragmentation import FragmentationModel

    groups = r.groups
    totals = {key: 0.0 for key, _, _, _ in groups}
    workload = r.typical
    if workload is not None and len(workload) and groups:
        models = sorted({m for _, _, _, m in groups})
        fm = FragmentationModel(workload, models)
        values = fm.fragment_keys([(c, g, models.index(m)) for _, c, g, m in groups])
        for (key, _, _, _), f in zip(groups, values):
            totals[key] += f / 1000
    return totals


def _fragmentation(r: PoolRead) -> Iterable[Any]:
    fam = GaugeMetricFamily(
        "gpuplane_gpu_fragmented",
        "Expected free GPUs a typical task could not use (FGD fragment amount, summed over "
        "ready hosts; whole and shared GPUs)", labels=["site", "model"])
    for key, v in sorted(fragmented(r).items()):
        fam.add_metric(list(key), v)
    return (fam,)


# -- tenants -------------------------------------------------------------------------------------
def tenant_usage(r: PoolRead) -> dict[tuple[str, str], int]:
    """Milli-GPU per (project, flavour) as the scheduler counts it (``running_totals`` of
    ``convert.to_running``)."""
    from gpuplane.scheduling.queueing import flavor_of, task_units

    usage: dict[tuple[str, str], int] = {}
    q = r.quotas
    for (project, req), n in r.charged.items():
        key = (project, flavor_of(req, q))
        usage[key] = usage.get(key, 0) + task_units(req) * n
    return usage


def _tenants(r: PoolRead) -> Iterable[Any]:
    from gpuplane.scheduling.admission.quota import QuotaLedger

    labels = ["organisation", "project", "flavor"]
    fams = {
        "guaranteed": GaugeMetricFamily("gpuplane_tenant_guaranteed_gpus",
                                        "GPUs guaranteed by quota", labels=labels),
        "used": GaugeMetricFamily("gpuplane_tenant_used_gpus",
                                  "GPUs the project's Admitted/Running tasks hold", labels=labels),
        "borrowed": GaugeMetricFamily("gpuplane_tenant_borrowed_gpus",
                                      "GPUs held above the guarantee (borrowed from the cohort)",
                                      labels=labels),
        "lent": GaugeMetricFamily("gpuplane_tenant_lent_gpus",
                                  "Idle lendable guarantee: GPUs of the guarantee the cohort may "
                                  "use now", labels=labels),
    }
    if r.quotas is None:
        return ()
    q = r.quotas
    usage = tenant_usage(r)
    ledger = QuotaLedger.of(q, ((p, f, u) for (p, f), u in sorted(usage.items())
                                if p in q.projects))
    keys = set(usage)
    for name, p in q.projects.items():
        keys.update((name, f) for f in p.quotas)
    for project, flavor in sorted(keys):
        p = q.projects.get(project)
        lv = [p.organisation if p else "", project, flavor]
        fams["used"].add_metric(lv, usage.get((project, flavor), 0) / 1000)
        if p is None:
            continue
        fams["guaranteed"].add_metric(lv, p.quota(flavor).guaranteed / 1000)
        fams["borrowed"].add_metric(lv, ledger.borrowed(project, flavor) / 1000)
        fams["lent"].add_metric(lv, ledger.lent(project, flavor) / 1000)
    return tuple(fams.values())


# -- queue ---------------------------------------------------------------------------------------
def _queue(r: PoolRead) -> Iterable[Any]:
    depth = GaugeMetricFamily("gpuplane_queue_workloads",
                              "Workloads waiting for the scheduler, by pending reason code",
                              labels=["reason"])
    age = GaugeMetricFamily("gpuplane_queue_oldest_seconds",
                            "Age of the oldest waiting workload, by pending reason code",
                            labels=["reason"])
    if r.waiting is None:
        return ()
    by: dict[str, list[float]] = {}
    for code, submitted_at in r.waiting:
        v = by.setdefault(code, [0, 0.0])
        v[0] += 1
        v[1] = max(v[1], r.now - submitted_at)
    for code, (n, oldest) in sorted(by.items()):
        depth.add_metric([code], n)
        age.add_metric([code], max(0.0, oldest))
    return depth, age


# -- attestation ---------------------------------------------------------------------------------
def _attestation(r: PoolRead) -> Iterable[Any]:
    fam = GaugeMetricFamily("gpuplane_attestation_expiry_seconds",
                            "Seconds until the newest attestation result of a host expires "
                            "(negative: expired)", labels=["host", "kind"])
    for (host, kind), res in sorted((r.attestation or {}).items()):
        fam.add_metric([host, kind], res.expires_at - r.now)
    return (fam,)
