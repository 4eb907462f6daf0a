"""Prometheus metrics at /metrics: request counts/latency plus a store-backed collector.

Each app has its own ``CollectorRegistry`` (several apps in one test process never clash).
The collector reads the store at scrape time: workloads by phase, tasks holding resources,
GPUs registered and allocated (milli-GPU sum), hosts by state. No tenant names are exposed.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
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


class Metrics:
    def __init__(self, store) -> None:  # noqa: ANN001
        self.registry = CollectorRegistry()
        self.requests = Counter("gpuplane_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("gpuplane_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry)
        self.registry.register(StoreCollector(store))


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
