"""Store records -> the scheduling layer's inputs (hosts, task requests, pending/running work,
quotas), with the policy labels and taints the cycle filters on.

The control loop reads the store in one short transaction and converts here (``load_quotas``
reads through the caller's transaction); nothing here writes, calls a driver or reads a clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gpuplane.domain.inventory import GpuDevice, Host, Taint
from gpuplane.domain.requests import Placement, TaskRequest, Toleration
from gpuplane.domain.workloads import Phase, Task, TaskGroup, TaskPlacement, Workload
from gpuplane.scheduling.queueing import PendingWorkload, RunningTask, task_units

#: Labels every host carries so selectors can tell real from simulated capacity.
LABEL_DRIVER = "gpuplane.io/driver"
LABEL_SIMULATED = "gpuplane.io/simulated"
LABEL_SITE = "gpuplane.io/site"
LABEL_JURISDICTION = "gpuplane.io/jurisdiction"
#: ``gpuplane.io/in.EU`` and ``gpuplane.io/in.EU/DE`` = "true" on a host in EU/DE: residency
#: constraints become label selectors the placement filters already enforce.
LABEL_IN = "gpuplane.io/in."
LABEL_CONFIDENTIAL = "gpuplane.io/confidential"
UNSCHEDULABLE_TAINT = "gpuplane.io/unschedulable"
#: Taint on a quarantined host (its running tasks hold more than it has, or cannot be read):
#: it keeps its tasks and takes no new one (see ``build_snapshot``).
QUARANTINE_TAINT = "gpuplane.io/quarantined"


def _mig_layout(model: str, raw: Sequence[Mapping[str, Any]] | None) -> Any:
    from gpuplane.domain.mig import MigInstance, MigLayout

    instances = tuple(MigInstance(start=int(i["start"]), profile=str(i["profile"]))
                      for i in raw or ())
    return MigLayout(model=model, instances=instances)


def to_host(rec: Any, attested: Collection[str] = ()) -> Host:
    """A store ``HostRecord`` -> domain ``Host`` (labels gain driver/site markers, and the
    confidential label when the host is in ``attested``: its appraisals pass now)."""
    gpus = tuple(
        GpuDevice(index=g.index, model=g.model, memory_mib=g.memory_mib, numa=g.numa,
                  nvlink_domain=g.nvlink_domain, mode=g.mode,
                  mig_layout=_mig_layout(g.model, g.mig_layout) if g.mode == "mig" else None)
        for g in rec.gpus)
    labels = dict(rec.labels)
    labels.setdefault(LABEL_DRIVER, rec.driver)
    labels.setdefault(LABEL_SIMULATED, "true" if rec.simulated else "false")
    labels.setdefault(LABEL_SITE, rec.site)
    labels.setdefault(LABEL_JURISDICTION, rec.jurisdiction)
    parts = [p for p in rec.jurisdiction.split("/") if p]
    for i in range(len(parts)):
        labels[LABEL_IN + "/".join(parts[:i + 1])] = "true"
    labels.pop(LABEL_CONFIDENTIAL, None)  # never taken from a host's own labels
    if rec.name in attested:
        labels[LABEL_CONFIDENTIAL] = "true"
    taints = tuple(Taint(key=t["key"], value=t.get("value", "") or "",
                         effect=t.get("effect", "NoSchedule") or "NoSchedule")
                   for t in rec.taints)
    return Host(name=rec.name, cpu_milli=rec.cpu_milli, memory_mib=rec.memory_mib, gpus=gpus,
                site=rec.site, jurisdiction=rec.jurisdiction, rack=rec.rack, labels=labels,
                taints=taints, tee=rec.tee)


def group_of(workload: Workload, task: Task) -> TaskGroup:
    for g in workload.spec.tasks:
        if g.name == task.group:
            return g
    return workload.spec.tasks[0]


def policy_selector(workload: Workload, jurisdiction: str | None = None) -> dict[str, str]:
    """Labels a host must carry for ``workload``'s policies (DESIGN invariant 4): one allowed
    jurisdiction (``jurisdiction``, chosen by the caller among the allowed ones) and, for a
    confidential workload, a TEE-capable host."""
    sel = {}
    if jurisdiction:
        sel[LABEL_IN + jurisdiction] = "true"
    if workload.spec.confidential:
        sel[LABEL_CONFIDENTIAL] = "true"
    return sel


def to_request(workload: Workload, task: Task, jurisdiction: str | None = None) -> TaskRequest:
    group = group_of(workload, task)
    tolerations = tuple(Toleration(key=t.key, operator="Equal" if t.value else "Exists",
                                   value=t.value or "") for t in group.tolerations)
    return TaskRequest(cpu_milli=task.cpu_milli, memory_mib=task.memory_mib, gpus=task.gpus,
                       gpu_milli=task.gpu_milli if task.gpus else 1000,
                       mig_profile=task.mig_profile, gpu_models=frozenset(task.gpu_models),
                       selector={**group.selector, **policy_selector(workload, jurisdiction)},
                       tolerations=tolerations)


def to_placement(p: TaskPlacement) -> Placement:
    from gpuplane.domain.mig import MigInstanceRef

    migs = tuple(MigInstanceRef(gpu_index=int(m["gpu_index"]), profile=str(m["profile"]),
                                start=int(m["start"]), created=bool(m.get("created", False)),
                                reclaims=tuple(int(r) for r in m.get("reclaims", ()) or ()))
                 for m in p.mig)
    return Placement(host=p.host, gpu_indices=p.gpu_indices, gpu_milli=p.gpu_milli, mig=migs)


def from_placement(p: Placement, borrowed: bool = False) -> TaskPlacement:
    return TaskPlacement(host=p.host, gpu_indices=tuple(p.gpu_indices), gpu_milli=p.gpu_milli,
                         mig=tuple(asdict(m) if hasattr(m, "__dataclass_fields__") else dict(m)
                                   for m in p.mig), borrowed=borrowed)


@dataclass(frozen=True)
class PendingItem:
    """A schedulable workload and the ids of its tasks that wait (same order as ``work.tasks``)."""

    work: PendingWorkload
    task_ids: tuple[int, ...]
    generation: int


def to_pending(workload: Workload, now: float,
               jurisdiction: str | None = None) -> PendingItem | None:
    """The waiting part of ``workload``; ``jurisdiction`` is the allowed one to place it in."""
    waiting = [t for t in workload.tasks if t.phase.value == "Pending"
               and (t.not_before is None or t.not_before <= now)]
    if not waiting:
        return None
    spec = workload.spec
    work = PendingWorkload(
        id=workload.id, project=workload.project,
        tasks=[to_request(workload, t, jurisdiction) for t in waiting], priority=workload.priority,
        submitted_at=workload.submitted_at, gang=spec.gang,
        topology=spec.topology.level if spec.topology else None,
        topology_required=(spec.topology.mode == "required") if spec.topology else True,
        preemptible=workload.preemptible, expected_duration=spec.max_runtime_s)
    return PendingItem(work, tuple(t.id for t in waiting), workload.generation)


def to_running(workloads: Iterable[Workload], now: float | None = None) -> list[RunningTask]:
    """Tasks holding resources, as the cycle sees them. A task already being preempted (in its
    grace period) is ``stopping`` and counts as checkpointed ``now``: stopping it costs nothing
    more, so a cycle that still needs its resources picks it again before any further victim
    (also before one that just checkpointed: both would lose nothing)."""
    out = []
    for w in workloads:
        for t in w.tasks:
            if t.phase.holds_resources and t.placement is not None:
                stopping = (now is not None and t.reason == "Preempted"
                            and t.phase is Phase.RUNNING)
                out.append(RunningTask(
                    id=str(t.id), workload_id=w.id, project=w.project,
                    task=to_request(w, t),
                    placement=to_placement(t.placement), started_at=t.started_at or w.submitted_at,
                    priority=w.priority, preemptible=w.preemptible,
                    checkpointed_at=now if stopping else _checkpoint(t),
                    expected_end=((t.started_at or 0) + w.spec.max_runtime_s
                                  if w.spec.max_runtime_s and t.started_at else None),
                    stopping=stopping, borrowed=t.placement.borrowed))
    return out


def holdings(workloads: Iterable[Workload]) -> dict[str, tuple[float, float, float]]:
    """What each project holds now, as fair share counts it: (milli-GPU, milli-CPU, MiB) of
    its tasks holding resources. A task that cannot be read counts nothing."""
    out: dict[str, list[float]] = {}
    for w in workloads:
        for t in w.tasks:
            if not t.phase.holds_resources:
                continue
            try:
                units = float(task_units(t))
            except Exception:  # noqa: BLE001 - counted by build_snapshot's containment
                continue
            v = out.setdefault(w.project, [0.0, 0.0, 0.0])
            v[0] += units
            v[1] += t.cpu_milli
            v[2] += t.memory_mib
    return {p: (v[0], v[1], v[2]) for p, v in out.items()}


def _checkpoint(t: Task) -> float | None:
    """The task's last checkpoint if it belongs to the current attempt (after its start)."""
    if t.checkpointed_at is None or t.started_at is None or t.checkpointed_at < t.started_at:
        return None
    return t.checkpointed_at


