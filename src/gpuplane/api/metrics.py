"""Prometheus metrics at /metrics: request counts/latency plus collectors read at scrape time.

Each app has its own ``CollectorRegistry`` (several apps in one test process never clash).
``StoreCollector`` reads the store in one read transaction per scrape: workloads by phase,
tasks holding resources, GPUs registered and allocated, hosts by state, and the pool's series
(``metrics_pool.py``: capacity by site/model/mode, fragmentation, per-tenant quota use, queue
by pending reason, attestation expiry, admission/preemption/failure counters). Tenant labels
are organisation and project names; no label names a task or a workload.
Where the control loop runs in this process, ``LoopCollector`` adds what it contained
(``gpuplane_loop_task_failures_total{stage}``, ``gpuplane_loop_step_failures_total{step}``,
``gpuplane_loop_hosts_quarantined{host}``) and its timings (tick, scheduling cycle and step
histograms, last tick time). ``NvmlCollector`` adds this machine's GPU utilisation and memory
where NVML answers. docs/observability.md lists every series.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send

from gpuplane.api.metrics_pool import (EventCounters, NvmlCollector, guarded, pool_families,
                                       read_pool)
from gpuplane.control.containment import DURATION_BUCKETS


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
                host_list = tx.hosts.list_all()
                active_workloads = tx.workloads.list_active()
                pool = read_pool(tx, now, host_list, active_workloads)
                events_ok = guarded("events", lambda: self.events.read(tx) or True, False)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB blinked
            return
        active = [t for w in active_workloads for t in w.tasks if t.phase.holds_resources]
        for phase in ("Pending", "Admitted", "Running", "Succeeded", "Failed", "Cancelled",
                      "Lost"):
            phases.add_metric([phase], by_phase.get(phase, 0))
        counts: dict[tuple[str, str], int] = {}
        models: dict[str, int] = {}
        for h in host_list:
            key = (h.state, str(h.simulated).lower())
            counts[key] = counts.get(key, 0) + 1
            for g in h.gpus:
                models[g.model] = models.get(g.model, 0) + 1
        for (state, sim), n in sorted(counts.items()):
            hosts.add_metric([state, sim], n)
        for model, n in sorted(models.items()):
            gpus.add_metric([model], n)
        alloc.add_metric([], sum(t.placement.total_milli / 1000 for t in active if t.placement))
        tasks.add_metric([], len(active))
        yield from (phases, hosts, gpus, alloc, tasks)
        for fam in guarded("pool series", lambda: list(pool_families(pool)), []):
            yield fam
        if events_ok:
            yield from self.events.families()


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
