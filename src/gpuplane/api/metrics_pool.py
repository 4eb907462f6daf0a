"""The pool's series on ``/metrics``: capacity, allocation, fragmentation, tenants, queue,
attestation expiry, scheduler counters and NVML readings (docs/observability.md lists them).

``read_pool`` takes what the series need from one read transaction; ``pool_families`` turns it
into metric families without touching the store. Labels are bounded by the infrastructure
(site, GPU model, offering mode, MIG profile, host for attestation) and the tenancy
(organisation, project, flavour); no series names a task or a workload.

Fragmentation is the placement engine's own measure (``scheduling/placement/fragmentation``):
the FGD fragment amount ``F`` of each ready host, the expected free milli-GPU a random task of
the typical workload could not use there, with the typical workload the leader learned online
(scheduler memory ``placement_workload``) or, before one is saved, the types of the tasks now
holding or waiting for resources. MIG GPUs are left out of it (the measure does not apply to
them). The plainer ``gpuplane_gpu_free_partial`` is the free share of partly used GPUs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func, select

log = logging.getLogger("gpuplane.metrics")

#: the scheduler memory holding the online placement workload (``control/loop.py``)
PLACEMENT_MEMORY = "placement_workload"
#: the label of queued workloads the scheduler has not given a reason yet
NOT_EVALUATED = "NotEvaluated"
#: event reason -> (counter, label value): what the store's events count (``EventCounters``)
EVENT_COUNTS = {"Admitted": ("admissions", ""), "Preempted": ("preemptions", ""),
                "TaskFailed": ("failures", "failed"), "TaskLost": ("failures", "lost"),
                "Retrying": ("failures", "retrying")}
#: how the message of a workload phase event starts (``service/lifecycle.py``)
PHASE_EVENT = "workload is "
#: upper bounds (seconds) of the admission wait histogram
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0,
                12 * 3600.0, 24 * 3600.0)


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
    """What one scrape read in one transaction."""

    now: float
    hosts: list = field(default_factory=list)
    active: list = field(default_factory=list)       # workloads holding resources
    waiting: list | None = None                      # workloads with a schedulable Pending task
    quotas: Any = None                               # QuotaTree
    attestation: dict | None = None
    learned: Any = None                              # TypicalWorkload or None


def read_pool(tx: Any, now: float, hosts: list, active: list) -> PoolRead:
    """The rest of what the pool series need, in the caller's read transaction."""
    from gpuplane.control.convert import load_quotas
    from gpuplane.scheduling.placement.online import OnlineWorkload

    def learned() -> Any:
        doc = tx.scheduler_state.get([PLACEMENT_MEMORY]).get(PLACEMENT_MEMORY)
        return None if doc is None else OnlineWorkload.from_dict(doc.data).workload

    return PoolRead(now, hosts, active,
                    waiting=guarded("queue", lambda: tx.workloads.list_schedulable(now)),
                    quotas=guarded("quotas", lambda: load_quotas(tx)),
                    attestation=guarded("attestation", tx.attestation.latest),
                    learned=guarded("placement workload", learned))


def pool_families(r: PoolRead) -> Iterable[Any]:
    yield from _capacity(r)
    yield from _fragmentation(r)
    yield from _tenants(r)
    yield from _queue(r)
    yield from _attestation(r)