def mig_as_now(hosts: Sequence[Host], running: Sequence[RunningTask]
               ) -> tuple[list[Host], list[RunningTask]]:
    """Hosts and running tasks as the snapshot must see MIG (docs/mig.md, live loop): each MIG
    GPU's layout as it is now, and the running tasks' MIG entries as plain reuse
    (``created=False, reclaims=()``) of the instances they hold.

    The layout now is the stored (registered) one where, for every instance a running task
    holds, idle instances overlapping it are dropped and the instance is added if missing.
    The stored placements keep what was decided (created / reclaims) for the drivers; replaying
    those against the stored layout would fail, and stop all scheduling, as soon as that
    layout changed under running tasks (a host re-registered or updated)."""
    held: dict[tuple[str, int], list[Any]] = {}
    for r in running:
        for m in r.placement.mig:
            held.setdefault((r.placement.host, m.gpu_index), []).append(m)
    if not held:
        return list(hosts), list(running)
    out_hosts = []
    for h in hosts:
        gpus = tuple(dataclasses.replace(g, mig_layout=_layout_now(g.mig_layout, refs))
                     if g.mig_layout is not None and (refs := held.get((h.name, g.index)))
                     else g for g in h.gpus)
        out_hosts.append(h if gpus == h.gpus else dataclasses.replace(h, gpus=gpus))
    out_running = [r if not r.placement.mig else dataclasses.replace(
        r, placement=dataclasses.replace(r.placement, mig=tuple(
            dataclasses.replace(m, created=False, reclaims=()) for m in r.placement.mig)))
        for r in running]
    return out_hosts, out_running


