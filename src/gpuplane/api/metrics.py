"""Prometheus metrics at /metrics: request counts/latency plus collectors read at scrape time.

Each app has its own ``CollectorRegistry`` (several apps in one test process never clash).
``StoreCollector`` reads the store in one read transaction per scrape: workloads by phase,
tasks holding resources, GPUs registered and allocated, hosts by state, and the pool's series
(``metrics_pool.py``: capacity by site/model/mode, fragmentation, per-tenant quota use, queue
by pending reason, attestation expiry) and the admission/preemption/failure counters
(``EventCounters``). Tenant labels
are organisation and project names; no label names a task or a workload.
Where the control loop runs in this process, ``LoopCollector`` adds what it contained
(``gpuplane_loop_task_failures_total{stage}``, ``gpuplane_loop_step_failures_total{step}``,
``gpuplane_loop_hosts_quarantined{host}``) and its timings (tick, scheduling cycle and step
histograms, last tick time). ``NvmlCollector`` adds this machine's GPU utilisation and memory
where NVML answers. docs/observability.md lists every series.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from gpuplane.api.metrics_pool import guarded, pool_families, read_pool
from gpuplane.control.containment import DURATION_BUCKETS

log = logging.getLogger("gpuplane.metrics")

#: event reason -> (counter, label value): what the store's events count (``EventCounters``)
EVENT_COUNTS = {"Admitted": ("admissions", ""), "Preempted": ("preemptions", ""),
                "TaskFailed": ("failures", "failed"), "TaskLost": ("failures", "lost"),
                "Retrying": ("failures", "retrying")}
#: how the message of a workload phase event starts (``service/lifecycle.py``)
PHASE_EVENT = "workload is "
#: upper bounds (seconds) of the admission wait histogram
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0,
                12 * 3600.0, 24 * 3600.0)


class StoreCollector:
    """Everything read from the store, in one read transaction per scrape: the series below and
    the pool's (``metrics_pool.py``). A database that does not answer leaves them out; the
    scrape still succeeds."""

    def __init__(self, store, clock: Callable[[], float] = time.time  # noqa: ANN001
                 ) -> None:
        self.store = store
        self.clock = clock
        self.events = EventCounters()

    def collect(self):  # noqa: ANN201
        phases = GaugeMetricFamily("gpuplane_workloads", "Workloads by phase", labels=["phase"])
        hosts = GaugeMetricFamily("gpuplane_hosts", "Hosts by state",
                                  labels=["state", "simulated"])
        gpus = GaugeMetricFamily("gpuplane_gpus", "GPUs registered", labels=["model"])
        alloc = GaugeMetricFamily("gpuplane_gpus_allocated",
                                  "GPUs allocated to Admitted/Running tasks (fractional)")
        tasks = GaugeMetricFamily("gpuplane_tasks_active", "Tasks holding resources")
        now = self.clock()
        try:
            with self.store.read() as tx:
                by_phase = tx.workloads.count_by_phase()
                pool = read_pool(tx, now)
                events_ok = guarded("events", lambda: self.events.read(tx) or True, False)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB blinked
            return
        for phase in ("Pending", "Admitted", "Running", "Succeeded", "Failed", "Cancelled",
                      "Lost"):
            phases.add_metric([phase], by_phase.get(phase, 0))
        for (state, sim), n in sorted(pool.hosts.items()):
            hosts.add_metric([state, sim], n)
        for model, n in sorted(pool.models.items()):
            gpus.add_metric([model], n)
        alloc.add_metric([], pool.allocated)
        tasks.add_metric([], pool.tasks_active)
        yield from (phases, hosts, gpus, alloc, tasks)
        for fam in guarded("pool series", lambda: list(pool_families(pool)), []):
            yield fam
        if events_ok:
            yield from self.events.families()


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


class LoopCollector:
    """The control loop's contained failures and timings, read at scrape time from its
    ``LoopStats`` (``read()`` -> (failures by stage, step failures by step, quarantined hosts);
    ``durations()`` -> (histograms by name, end of the last tick))."""

    def __init__(self, stats) -> None:  # noqa: ANN001
        self.stats = stats

    def collect(self):  # noqa: ANN201
        failures, steps, quarantined = self.stats.read()
        if hasattr(self.stats, "durations"):  # every step timed so far counts, from 0
            steps = {**{k: 0 for k in self.stats.durations()[0] if k != "tick"}, **steps}
        tasks = CounterMetricFamily(
            "gpuplane_loop_task_failures",
            "Failures the control loop contained to one task or host, by stage "
            "(launch, observe, stop, snapshot)", labels=["stage"])
        for stage, n in sorted(failures.items()):
            tasks.add_metric([stage], n)
        whole = CounterMetricFamily("gpuplane_loop_step_failures",
                                    "Control loop steps that failed as a whole (the others ran)",
                                    labels=["step"])
        for step, n in sorted(steps.items()):
            whole.add_metric([step], n)
        hosts = GaugeMetricFamily("gpuplane_loop_hosts_quarantined",
                                  "Hosts taking no new tasks because their running tasks do not "
                                  "fit them (1 per quarantined host)", labels=["host"])
        for host in sorted(quarantined):
            hosts.add_metric([host], 1)
        yield from (tasks, whole, hosts)
        if hasattr(self.stats, "durations"):
            yield from self._timings()

    def _timings(self):  # noqa: ANN202
        durations, last_tick = self.stats.durations()
        empty = ([(le, 0.0) for le in (*(str(b) for b in DURATION_BUCKETS), "+Inf")], 0.0)
        tick = durations.get("tick", empty)
        yield HistogramMetricFamily("gpuplane_loop_tick_seconds",
                                    "Duration of the control loop's ticks (leader only)",
                                    buckets=tick[0], sum_value=tick[1])
        cycle = durations.get("schedule", empty)
        yield HistogramMetricFamily("gpuplane_scheduling_cycle_seconds",
                                    "Duration of the scheduling cycle (snapshot, decide, apply)",
                                    buckets=cycle[0], sum_value=cycle[1])
        per_step = HistogramMetricFamily("gpuplane_loop_step_seconds",
                                         "Duration of each control loop step", labels=["step"])
        for name, (buckets, total) in sorted(durations.items()):
            if name != "tick":
                per_step.add_metric([name], buckets, total)
        yield per_step
        if last_tick is not None:
            last = GaugeMetricFamily("gpuplane_loop_last_tick_timestamp_seconds",
                                     "When this process last finished a tick as the leader "
                                     "(Unix time)")
            last.add_metric([], last_tick)
            yield last


class Metrics:
    def __init__(self, store, loop_stats=None) -> None:  # noqa: ANN001
        self.registry = CollectorRegistry()
        self.requests = Counter("gpuplane_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("gpuplane_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry)
        self.registry.register(StoreCollector(store))
        self.registry.register(NvmlCollector())
        if loop_stats is not None:
            self.registry.register(LoopCollector(loop_stats))


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def _send(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], path).observe(
                time.perf_counter() - start)


_TENANT_SAMPLE = re.compile(rb'^gpuplane_tenant_\w+\{[^}]*\bproject="([^"]*)"')


def tenant_series_only(text: bytes, projects: set[str]) -> bytes:
    """``text`` (Prometheus exposition) without the samples of ``gpuplane_tenant_*`` series
    whose ``project`` label is not in ``projects`` (their HELP and TYPE lines stay)."""
    keep = {p.encode() for p in projects}
    out = []
    for line in text.splitlines(keepends=True):
        m = _TENANT_SAMPLE.match(line)
        if m is None or m.group(1) in keep:
            out.append(line)
    return b"".join(out)