# -- capacity ------------------------------------------------------------------------------------
def _held(active: Iterable[Any]) -> tuple[dict, dict, dict]:
    """(milli held per (host, GPU index), MIG instances held per (host, GPU index) as
    {(profile, start)}, CPU milli held per host) by the tasks holding resources."""
    milli: dict[tuple[str, int], int] = {}
    mig: dict[tuple[str, int], set] = {}
    cpu: dict[str, int] = {}
    for w in active:
        for t in w.tasks:
            p = t.placement
            if not t.phase.holds_resources or p is None:
                continue
            cpu[p.host] = cpu.get(p.host, 0) + t.cpu_milli
            for i, m in guarded("placement", p.share_milli, {}).items():
                milli[(p.host, i)] = milli.get((p.host, i), 0) + m
            for m in p.mig:
                key = (p.host, int(m.get("gpu_index", p.gpu_indices[0] if p.gpu_indices else 0)))
                mig.setdefault(key, set()).add((str(m.get("profile")), int(m.get("start", -1))))
    return milli, mig, cpu


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
    milli, held_mig, _ = _held(r.active)
    sums: dict[tuple[str, str, str], list[float]] = {}
    instances: dict[tuple[str, str, str, str], int] = {}
    for h in r.hosts:
        for g in h.gpus:
            key = (h.site, g.model, g.mode)
            s = sums.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            used = min(1000, milli.get((h.name, g.index), 0))
            s[0] += 1
            s[1] += used / 1000
            s[2] += (1000 - used) / 1000 if 0 < used < 1000 else 0.0
            s[3] += 0 if h.state == "ready" else 1
            if g.mode == "mig":
                held = held_mig.get((h.name, g.index), set())
                layout = {(str(i.get("profile")), int(i.get("start", -1)))
                          for i in (g.mig_layout or ())}
                for profile, start in layout | held:
                    state = "used" if (profile, start) in held else "free"
                    k = (h.site, g.model, profile, state)
                    instances[k] = instances.get(k, 0) + 1
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
def _typical(r: PoolRead) -> Any:
    from gpuplane.control.convert import to_request
    from gpuplane.scheduling.placement.fragmentation import TypicalWorkload

    if r.learned is not None and len(r.learned):
        return r.learned
    requests = []
    for w in [*r.active, *(r.waiting or ())]:
        for t in w.tasks:
            if t.phase.holds_resources or t.phase.value == "Pending":
                req = guarded("task request", lambda w=w, t=t: to_request(w, t))
                if req is not None:
                    requests.append(req)
    return TypicalWorkload.from_tasks(requests)


def _fragmentation(r: PoolRead) -> Iterable[Any]:
    from gpuplane.scheduling.placement.fragmentation import FragmentationModel

    fam = GaugeMetricFamily(
        "gpuplane_gpu_fragmented",
        "Expected free GPUs a typical task could not use (FGD fragment amount, summed over "
        "ready hosts; whole and shared GPUs)", labels=["site", "model"])
    milli, _, cpu = _held(r.active)
    groups: list[tuple[tuple[str, str], int, tuple[int, ...], str]] = []
    for h in r.hosts:
        if h.state != "ready":
            continue
        per_model: dict[str, list[int]] = {}
        for g in h.gpus:
            if g.mode != "mig":
                per_model.setdefault(g.model, []).append(
                    max(0, 1000 - milli.get((h.name, g.index), 0)))
        for model, frees in per_model.items():
            groups.append(((h.site, model), max(0, h.cpu_milli - cpu.get(h.name, 0)),
                           tuple(sorted(frees)), model))
    totals = {key: 0.0 for key, _, _, _ in groups}
    workload = guarded("typical workload", lambda: _typical(r))
    if workload is not None and len(workload) and groups:
        models = sorted({m for _, _, _, m in groups})
        fm = FragmentationModel(workload, models)
        values = fm.fragment_keys([(c, g, models.index(m)) for _, c, g, m in groups])
        for (key, _, _, _), f in zip(groups, values):
            totals[key] += f / 1000
    for key, v in sorted(totals.items()):
        fam.add_metric(list(key), v)
    return (fam,)


# -- tenants -------------------------------------------------------------------------------------
def _tenants(r: PoolRead) -> Iterable[Any]:
    from gpuplane.control.convert import to_running
    from gpuplane.scheduling.admission.quota import QuotaLedger
    from gpuplane.scheduling.admission.state import running_totals

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
    running = []
    for w in r.active:
        running.extend(guarded("running workload", lambda w=w: to_running([w], r.now), []))
    usage = running_totals(running, q).usage
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
    for w in r.waiting:
        code = w.pending_reason.code if w.pending_reason is not None else NOT_EVALUATED
        v = by.setdefault(code, [0, 0.0])
        v[0] += 1
        v[1] = max(v[1], r.now - w.submitted_at)
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