def _layout_now(layout: Any, refs: Sequence[Any]) -> Any:
    from gpuplane.domain.mig import MigInstance, MigLayout
    from gpuplane.domain.mig_profiles import get_profile

    def mask(profile: str, start: int) -> int:
        return get_profile(layout.model, profile).mask(start)

    kept = [MigInstance(i.start, i.profile) for i in layout.instances]
    claimed: set[int] = set()
    for ref in refs:
        name = get_profile(layout.model, ref.profile).name
        if not any(i.start == ref.start and i.profile == name for i in kept):
            need = mask(name, ref.start)
            kept = [i for i in kept if i.start in claimed or not mask(i.profile, i.start) & need]
            kept.append(MigInstance(ref.start, name))
        claimed.add(ref.start)
    return MigLayout(model=layout.model, instances=tuple(kept))


def choose_jurisdiction(allowed: Sequence[str] | None, free_by_jurisdiction: Mapping[str, int]
                        ) -> str | None:
    """Among the ``allowed`` jurisdictions (what residency allows a workload: its own and its
    classification's), the one with the most free GPU capacity (``free_by_jurisdiction`` maps
    full jurisdictions such as ``EU/DE`` to free milli-GPU). ``None`` when it may go anywhere."""
    if not allowed:
        return None
    if len(allowed) == 1:
        return allowed[0]

    def free(j: str) -> int:
        return sum(v for k, v in free_by_jurisdiction.items() if k == j or k.startswith(j + "/"))

    return max(allowed, key=lambda j: (free(j), -allowed.index(j)))


