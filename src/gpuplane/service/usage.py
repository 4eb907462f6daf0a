"""Accounting views: resource-time per project (finished attempts + running ones so far), and
the chargeback (``governance/accounting.py`` says what is charged and how it reconciles)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from gpuplane.domain.errors import FieldError, InvalidInput, NotFound
from gpuplane.domain.workloads import Phase
from gpuplane.governance import chargeback as report
from gpuplane.governance import focus
from gpuplane.governance.accounting import (BY, SPREAD, CostModel, HostCapacity, Interval,
                                            Tenant, chargeback, cost_class, gpu_shares,
                                            lost_window_start)
from gpuplane.service.authz import Principal, visible_project_ids
from gpuplane.service.base import ServiceBase
from gpuplane.service.lifecycle import usage_placement

FORMATS = ("json", "csv", "focus")


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


    def chargeback(self, principal: Principal, by: str = "project", since: float | None = None,
                   until: float | None = None, spread: str = "off", fmt: str = "json",
                   ) -> dict[str, Any] | str:
        """The chargeback of [since, until) (default: the UTC calendar month up to now), charged
        up to ``min(until, now)``: a dict (``fmt`` json) or CSV text (``csv``: the grouped rows;
        ``focus``: FOCUS-style rows). Everyone sees the rows of the projects where they may
        read usage; per-host capacity, idle, fragmented and remaining idle only global
        operators, admins and auditors. Read-only; raises InvalidInput naming the field."""
        now = self.now()
        errors = [FieldError(name, f"must be one of {', '.join(allowed)}, not {value!r}")
                  for name, value, allowed in (("by", by, BY), ("spread", spread, SPREAD),
                                               ("format", fmt, FORMATS)) if value not in allowed]
        requested_end = now if until is None else until
        since = month_start(requested_end) if since is None else since
        if since >= requested_end:
            errors.append(FieldError("since", f"must be before until ({since:g} >= "
                                              f"{requested_end:g})"))
        if errors:
            raise InvalidInput("invalid chargeback request: "
                               + "; ".join(f"{e.loc} {e.msg}" for e in errors), errors)
        end = max(since, min(requested_end, now))
        global_view = principal.is_global("usage.read") and (
            principal.is_global("inventory.write") or principal.is_global("audit.read"))
        with self.store.read() as tx:
            ids = visible_project_ids(principal, "usage.read", tx)
            projects = {p.id: p for p in tx.projects.list().items}
            hosts = {h.name: h for h in tx.hosts.list_all()}
            rows = tx.usage.list(None, since, end)
            active = [t for t in tx.tasks.list_active() if t.phase is Phase.RUNNING
                      and t.started_at is not None and t.placement is not None]
            active_wl = {w.id: w for w in tx.workloads.list_active()}
            submitters = {w.id: w.submitted_by for w in active_wl.values()}
            for uid in {r.workload_uid for r in rows} - set(submitters):
                try:
                    submitters[uid] = tx.workloads.get(uid).submitted_by
                except NotFound:
                    submitters[uid] = "unknown"
            doc = tx.policy_docs.get("cost-model")
        warnings: list[str] = []
        model = None
        if doc is not None:
            try:
                model = CostModel.model_validate(dict(doc.data))
            except ValidationError as exc:
                warnings.append(f"the stored cost-model policy does not parse ({exc.error_count()}"
                                " problem(s)); costs are 0 until a global admin sets it again")
        capacities = [host_capacity(h) for h in hosts.values()]
        intervals, legacy = [], 0
        for r in rows:
            p = projects.get(r.project_id)
            tenant = Tenant(p.org if p else "", p.name if p else f"project-{r.project_id}",
                            submitters.get(r.workload_uid, "unknown"))
            models = {g.index: g.model for g in hosts[r.host].gpus} if r.host in hosts else {}
            legacy += r.placement is None and r.gpu_milli > 0
            intervals.append(Interval(
                r.host, tenant, r.started_at, r.finished_at,
                gpu_shares(r.placement, r.gpu_milli, models), r.cpu_milli, r.memory_mib,
                lost_window_start(r.started_at, r.finished_at, r.lost_gpu_s, r.gpu_milli),
                r.simulated, r.gpu_model))
        for t in active:
            wl = active_wl.get(t.workload_id)
            if wl is None:
                continue
            h = hosts.get(t.placement.host)
            models = {g.index: g.model for g in h.gpus} if h else {}
            intervals.append(Interval(
                t.placement.host, Tenant(wl.org, wl.project, wl.submitted_by), t.started_at,
                end, gpu_shares(usage_placement(t.placement), t.placement.total_milli, models),
                t.cpu_milli, t.memory_mib, None, t.simulated))
        if legacy:
            warnings.append(f"{legacy} usage record(s) from before placements were recorded: "
                            "their GPUs are not known, so they take idle capacity of their host")
        ledger = chargeback(intervals, capacities, [(since, end)], model, spread)
        ledger.warnings[:0] = warnings
        visible = None if ids is None else {projects[i].name for i in ids if i in projects}
        if fmt == "focus":
            return focus.focus_csv(ledger, (since, requested_end), spread, visible, global_view)
        if fmt == "csv":
            return report.rows_csv(report.group(ledger, by, visible))
        return report.report(ledger, by, spread, (since, end), requested_end, visible,
                             global_view)


def month_start(t: float) -> float:
    """Start of the UTC calendar month before ``t`` (``t`` itself excluded)."""
    d = datetime.fromtimestamp(max(0.0, t - 1e-6), UTC)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def host_capacity(h) -> HostCapacity:  # noqa: ANN001 - a store HostRecord
    gpus = sorted(h.gpus, key=lambda g: g.index)
    return HostCapacity(h.name, {g.index: g.model for g in gpus}, h.cpu_milli, h.memory_mib,
                        h.created_at, h.site, h.jurisdiction,
                        cost_class(h.labels, [g.model for g in gpus]), h.simulated)


def _empty(name: str) -> dict:
    def block() -> dict:
        return {"gpu_hours": 0.0, "cpu_core_hours": 0.0, "memory_gib_hours": 0.0,
                "lost_gpu_hours": 0.0,
                "gpu_hours_by_model": defaultdict(float)}
    return {"project": name, "real": block(), "simulated": block(),
            "now": {"tasks": 0, "gpus": 0.0, "cpu_cores": 0.0, "memory_mib": 0}}
