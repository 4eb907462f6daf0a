"""Prometheus metrics at /metrics: request counts/latency plus a store-backed collector.

Each app has its own ``CollectorRegistry`` (several apps in one test process never clash).
The collector reads the store at scrape time: workloads by phase, tasks holding resources,
GPUs registered and allocated (milli-GPU sum), hosts by state. No tenant names are exposed.
Where the control loop runs in this process, ``LoopCollector`` adds what it contained
(``gpuplane_loop_task_failures_total{stage}``, ``gpuplane_loop_step_failures_total{step}``,
``gpuplane_loop_hosts_quarantined{host}``).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send


class StoreCollector:
    def __init__(self, store) -> None:  # noqa: ANN001
        self.store = store

    def collect(self):  # noqa: ANN201
        phases = GaugeMetricFamily("gpuplane_workloads", "Workloads by phase", labels=["phase"])
        hosts = GaugeMetricFamily("gpuplane_hosts", "Hosts by state", labels=["state", "simulated"])
        gpus = GaugeMetricFamily("gpuplane_gpus", "GPUs registered", labels=["model"])
        alloc = GaugeMetricFamily("gpuplane_gpus_allocated",
                                  "GPUs allocated to Admitted/Running tasks (fractional)")
        tasks = GaugeMetricFamily("gpuplane_tasks_active", "Tasks holding resources")
        try:
            with self.store.read() as tx:
                by_phase = tx.workloads.count_by_phase()
                host_list = tx.hosts.list_all()
                active = tx.tasks.list_active()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB blinked
            return
        for phase in ("Pending", "Admitted", "Running", "Succeeded", "Failed", "Cancelled", "Lost"):
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


class LoopCollector:
    """The control loop's contained failures, read at scrape time from its ``LoopStats``
    (duck-typed: ``read()`` -> (failures by stage, step failures by step, quarantined hosts))."""

    def __init__(self, stats) -> None:  # noqa: ANN001
        self.stats = stats

    def collect(self):  # noqa: ANN201
        failures, steps, quarantined = self.stats.read()
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


class Metrics:
    def __init__(self, store, loop_stats=None) -> None:  # noqa: ANN001
        self.registry = CollectorRegistry()
        self.requests = Counter("gpuplane_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("gpuplane_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry)
        self.registry.register(StoreCollector(store))
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