def load_quotas(tx: Any) -> Any:
    """The tenancy configuration the cycle needs, as a ``QuotaTree`` (quotas enforced only
    when at least one GPU quota is defined)."""
    from gpuplane.domain.tenancy import (DEFAULT_FLAVOR, FlavorQuota, Organisation,
                                         PriorityClass, Project, QuotaTree)

    quotas = [q for q in tx.quotas.list_all() if q.resource == "gpu"]
    per_project: dict[str, dict[str, FlavorQuota]] = {}
    for q in quotas:
        flavor = DEFAULT_FLAVOR if q.flavor in ("*", "") else q.flavor
        per_project.setdefault(q.project, {})[flavor] = FlavorQuota(
            q.guaranteed_milli, q.borrowing_limit_milli, q.lending_limit_milli)
    projects = [Project(p.name, organisation=p.org, cohort=p.cohort, weight=p.weight,
                        quotas=per_project.get(p.name, {}))
                for p in tx.projects.list().items]
    orgs = {p.organisation for p in projects}
    classes = [PriorityClass(c.name, c.value, c.preemptible) for c in tx.priorities.list().items]
    kwargs: dict[str, Any] = {"enforce": bool(quotas)}
    if classes:
        kwargs["priority_classes"] = classes
    return QuotaTree(projects, [Organisation(o) for o in sorted(orgs)], **kwargs)


def schedulable_view(hosts: Sequence[Host], records: Sequence[Any]) -> list[Host]:
    """Hosts as the cycle sees them: cordoned, draining or down hosts keep their running tasks
    but get a ``NoSchedule`` taint nothing tolerates, so no new task lands there."""
    out = []
    for host, rec in zip(hosts, records):
        if rec.schedulable:
            out.append(host)
        else:
            out.append(dataclasses.replace(host, taints=(*host.taints, Taint(
                UNSCHEDULABLE_TAINT, rec.state, "NoSchedule"))))
    return out


def free_gpu_by_jurisdiction(snap: Any, records: Sequence[Any],
                             skip: Iterable[str] = ()) -> dict[str, int]:
    """Free milli-GPU per jurisdiction over schedulable hosts (where residency-bound work that
    may go to several jurisdictions is tried); hosts named in ``skip`` (quarantined) count
    for nothing."""
    import numpy as np

    skipped = set(skip)
    free = np.clip(snap.gpu_free, 0, None).sum(axis=1) if snap.gpu_free.size else None
    out: dict[str, int] = {}
    for i, rec in enumerate(records):
        if rec.schedulable and free is not None and rec.name not in skipped:
            out[rec.jurisdiction] = out.get(rec.jurisdiction, 0) + int(free[i])
    return out


