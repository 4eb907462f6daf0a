"""Repositories for workloads, their tasks, events and usage records.

A task row in phase Admitted or Running *is* an allocation: there is no separate allocation
table, so an allocation can never outlive its task (DESIGN invariant 5).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gpuplane.domain.errors import NotFound
from gpuplane.domain.validation import STORED
from gpuplane.domain.workloads import (Event, PendingReason, Phase, Task, TaskPlacement, Workload,
                                       WorkloadSpec)
from gpuplane.store.bulk import among, insert_many
from gpuplane.store.generations import guarded_update, guarded_update_many
from gpuplane.store.paging import Page, paginate
from gpuplane.store.records import (LockedTask, LockedWorkload, Project, UsageRecord,
                                    WorkloadPhaseState)
from gpuplane.store.tables import (EventRow, HostRow, OrganisationRow, ProjectRow, TaskRow,
                                   UsageRow, WorkloadRow)

ACTIVE_PHASES = (Phase.ADMITTED.value, Phase.RUNNING.value)
TERMINAL_PHASES = (Phase.SUCCEEDED.value, Phase.FAILED.value, Phase.CANCELLED.value,
                   Phase.LOST.value)


def _placement(data: dict[str, Any] | None) -> TaskPlacement | None:
    if not data:
        return None
    return TaskPlacement(host=data["host"], gpu_indices=tuple(data.get("gpu_indices", ())),
                         gpu_milli=int(data.get("gpu_milli", 1000)),
                         mig=tuple(data.get("mig", ())), borrowed=bool(data.get("borrowed")))


#: Parsed specs by workload uid (a spec is written once, at submit, and never changed; the
#: cached entry is used only while the stored JSON still equals the one it was parsed from).
#: Saves the control loop re-validating every active spec several times per tick.
_SPECS: dict[str, tuple[Any, WorkloadSpec]] = {}
_SPECS_MAX = 50_000


def _spec(uid: str, raw: Any) -> WorkloadSpec:
    hit = _SPECS.get(uid)
    if hit is not None and hit[0] == raw:
        return hit[1]
    spec = WorkloadSpec.model_validate(raw, context=STORED)
    if len(_SPECS) >= _SPECS_MAX:
        _SPECS.clear()
    _SPECS[uid] = (raw, spec)
    return spec


def _dialect_insert(session: Session) -> Any:
    """The INSERT construct of the session's database (both have ``on_conflict_do_nothing``)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def placement_json(p: TaskPlacement) -> dict[str, Any]:
    out = {"host": p.host, "gpu_indices": list(p.gpu_indices), "gpu_milli": p.gpu_milli,
           "mig": [dict(m) for m in p.mig]}
    if p.borrowed:
        out["borrowed"] = True
    return out


class WorkloadRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    # -- conversion -------------------------------------------------------------------------
    def _tasks(self, uids: Mapping[int, str]) -> dict[int, list[Task]]:
        """The tasks of the workloads ``uids`` (pk -> uid), by workload pk. Plain rows (no
        ORM objects): the loop reads every active task several times per tick."""
        out: dict[int, list[Task]] = {pk: [] for pk in uids}
        if not uids:
            return out
        rows = self.s.execute(select(TaskRow.__table__, HostRow.simulated).outerjoin(
            HostRow, HostRow.id == TaskRow.host_id).where(among(self.s, TaskRow.workload_pk, uids))
            .order_by(TaskRow.workload_pk, TaskRow.idx)).all()
        for t in rows:
            out[t.workload_pk].append(task_from_row(t, uids[t.workload_pk], bool(t.simulated)))
        return out

    def _convert(self, rows: Sequence[Any], with_tasks: bool = True) -> list[Workload]:
        """Workload rows (ORM objects or plain rows of the table) -> ``Workload``."""
        if not rows:
            return []
        proj = {p.id: p for p in self.s.execute(select(ProjectRow).where(
            ProjectRow.id.in_({r.project_id for r in rows}))).scalars()}
        orgs = dict(self.s.execute(select(OrganisationRow.id, OrganisationRow.name).where(
            OrganisationRow.id.in_({p.org_id for p in proj.values()}))).tuples().all())
        tasks = self._tasks({r.pk: r.uid for r in rows}) if with_tasks else {}
        out = []
        for r in rows:
            p = proj[r.project_id]
            reason = r.pending_reason
            out.append(Workload(
                id=r.uid, project=p.name, project_id=p.id, org=orgs[p.org_id], name=r.name, kind=r.kind,
                spec=_spec(r.uid, r.spec), phase=Phase(r.phase),
                priority=r.priority, priority_class=r.priority_class, preemptible=r.preemptible,
                generation=r.generation, cancel_requested=r.cancel_requested,
                pending_reason=PendingReason(reason["code"], reason["message"],
                                             reason.get("detail", {})) if reason else None,
                message=r.message, submitted_by=r.submitted_by, submitted_at=r.submitted_at,
                admitted_at=r.admitted_at, started_at=r.started_at, finished_at=r.finished_at,
                tasks=tuple(tasks.get(r.pk, ()))))
        return out

    def _row(self, uid: str) -> WorkloadRow:
        row = self.s.execute(select(WorkloadRow).where(WorkloadRow.uid == uid)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no workload {uid!r}", code="gpuplane.workload.not_found")
        return row

    # -- reads ------------------------------------------------------------------------------
    def get(self, uid: str) -> Workload:
        return self._convert([self._row(uid)])[0]

    def phase_state(self, uid: str) -> WorkloadPhaseState:
        """The inputs of a phase recomputation, without converting the workload."""
        row = self.s.execute(select(WorkloadRow.pk, WorkloadRow.generation, WorkloadRow.phase,
                                    WorkloadRow.cancel_requested, WorkloadRow.admitted_at,
                                    WorkloadRow.started_at, WorkloadRow.project_id,
                                    ProjectRow.org_id)
                             .join(ProjectRow, ProjectRow.id == WorkloadRow.project_id)
                             .where(WorkloadRow.uid == uid)).first()
        if row is None:
            raise NotFound(f"no workload {uid!r}", code="gpuplane.workload.not_found")
        phases = self.s.execute(select(TaskRow.phase).where(TaskRow.workload_pk == row.pk)
                                .order_by(TaskRow.idx)).scalars().all()
        return WorkloadPhaseState(
            generation=row.generation, phase=row.phase, cancel_requested=row.cancel_requested,
            admitted_at=row.admitted_at, started_at=row.started_at, task_phases=tuple(phases),
            project_id=row.project_id, org_id=row.org_id)

    def pk_of(self, uid: str) -> int:
        return self._row(uid).pk

    def project_id_of(self, uid: str) -> int:
        return self._row(uid).project_id

    def find(self, project_id: int, name: str) -> Workload | None:
        row = self.s.execute(select(WorkloadRow).where(WorkloadRow.project_id == project_id,
                                                       WorkloadRow.name == name)).scalar_one_or_none()
        return None if row is None else self._convert([row])[0]

    def find_by_name(self, name: str, project_ids: Iterable[int] | None) -> list[Workload]:
        stmt = select(WorkloadRow).where(WorkloadRow.name == name)
        if project_ids is not None:
            stmt = stmt.where(WorkloadRow.project_id.in_(list(project_ids)))
        return self._convert(self.s.execute(stmt.order_by(WorkloadRow.pk)).scalars().all())

    def list(self, project_ids: Iterable[int] | None, phase: str | None = None,
             after: int | None = None, limit: int = 1000,
             with_tasks: bool = True) -> Page[Workload]:
        """Workloads of the given projects (None: all), oldest first."""
        stmt = select(WorkloadRow)
        if project_ids is not None:
            stmt = stmt.where(WorkloadRow.project_id.in_(list(project_ids)))
        if phase is not None:
            stmt = stmt.where(WorkloadRow.phase == phase)
        page = paginate(self.s, stmt, WorkloadRow.pk, after, limit, lambda r: r, lambda r: r.pk)
        return Page(self._convert(page.items, with_tasks), page.next_after)

    @staticmethod
    def schedulable(now: float) -> Any:
        """Workloads not cancelled that have a Pending task whose backoff has expired."""
        pks = select(TaskRow.workload_pk).where(
            TaskRow.phase == Phase.PENDING.value,
            or_(TaskRow.not_before.is_(None), TaskRow.not_before <= now)).distinct()
        return and_(WorkloadRow.pk.in_(pks), WorkloadRow.cancel_requested.is_(False))

    def list_schedulable(self, now: float) -> list[Workload]:
        """Workloads not cancelled that have a Pending task whose backoff has expired."""
        rows = self.s.execute(select(WorkloadRow.__table__).where(self.schedulable(now))
                              .order_by(WorkloadRow.pk)).all()
        return self._convert(rows)

    def queue_order(self, now: float) -> list[str]:
        """The ids of the schedulable workloads in queue order (by priority, then submission,
        then id), read as plain columns: no record is built."""
        rows = self.s.execute(select(WorkloadRow.priority, WorkloadRow.submitted_at,
                                     WorkloadRow.uid).where(self.schedulable(now))).all()
        return [uid for _, _, uid in sorted(rows, key=lambda r: (-r[0], r[1], r[2]))]

    def list_active(self) -> list[Workload]:
        """Workloads with at least one task holding resources (Admitted or Running)."""
        pks = select(TaskRow.workload_pk).where(TaskRow.phase.in_(ACTIVE_PHASES)).distinct()
        rows = self.s.execute(select(WorkloadRow.__table__).where(WorkloadRow.pk.in_(pks))
                              .order_by(WorkloadRow.pk)).all()
        return self._convert(rows)

    def list_cancel_requested(self) -> list[Workload]:
        """Workloads whose cancel was asked and that are not finished yet."""
        rows = self.s.execute(select(WorkloadRow.__table__).where(
            WorkloadRow.cancel_requested.is_(True), WorkloadRow.phase.not_in(TERMINAL_PHASES))
            .order_by(WorkloadRow.pk)).all()
        return self._convert(rows)

    def count_by_phase(self) -> dict[str, int]:
        from sqlalchemy import func

        return dict(self.s.execute(select(WorkloadRow.phase, func.count())
                                   .group_by(WorkloadRow.phase)).tuples().all())

    # -- writes -----------------------------------------------------------------------------
    def add(self, uid: str, project: Project, spec: WorkloadSpec, priority: int,
            priority_class: str, preemptible: bool, submitted_by: str, now: float
            ) -> Workload | None:
        """Insert a Pending workload and its tasks; ``None`` (nothing written) when
        ``project`` already has a workload of that name. The name check is the insert itself
        (``ON CONFLICT DO NOTHING`` on the unique (project, name) key), so it holds against
        concurrent submissions too; the workload is built from what was written, not read
        back (two statements here)."""
        dumped = spec.model_dump(mode="json")
        stmt = _dialect_insert(self.s)(WorkloadRow).values(
            uid=uid, project_id=project.id, name=spec.name, kind=spec.kind, spec=dumped,
            phase=Phase.PENDING.value, priority=priority, priority_class=priority_class,
            preemptible=preemptible, cancel_requested=False, submitted_by=submitted_by,
            submitted_at=now, generation=1)
        pk = self.s.execute(stmt.on_conflict_do_nothing(
            index_elements=[WorkloadRow.project_id, WorkloadRow.name]
        ).returning(WorkloadRow.pk)).scalar_one_or_none()
        if pk is None:
            return None
        rows = []
        for index, group, replica in spec.task_slots():
            res = group.resources
            rows.append(dict(workload_pk=pk, idx=index, group_name=group.name, replica=replica,
                             phase=Phase.PENDING.value, attempt=0, cpu_milli=res.cpu_milli,
                             memory_mib=res.memory_mib, gpus=res.gpus, gpu_milli=res.gpu_milli,
                             mig_profile=res.mig_profile, gpu_models=list(res.gpu_models),
                             generation=1))
        ids = self.s.execute(insert(TaskRow).returning(TaskRow.id, sort_by_parameter_order=True),
                             rows).scalars().all()
        _SPECS[uid] = (dumped, spec)
        return Workload(
            id=uid, project=project.name, project_id=project.id, org=project.org,
            name=spec.name, kind=spec.kind, spec=spec, phase=Phase.PENDING, priority=priority,
            priority_class=priority_class, preemptible=preemptible, generation=1,
            cancel_requested=False, pending_reason=None, message=None,
            submitted_by=submitted_by, submitted_at=now, admitted_at=None, started_at=None,
            finished_at=None, tasks=tuple(
                Task(id=task_id, workload_id=uid, index=r["idx"], group=r["group_name"],
                     replica=r["replica"], phase=Phase.PENDING, generation=1, attempt=0,
                     cpu_milli=r["cpu_milli"], memory_mib=r["memory_mib"], gpus=r["gpus"],
                     gpu_milli=r["gpu_milli"], mig_profile=r["mig_profile"],
                     gpu_models=tuple(r["gpu_models"]), placement=None, simulated=False,
                     handle=None, exit_code=None, reason=None, message=None, not_before=None,
                     started_at=None, finished_at=None)
                for task_id, r in zip(ids, rows)))

    def update(self, uid: str, seen_generation: int, **values: Any) -> int:
        """Generation-guarded update of workload columns; returns the new generation."""
        if "phase" in values and isinstance(values["phase"], Phase):
            values["phase"] = values["phase"].value
        return guarded_update(self.s, WorkloadRow, WorkloadRow.uid, uid, seen_generation,
                              f"workload {uid}", **values)

    def lock(self, uids: Iterable[str]) -> dict[str, LockedWorkload]:
        """Lock (PostgreSQL: ``FOR UPDATE``, in key order; SQLite write transactions are
        exclusive anyway) and read the rows a batch of changes needs, by uid; absent uids are
        left out. Inside the same transaction, generations read here cannot move."""
        uids = sorted(set(uids))
        if not uids:
            return {}
        rows = self.s.execute(
            select(WorkloadRow.pk, WorkloadRow.uid, WorkloadRow.generation, WorkloadRow.phase,
                   WorkloadRow.cancel_requested, WorkloadRow.admitted_at,
                   WorkloadRow.started_at, WorkloadRow.project_id, ProjectRow.org_id)
            .join(ProjectRow, ProjectRow.id == WorkloadRow.project_id)
            .where(among(self.s, WorkloadRow.uid, uids)).order_by(WorkloadRow.pk)
            .with_for_update(of=WorkloadRow)).all()
        return {r.uid: LockedWorkload(r.pk, r.uid, r.generation, r.phase, r.cancel_requested,
                                      r.admitted_at, r.started_at, r.project_id, r.org_id)
                for r in rows}

    def update_many(self, rows: Sequence[tuple[int, int, dict[str, Any]]]) -> None:
        """Generation-guarded updates of many workloads: (pk, seen generation, values)."""
        rows = [(pk, seen, {k: (v.value if isinstance(v, Phase) else v)
                            for k, v in values.items()}) for pk, seen, values in rows]
        guarded_update_many(self.s, WorkloadRow, "pk", rows, "workload")

    def set_pending_reasons(self, reasons: Mapping[str, PendingReason | None]) -> None:
        """``set_pending_reason`` for many workloads in one executemany statement."""
        if not reasons:
            return
        t = WorkloadRow.__table__
        self.s.connection().execute(
            update(t).where(t.c.uid == bindparam("_uid")).values(pending_reason=bindparam("_r")),
            [{"_uid": uid, "_r": None if r is None else {"code": r.code, "message": r.message,
                                                       "detail": dict(r.detail)}}
             for uid, r in reasons.items()])

    def set_pending_reason(self, uid: str, reason: PendingReason | None) -> None:
        """Advisory (not generation-guarded, does not bump the generation)."""
        value = None if reason is None else {"code": reason.code, "message": reason.message,
                                             "detail": dict(reason.detail)}
        self.s.execute(update(WorkloadRow).where(WorkloadRow.uid == uid)
                       .values(pending_reason=value).execution_options(synchronize_session=False))

    def delete(self, uid: str) -> None:
        pk = self._row(uid).pk
        self.s.execute(delete(EventRow).where(EventRow.workload_pk == pk))
        self.s.execute(delete(TaskRow).where(TaskRow.workload_pk == pk))
        self.s.execute(delete(WorkloadRow).where(WorkloadRow.pk == pk))


def task_from_row(t: TaskRow, workload_uid: str, simulated: bool) -> Task:
    return Task(
        id=t.id, workload_id=workload_uid, index=t.idx, group=t.group_name, replica=t.replica,
        phase=Phase(t.phase), generation=t.generation, attempt=t.attempt, cpu_milli=t.cpu_milli,
        memory_mib=t.memory_mib, gpus=t.gpus, gpu_milli=t.gpu_milli, mig_profile=t.mig_profile,
        gpu_models=tuple(t.gpu_models or ()), placement=_placement(t.placement),
        simulated=simulated, handle=t.handle, exit_code=t.exit_code, reason=t.reason,
        message=t.message, not_before=t.not_before, started_at=t.started_at,
        finished_at=t.finished_at, preemption=t.preemption,
        checkpointed_at=t.checkpointed_at)


class TaskRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self, task_id: int) -> Task:
        row = self.s.execute(select(TaskRow, WorkloadRow.uid, HostRow.simulated)
                             .join(WorkloadRow, WorkloadRow.pk == TaskRow.workload_pk)
                             .outerjoin(HostRow, HostRow.id == TaskRow.host_id)
                             .where(TaskRow.id == task_id)).first()
        if row is None:
            raise NotFound(f"no task {task_id}", code="gpuplane.task.not_found")
        return task_from_row(row[0], row[1], bool(row[2]))

    def list_active(self) -> list[Task]:
        """Every task holding resources (Admitted/Running): the live allocations."""
        rows = self.s.execute(select(TaskRow, WorkloadRow.uid, HostRow.simulated)
                              .join(WorkloadRow, WorkloadRow.pk == TaskRow.workload_pk)
                              .outerjoin(HostRow, HostRow.id == TaskRow.host_id)
                              .where(TaskRow.phase.in_(ACTIVE_PHASES))
                              .order_by(TaskRow.id)).tuples().all()
        return [task_from_row(t, uid, bool(sim)) for t, uid, sim in rows]

    def update(self, task_id: int, seen_generation: int, **values: Any) -> int:
        """Generation-guarded update of task columns (``placement`` may be a TaskPlacement;
        ``host`` a host name, resolved to its id); returns the new generation."""
        if "phase" in values and isinstance(values["phase"], Phase):
            values["phase"] = values["phase"].value
        if isinstance(values.get("placement"), TaskPlacement):
            values["placement"] = placement_json(values["placement"])
        if "host" in values:
            host = values.pop("host")
            if host is None:
                values["host_id"] = None
            else:
                host_id = self.s.execute(select(HostRow.id).where(HostRow.name == host)).scalar()
                if host_id is None:
                    raise NotFound(f"no host named {host!r}", code="gpuplane.host.not_found")
                values["host_id"] = host_id
        return guarded_update(self.s, TaskRow, TaskRow.id, task_id, seen_generation,
                              f"task {task_id}", **values)

    def lock(self, ids: Iterable[int]) -> dict[int, LockedTask]:
        """Lock (PostgreSQL: ``FOR UPDATE``, in id order) and read the task rows a batch of
        changes needs; absent ids are left out."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        rows = self.s.execute(
            select(TaskRow.id, TaskRow.generation, TaskRow.phase, TaskRow.workload_pk,
                   TaskRow.idx, TaskRow.attempt)
            .where(among(self.s, TaskRow.id, ids)).order_by(TaskRow.id).with_for_update()).all()
        return {r.id: LockedTask(r.id, r.generation, r.phase, r.workload_pk, r.idx, r.attempt)
                for r in rows}

    def phases_by_workload(self, workload_pks: Iterable[int]) -> dict[int, tuple[str, ...]]:
        """The task phases of each workload, in task order (one query)."""
        pks = sorted(set(workload_pks))
        out: dict[int, list[str]] = {pk: [] for pk in pks}
        if pks:
            for pk, phase in self.s.execute(
                    select(TaskRow.workload_pk, TaskRow.phase)
                    .where(among(self.s, TaskRow.workload_pk, pks))
                    .order_by(TaskRow.workload_pk, TaskRow.idx)).tuples():
                out[pk].append(phase)
        return {pk: tuple(v) for pk, v in out.items()}

    def update_many(self, rows: Sequence[tuple[int, int, dict[str, Any]]]) -> None:
        """Generation-guarded updates of many tasks: (id, seen generation, values); values
        as in ``update``, except that hosts are given as ``host_id`` (no name lookup)."""
        out = []
        for tid, seen, values in rows:
            values = dict(values)
            if isinstance(values.get("phase"), Phase):
                values["phase"] = values["phase"].value
            if isinstance(values.get("placement"), TaskPlacement):
                values["placement"] = placement_json(values["placement"])
            out.append((tid, seen, values))
        guarded_update_many(self.s, TaskRow, "id", out, "task")


class EventRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, at: float, type: str, reason: str, message: str, *,  # noqa: A002
            project_id: int | None = None, workload_uid: str | None = None,
            host: str | None = None, task_index: int | None = None) -> None:
        values: dict[str, Any] = dict(at=at, type=type, reason=reason, message=message[:4000],
                                      project_id=project_id, workload_pk=None, host_name=host,
                                      task_idx=task_index)
        if workload_uid is not None:
            # the workload's pk and project in the same statement (no read first)
            values["workload_pk"] = (select(WorkloadRow.pk)
                                     .where(WorkloadRow.uid == workload_uid).scalar_subquery())
            values["project_id"] = func.coalesce(
                select(WorkloadRow.project_id).where(WorkloadRow.uid == workload_uid)
                .scalar_subquery(), project_id)
        self.s.flush()
        self.s.execute(insert(EventRow).values(**values))

    def add_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Insert many events in one statement (``store.bulk``). Each is a mapping of ``at``,
        ``type``, ``reason``, ``message`` and optionally ``project_id``, ``workload_pk`` (not
        the uid: the caller has it from a ``lock``), ``host_name``, ``task_idx``."""
        if not events:
            return
        keys = ("at", "type", "reason", "message", "project_id", "workload_pk", "host_name",
                "task_idx")
        insert_many(self.s.connection(), EventRow.__table__, [
            {k: (e.get(k)[:4000] if k == "message" else e.get(k)) for k in keys}
            for e in events])

    def list(self, project_ids: Iterable[int] | None, workload_uid: str | None = None,
             after: int | None = None, limit: int = 1000) -> Page[Event]:
        stmt = select(EventRow)
        if project_ids is not None:
            stmt = stmt.where(EventRow.project_id.in_(list(project_ids)))
        if workload_uid is not None:
            stmt = stmt.where(EventRow.workload_pk == select(WorkloadRow.pk).where(
                WorkloadRow.uid == workload_uid).scalar_subquery())
        page = paginate(self.s, stmt, EventRow.id, after, limit, lambda r: r, lambda r: r.id)
        rows = page.items
        pnames = dict(self.s.execute(select(ProjectRow.id, ProjectRow.name)).tuples().all()) \
            if rows else {}
        uids = dict(self.s.execute(select(WorkloadRow.pk, WorkloadRow.uid).where(
            WorkloadRow.pk.in_({r.workload_pk for r in rows if r.workload_pk}))).tuples().all()) \
            if rows else {}
        return Page([Event(r.id, r.at, r.type, r.reason, r.message, pnames.get(r.project_id),
                           uids.get(r.workload_pk), r.host_name, r.task_idx) for r in rows],
                    page.next_after)


class UsageRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, rec: UsageRecord) -> None:
        self.s.add(UsageRow(project_id=rec.project_id, workload_uid=rec.workload_uid,
                            task_idx=rec.task_index, attempt=rec.attempt, host_name=rec.host,
                            gpu_model=rec.gpu_model, simulated=rec.simulated,
                            gpu_milli=rec.gpu_milli, cpu_milli=rec.cpu_milli,
                            memory_mib=rec.memory_mib, started_at=rec.started_at,
                            finished_at=rec.finished_at, outcome=rec.outcome,
                            lost_gpu_s=rec.lost_gpu_s or None,
                            placement=dict(rec.placement) if rec.placement else None))
        self.s.flush()

    def list(self, project_ids: Iterable[int] | None, since: float | None = None,
             until: float | None = None) -> list[UsageRecord]:
        stmt = select(UsageRow)
        if project_ids is not None:
            stmt = stmt.where(UsageRow.project_id.in_(list(project_ids)))
        if since is not None:
            stmt = stmt.where(UsageRow.finished_at >= since)
        if until is not None:
            stmt = stmt.where(UsageRow.started_at <= until)
        return [UsageRecord(r.project_id, r.workload_uid, r.task_idx, r.attempt, r.host_name,
                            r.gpu_model, r.simulated, r.gpu_milli, r.cpu_milli, r.memory_mib,
                            r.started_at, r.finished_at, r.outcome, r.lost_gpu_s or 0.0,
                            r.placement)
                for r in self.s.execute(stmt.order_by(UsageRow.id)).scalars()]
