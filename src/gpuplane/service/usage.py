"""Accounting views: resource-time per project (finished attempts + running ones so far)."""

from __future__ import annotations

from collections import defaultdict

from gpuplane.domain.workloads import Phase
from gpuplane.service.authz import Principal, visible_project_ids
from gpuplane.service.base import ServiceBase


class UsageService(ServiceBase):
    def usage(self, principal: Principal, project: str | None = None,
              since: float | None = None, until: float | None = None) -> list[dict]:
        """Per visible project: GPU-, CPU-core- and memory-GiB-hours in [since, until] (clipped),
        by GPU model, real and simulated apart, plus what it holds right now.
        ``lost_gpu_hours``: GPU-time of preempted attempts since their last checkpoint (or
        start), i.e. work that must be redone (attempts that ended in [since, until])."""
        now = self.now()
        until = now if until is None else until
        with self.store.read() as tx:
            ids = visible_project_ids(principal, "usage.read", tx)
            if project is not None:
                from gpuplane.service.workloads import WorkloadService

                p = WorkloadService._project(self, tx, principal, project, "usage.read")  # noqa: SLF001
                ids = {p.id}
            projects = {p.id: p for p in tx.projects.list(only_ids=ids).items}
            rows = tx.usage.list(projects.keys(), since, until)
            active = tx.tasks.list_active()
            active_wl = {w.id: w for w in tx.workloads.list_active()}
        acc: dict[int, dict] = {pid: _empty(p.name) for pid, p in projects.items()}

        def add(pid: int, model: str | None, simulated: bool, gpu_milli: int, cpu_milli: int,
                mem: int, start: float, end: float) -> None:
            lo = start if since is None else max(start, since)
            hi = min(end, until)
            if hi <= lo or pid not in acc:
                return
            hours = (hi - lo) / 3600.0
            key = "simulated" if simulated else "real"
            a = acc[pid][key]
            a["gpu_hours"] += gpu_milli / 1000 * hours
            a["cpu_core_hours"] += cpu_milli / 1000 * hours
            a["memory_gib_hours"] += mem / 1024 * hours
            if gpu_milli:
                a["gpu_hours_by_model"][model or "unknown"] += gpu_milli / 1000 * hours

        for r in rows:
            if r.lost_gpu_s and r.project_id in acc and (since is None or r.finished_at >= since) \
                    and r.finished_at <= until:
                acc[r.project_id]["simulated" if r.simulated else "real"]["lost_gpu_hours"] += \
                    r.lost_gpu_s / 3600.0
            add(r.project_id, r.gpu_model, r.simulated, r.gpu_milli, r.cpu_milli, r.memory_mib,
                r.started_at, r.finished_at)
        name_to_id = {p.name: pid for pid, p in projects.items()}
        for t in active:
            wl = active_wl.get(t.workload_id)
            if wl is None or wl.project not in name_to_id or t.placement is None:
                continue
            pid = name_to_id[wl.project]
            gpu_milli = t.placement.total_milli
            now_acc = acc[pid]["now"]
            now_acc["tasks"] += 1
            now_acc["gpus"] += gpu_milli / 1000
            now_acc["cpu_cores"] += t.cpu_milli / 1000
            now_acc["memory_mib"] += t.memory_mib
            if t.phase is Phase.RUNNING and t.started_at is not None:
                add(pid, None, t.simulated, gpu_milli, t.cpu_milli, t.memory_mib, t.started_at,
                    now)
        out = []
        for pid in sorted(acc):
            a = acc[pid]
            for key in ("real", "simulated"):
                a[key]["gpu_hours_by_model"] = {k: round(v, 6) for k, v in
                                                sorted(a[key]["gpu_hours_by_model"].items())}
                for f in ("gpu_hours", "cpu_core_hours", "memory_gib_hours", "lost_gpu_hours"):
                    a[key][f] = round(a[key][f], 6)
            out.append(a)
        return out


def _empty(name: str) -> dict:
    def block() -> dict:
        return {"gpu_hours": 0.0, "cpu_core_hours": 0.0, "memory_gib_hours": 0.0,
                "lost_gpu_hours": 0.0,
                "gpu_hours_by_model": defaultdict(float)}
    return {"project": name, "real": block(), "simulated": block(),
            "now": {"tasks": 0, "gpus": 0.0, "cpu_cores": 0.0, "memory_mib": 0}}