# -- the cycle's snapshot, contained per host ---------------------------------------------------
@dataclass
class SnapshotBuild:
    """What ``build_snapshot`` made of the store: the snapshot, the running tasks booked in it,
    the host records in snapshot order, and the hosts it quarantined with why (host -> one
    sentence naming no tenant). ``dropped`` maps a workload id to why some of its running tasks
    are not in the snapshot (for the server log only: it names the workload)."""

    snap: Any
    running: list[RunningTask]
    records: list[Any]
    quarantined: dict[str, str]
    dropped: dict[str, str]


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def build_snapshot(records: Sequence[Any], active: Sequence[Workload],
                   now: float, attested: Collection[str] = ()) -> SnapshotBuild:
    """The cycle's snapshot of ``records`` (store hosts) with the tasks of ``active`` holding
    resources, where no single host or task can make the build fail (DESIGN invariant 8).

    A host is *quarantined* (tainted ``gpuplane.io/quarantined``: it keeps its running tasks,
    takes no new one) when its running tasks hold more CPU or memory than it has (it was
    shrunk under them: its capacity in the snapshot is raised to what they hold, so they are
    still counted for quotas and preemption), when one of its tasks cannot be booked at all (a
    GPU or MIG instance it holds is gone: that task is left out of the snapshot), or when a
    running workload there cannot be read. A host whose record cannot be read is left out with
    its tasks. The usual path (nothing wrong) books every task once, as
    ``ClusterSnapshot.build`` does."""
    from gpuplane.scheduling.snapshot import ClusterSnapshot

    quarantined: dict[str, str] = {}
    dropped: dict[str, str] = {}
    # 1. hosts, one at a time
    hosts: list[Host] = []
    kept: list[Any] = []
    for rec in records:
        try:
            hosts.append(to_host(rec, attested))
            kept.append(rec)
        except Exception as exc:  # noqa: BLE001 - one unreadable host must not stop the cycle
            quarantined[rec.name] = f"its inventory record cannot be read ({type(exc).__name__})"
    names = {h.name for h in hosts}
    # 2. running tasks, one workload at a time
    running: list[RunningTask] = []
    for w in active:
        try:
            for r in to_running([w], now):
                if r.placement.host in names:
                    running.append(r)
                else:
                    dropped[w.id] = f"its task {r.id} holds host {r.placement.host!r}, " \
                                    "which is not in the inventory"
        except Exception as exc:  # noqa: BLE001
            for t in w.tasks:
                if t.phase.holds_resources and t.placement is not None:
                    quarantined.setdefault(t.placement.host,
                                           "a task running there cannot be read "
                                           f"({type(exc).__name__})")
            dropped[w.id] = _why(exc)
    # 3. MIG layouts as they are now (host by host only when the whole set fails)
    try:
        hosts, running = mig_as_now(hosts, running)
    except Exception:  # noqa: BLE001
        hosts, running = _mig_as_now_per_host(hosts, running, quarantined, dropped)
    # 4. hosts shrunk under their tasks: capacity raised to what the tasks hold
    cpu: dict[str, int] = {}
    mem: dict[str, int] = {}
    for r in running:
        cpu[r.placement.host] = cpu.get(r.placement.host, 0) + r.task.cpu_milli
        mem[r.placement.host] = mem.get(r.placement.host, 0) + r.task.memory_mib
    for i, h in enumerate(hosts):
        c, m = cpu.get(h.name, 0), mem.get(h.name, 0)
        if c > h.cpu_milli or m > h.memory_mib:
            quarantined[h.name] = (
                f"its running tasks hold {c / 1000:g} cores and {m} MiB, more than its "
                f"{h.cpu_milli / 1000:g} cores and {h.memory_mib} MiB")
            hosts[i] = dataclasses.replace(h, cpu_milli=max(c, h.cpu_milli),
                                           memory_mib=max(m, h.memory_mib))
    # 5. book every task; one that does not fit is left out and quarantines its host
    for _ in range(2):
        view = _quarantine_view(schedulable_view(hosts, kept), quarantined)
        snap = ClusterSnapshot(view)
        booked: list[RunningTask] = []
        fresh = False
        for r in running:
            try:
                snap.assign(r.task, r.placement)
                booked.append(r)
            except Exception as exc:  # noqa: BLE001 - Conflict (overcommit) or a broken placement
                dropped[r.workload_id] = _why(exc)
                if r.placement.host not in quarantined:
                    quarantined[r.placement.host] = ("a task running there no longer fits "
                                                     "its inventory (a GPU or MIG instance it "
                                                     "holds is gone)")
                    fresh = True
        running = booked
        if not fresh:
            break
    return SnapshotBuild(snap, running, kept, quarantined, dropped)


def _quarantine_view(hosts: Sequence[Host], quarantined: Mapping[str, str]) -> list[Host]:
    return [dataclasses.replace(h, taints=(*h.taints, Taint(QUARANTINE_TAINT, "true",
                                                            "NoSchedule")))
            if h.name in quarantined else h for h in hosts]


def _mig_as_now_per_host(hosts: Sequence[Host], running: Sequence[RunningTask],
                         quarantined: dict[str, str], dropped: dict[str, str]
                         ) -> tuple[list[Host], list[RunningTask]]:
    """``mig_as_now`` host by host: a host whose MIG state cannot be rebuilt keeps its stored
    layout, is quarantined, and its MIG tasks are left out of the snapshot."""
    out_hosts: list[Host] = []
    out_running: list[RunningTask] = []
    for h in hosts:
        mine = [r for r in running if r.placement.host == h.name]
        try:
            hs, rs = mig_as_now([h], mine)
            out_hosts.extend(hs)
            out_running.extend(rs)
        except Exception as exc:  # noqa: BLE001
            quarantined[h.name] = f"the MIG instances its tasks hold cannot be read " \
                                  f"({type(exc).__name__})"
            out_hosts.append(h)
            for r in mine:
                if r.placement.mig:
                    dropped[r.workload_id] = _why(exc)
                else:
                    out_running.append(r)
    return out_hosts, out_running