# -- counters from the store's events -----------------------------------------------------------
class EventCounters:
    """Admissions, preemptions and task failures, counted from the events every leader writes,
    since this process's first scrape: each scrape reads only the events added since the last
    one (by id), so a scrape stays cheap however long the history. The admission wait
    (submission to the ``Admitted`` event) goes into a histogram."""

    def __init__(self) -> None:
        self.last_id: int | None = None
        self.counts: dict[tuple[str, str], int] = {}
        self.wait = [0.0] * (len(WAIT_BUCKETS) + 2)   # per bucket, above the last, sum

    def read(self, tx: Any) -> None:
        from gpuplane.store.tables import EventRow, WorkloadRow

        s = tx.session
        top = s.execute(select(func.max(EventRow.id))).scalar() or 0
        if self.last_id is None:
            self.last_id = top
            return
        rows = s.execute(
            select(EventRow.reason, EventRow.at, WorkloadRow.submitted_at)
            .outerjoin(WorkloadRow, WorkloadRow.pk == EventRow.workload_pk)
            .where(EventRow.id > self.last_id, EventRow.id <= top,
                   EventRow.reason.in_(list(EVENT_COUNTS)),
                   # the workload's phase change to Admitted has the same reason: not counted
                   ~EventRow.message.startswith(PHASE_EVENT))).all()
        self.last_id = top
        for reason, at, submitted in rows:
            key = EVENT_COUNTS[reason]
            self.counts[key] = self.counts.get(key, 0) + 1
            if reason == "Admitted" and submitted is not None:
                wait = max(0.0, at - submitted)
                i = next((k for k, le in enumerate(WAIT_BUCKETS) if wait <= le),
                         len(WAIT_BUCKETS))
                self.wait[i] += 1
                self.wait[-1] += wait

    def families(self) -> Iterable[Any]:
        adm = CounterMetricFamily("gpuplane_admissions", "Workload admissions (events)")
        pre = CounterMetricFamily("gpuplane_preemptions", "Tasks preempted (events)")
        fail = CounterMetricFamily("gpuplane_task_failures",
                                   "Task attempts that ended badly: failed (final), lost, or "
                                   "retrying (failed, retried)", labels=["outcome"])
        adm.add_metric([], self.counts.get(("admissions", ""), 0))
        pre.add_metric([], self.counts.get(("preemptions", ""), 0))
        for outcome in ("failed", "lost", "retrying"):
            fail.add_metric([outcome], self.counts.get(("failures", outcome), 0))
        acc, buckets = 0.0, []
        for le, n in zip((*(str(b) for b in WAIT_BUCKETS), "+Inf"), self.wait[:-1]):
            acc += n
            buckets.append((le, acc))
        wait = HistogramMetricFamily("gpuplane_scheduling_admission_wait_seconds",
                                     "Decision latency: workload submission to admission",
                                     buckets=buckets, sum_value=self.wait[-1])
        return adm, pre, fail, wait


# -- NVML ----------------------------------------------------------------------------------------
class NvmlCollector:
    """Utilisation and memory of this machine's GPUs from NVML; no series where NVML is absent
    (no driver, no library). Labels: GPU index and model (bounded by the hardware)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready: bool | None = None if nvml is None else True

    def _init(self) -> bool:
        if self._ready is None:
            try:
                import pynvml  # nvidia-ml-py

                pynvml.nvmlInit()
                self._nvml, self._ready = pynvml, True
            except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded ...
                self._ready = False
        return bool(self._ready)

    def collect(self) -> Iterable[Any]:
        if not self._init():
            return
        n = self._nvml
        util = GaugeMetricFamily("gpuplane_nvml_gpu_utilization_ratio",
                                 "GPU busy share over NVML's last sample period (0..1)",
                                 labels=["gpu", "model"])
        used = GaugeMetricFamily("gpuplane_nvml_gpu_memory_used_bytes", "GPU memory used",
                                 labels=["gpu", "model"])
        total = GaugeMetricFamily("gpuplane_nvml_gpu_memory_total_bytes", "GPU memory",
                                  labels=["gpu", "model"])
        try:
            for i in range(n.nvmlDeviceGetCount()):
                h = n.nvmlDeviceGetHandleByIndex(i)
                name = n.nvmlDeviceGetName(h)
                lv = [str(i), name.decode() if isinstance(name, bytes) else str(name)]
                mem = n.nvmlDeviceGetMemoryInfo(h)
                used.add_metric(lv, mem.used)
                total.add_metric(lv, mem.total)
                rates = guarded("NVML utilisation", lambda h=h: n.nvmlDeviceGetUtilizationRates(h))
                if rates is not None:  # MIG mode: not supported on the parent GPU
                    util.add_metric(lv, rates.gpu / 100)
        except Exception as exc:  # noqa: BLE001 - a GPU fell off the bus: skip this scrape
            log.debug("metrics: NVML read failed: %s", exc)
            return
        yield from (util, used, total)
