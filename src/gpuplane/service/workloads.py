"""Use-cases on workloads: submit, read, list, cancel, delete, events, pending reasons, logs.

Every read is tenant-scoped: a workload of a project the caller has no role on is reported as
not found. ``ref`` arguments accept a workload id (``wl-...``) or its name; a name that exists in
several projects the caller can see needs ``project`` to choose.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence

from gpuplane.domain.errors import Conflict, FieldError, InvalidInput, NotFound
from gpuplane.domain.workloads import Event, Phase, Workload, WorkloadSpec
from gpuplane.domain.feasibility import HostShape, infeasible
from gpuplane.governance import policies
from gpuplane.service.authz import Principal, require, visible_project_ids
from gpuplane.service.base import ServiceBase
from gpuplane.service.governance import residency_policy
from gpuplane.service.logs import LogChunk, NoLogs, TaskLogRef
from gpuplane.service.redact import Redactor
from gpuplane.store.paging import Page
from gpuplane.store.records import Project

MAX_LOG_CHUNK = 1_048_576


class WorkloadService(ServiceBase):
    # -- helpers -----------------------------------------------------------------------------
    def _project(self, tx, principal: Principal, name: str, action: str) -> Project:  # noqa: ANN001
        try:
            project = tx.projects.get(name)
        except NotFound:
            project = None
        if project is None or not principal.sees(project_id=project.id, org_id=project.org_id):
            raise NotFound(f"project {name!r} not found; list yours with GET /v1/projects",
                           code="gpuplane.project.not_found")
        require(principal, action, project_id=project.id, org_id=project.org_id,
                what=f"project {name!r}")
        return project

    def _resolve(self, tx, principal: Principal, ref: str, action: str,  # noqa: ANN001
                 project: str | None = None) -> Workload:
        """Find a workload the caller can see (NotFound otherwise) and check ``action``."""
        visible = visible_project_ids(principal, "workload.read", tx)
        wl: Workload | None = None
        try:
            candidate = tx.workloads.get(ref)
            pid = tx.workloads.project_id_of(ref)
            if (visible is None or pid in visible) and (project is None
                                                        or candidate.project == project):
                wl = candidate
        except NotFound:
            pass
        if wl is None:
            ids = visible
            if project is not None:
                p = tx.projects.get(project) if _exists(tx, project) else None
                if p is None or (visible is not None and p.id not in visible):
                    raise NotFound(f"workload {ref!r} not found",
                                   code="gpuplane.workload.not_found")
                ids = {p.id}
            matches = tx.workloads.find_by_name(ref, ids)
            if not matches:
                raise NotFound(f"workload {ref!r} not found", code="gpuplane.workload.not_found")
            if len(matches) > 1:
                raise Conflict(f"{len(matches)} workloads are named {ref!r} (projects "
                               f"{', '.join(m.project for m in matches)}); pass ?project= or "
                               "use the workload id", code="gpuplane.workload.ambiguous")
            wl = matches[0]
        pid = tx.projects.get(wl.project)
        require(principal, action, project_id=pid.id, org_id=pid.org_id,
                what=f"workload {ref!r}")
        return wl

    # -- submit --------------------------------------------------------------------------------
    def _check_against_inventory(self, tx, spec: WorkloadSpec,  # noqa: ANN001
                                 project_classification: str | None) -> None:
        errors: list[FieldError] = []
        wanted = any(g.resources.gpu_models for g in spec.tasks)
        models = tx.hosts.gpu_models() if wanted else set()
        for gi, group in enumerate(spec.tasks):
            for mi, model in enumerate(group.resources.gpu_models):
                if model not in models:
                    near = difflib.get_close_matches(model, sorted(models), n=1)
                    hint = f"; did you mean {near[0]!r}?" if near else (
                        f"; known models: {', '.join(sorted(models)) or 'none registered'}")
                    errors.append(FieldError(f"tasks[{gi}].resources.gpu_models[{mi}]",
                                             f"unknown GPU model {model!r}{hint}"))
        if spec.residency.jurisdictions:
            known = {s.jurisdiction for s in tx.sites.list(None, 100_000).items if s.jurisdiction}
            for ji, j in enumerate(spec.residency.jurisdictions):
                if not any(k == j or k.startswith(j + "/") for k in known):
                    errors.append(FieldError(
                        f"residency.jurisdictions[{ji}]",
                        f"no site is in jurisdiction {j!r}; known: {', '.join(sorted(known))}"))
        decision = policies.residency(spec.residency.jurisdictions,
                                      spec.residency.classification or project_classification,
                                      residency_policy(tx))
        if decision.denied:
            errors.append(FieldError("residency.classification" if decision.code.endswith(
                "unknown_classification") else "residency.jurisdictions", decision.message))
        if not errors:
            errors = self._never_fits(tx, spec)
        if errors:
            raise InvalidInput("the workload asks for something this installation does not "
                               "have", errors, code="gpuplane.workload.unsatisfiable")

    #: the fleet's shape as last read, and when (a submission that fits the cached shape is
    #: accepted without reading the fleet; one that does not is checked again on a fresh read)
    _shapes: tuple[float, list[HostShape]] = (float("-inf"), [])
    SHAPES_TTL_S = 10.0

    def _never_fits(self, tx, spec: WorkloadSpec) -> list[FieldError]:  # noqa: ANN001
        """What of ``spec`` no host could ever give (domain/feasibility.py)."""
        at, shapes = self._shapes
        fresh = self.now() - at > self.SHAPES_TTL_S
        for _ in range(2):
            if fresh:
                shapes = [HostShape(*s) for s in tx.hosts.shapes()]
                self._shapes = (self.now(), shapes)
            errors = infeasible(spec, shapes)
            if not errors or fresh:
                return errors
            fresh = True
        return errors

    def submit_workload(self, principal: Principal, spec: WorkloadSpec) -> Workload:
        """Accept a workload (phase Pending). Once this returns, the workload is committed:
        it survives a crash (DESIGN invariant 5). Conflict if the name exists in the project.

        Runs without the global write lock (``Store.write(serial=False)``): it only inserts
        rows, so concurrent submissions (from several API processes too) go in parallel; the insert
        itself checks the unique (project, name) key, also against a concurrent submission of
        the same name (``Conflict``), and the audit head's row lock orders the chain."""
        now = self.now()
        with self.store.write(serial=False) as tx:
            project = self._project(tx, principal, spec.project, "workload.write")
            if spec.priority_class is None:
                pc = tx.priorities.default()
                if pc is None:
                    raise InvalidInput("no default priority class; name one",
                                       [FieldError("priority_class", "required")])
            else:
                try:
                    pc = tx.priorities.get(spec.priority_class)
                except NotFound:
                    names = [p.name for p in tx.priorities.list().items]
                    raise InvalidInput("unknown priority class", [FieldError(
                        "priority_class", f"unknown priority class {spec.priority_class!r}; "
                        f"known: {', '.join(names)}")]) from None
            self._check_against_inventory(tx, spec, project.classification)
            uid = self.new_uid("wl")
            preemptible = pc.preemptible if spec.preemptible is None else spec.preemptible
            wl = tx.workloads.add(uid, project, spec, pc.value, pc.name, preemptible,
                                  principal.name, now)
            if wl is None:
                raise Conflict(f"workload {spec.name!r} already exists in project "
                               f"{project.name!r}; delete it or pick another name",
                               code="gpuplane.workload.exists")
            tx.events.add(now, "Normal", "Submitted",
                          f"{spec.kind} {spec.name} submitted by {principal.name} with "
                          f"{len(wl.tasks)} task(s), priority class {pc.name}",
                          workload_uid=uid)
            self.audit(tx, principal.name, "workload.submit", "workload", uid,
                       project_id=project.id, org_id=project.org_id,
                       detail={"name": spec.name, "kind": spec.kind, "tasks": len(wl.tasks),
                               "priority_class": pc.name})
            return wl

    # -- reads ---------------------------------------------------------------------------------
    def get_workload(self, principal: Principal, ref: str, project: str | None = None) -> Workload:
        with self.store.read() as tx:
            return Redactor(tx, principal).workload(
                self._resolve(tx, principal, ref, "workload.read", project))

    def list_workloads(self, principal: Principal, after: int | None, limit: int,
                       project: str | None = None, phase: str | None = None) -> Page[Workload]:
        with self.store.read() as tx:
            ids = visible_project_ids(principal, "workload.read", tx)
            if project is not None:
                ids = {self._project(tx, principal, project, "workload.read").id}
            page = tx.workloads.list(ids, phase, after, limit)
            return _render(page, Redactor(tx, principal).workload)

    def list_events(self, principal: Principal, after: int | None, limit: int,
                    workload: str | None = None, project: str | None = None) -> Page[Event]:
        with self.store.read() as tx:
            if workload is not None:
                wl = self._resolve(tx, principal, workload, "workload.read", project)
                return _render(tx.events.list(None, wl.id, after, limit),
                               Redactor(tx, principal).event)
            ids = visible_project_ids(principal, "workload.read", tx)
            if project is not None:
                ids = {self._project(tx, principal, project, "workload.read").id}
            return _render(tx.events.list(ids, None, after, limit), Redactor(tx, principal).event)

    def pending_info(self, principal: Principal, ref: str, project: str | None = None) -> dict:
        """Why a workload waits: its reason, how many tasks wait, and its queue position
        among all schedulable workloads (1 = next; by priority, then submission time)."""
        now = self.now()
        with self.store.read() as tx:
            wl = self._resolve(tx, principal, ref, "workload.read", project)
            pending = [t.not_before for t in wl.tasks if t.phase is Phase.PENDING]
            reason = None
            if wl.pending_reason is not None:
                pr = Redactor(tx, principal).reason(wl.pending_reason)
                reason = {"code": pr.code, "message": pr.message, "detail": dict(pr.detail)}
            queued = bool(pending) and not wl.cancel_requested
            order = tx.workloads.queue_order(now) if queued else []
            position = order.index(wl.id) + 1 if wl.id in order else None
            return standing(wl.id, wl.phase.value, pending, wl.cancel_requested, reason,
                            position, now)

    # -- cancel / delete -----------------------------------------------------------------------
    def cancel_workload(self, principal: Principal, ref: str, project: str | None = None
                        ) -> Workload:
        """Ask for a workload to stop. Pending tasks are cancelled at once; tasks holding
        resources are stopped by the control loop (SIGTERM, grace, SIGKILL), which then marks
        them Cancelled. Idempotent while not finished; Conflict once it has finished."""
        from gpuplane.service import lifecycle

        now = self.now()
        with self.store.write() as tx:
            wl = self._resolve(tx, principal, ref, "workload.write", project)
            if wl.phase.terminal:
                raise Conflict(f"workload {wl.name!r} already finished ({wl.phase.value})",
                               code="gpuplane.workload.finished")
            if not wl.cancel_requested:
                tx.workloads.update(wl.id, wl.generation, cancel_requested=True)
                for task in wl.tasks:
                    if task.phase is Phase.PENDING:
                        tx.tasks.update(task.id, task.generation, phase=Phase.CANCELLED,
                                        finished_at=now, reason="Cancelled",
                                        message=f"cancelled by {principal.name}")
                tx.events.add(now, "Normal", "CancelRequested",
                              f"cancel requested by {principal.name}", workload_uid=wl.id)
                p = tx.projects.get(wl.project)
                self.audit(tx, principal.name, "workload.cancel", "workload", wl.id,
                           project_id=p.id, org_id=p.org_id, detail={"name": wl.name})
                lifecycle.refresh_workload_phase(tx, wl.id, now)
            return Redactor(tx, principal).workload(tx.workloads.get(wl.id))

    def delete_workload(self, principal: Principal, ref: str, project: str | None = None) -> None:
        """Forget a finished workload (its events go with it; usage and audit stay)."""
        with self.store.write() as tx:
            wl = self._resolve(tx, principal, ref, "workload.write", project)
            if not wl.phase.terminal:
                raise Conflict(f"workload {wl.name!r} is {wl.phase.value}; cancel it first",
                               code="gpuplane.workload.active")
            tx.workloads.delete(wl.id)
            p = tx.projects.get(wl.project)
            self.audit(tx, principal.name, "workload.delete", "workload", wl.id,
                       project_id=p.id, org_id=p.org_id, detail={"name": wl.name})

    # -- logs ----------------------------------------------------------------------------------
    def read_logs(self, principal: Principal, ref: str, task_index: int = 0, offset: int = 0,
                  limit: int = 65_536, project: str | None = None
                  ) -> tuple[Workload, LogChunk | None]:
        """A chunk of a task's log (latest attempt). Needs ``workload.logs``."""
        with self.store.read() as tx:
            wl = self._resolve(tx, principal, ref, "workload.logs", project)
        task = next((t for t in wl.tasks if t.index == task_index), None)
        if task is None:
            raise InvalidInput("no such task", [FieldError(
                "task", f"workload {wl.name!r} has tasks 0..{len(wl.tasks) - 1}")])
        ref_ = TaskLogRef(wl.id, wl.name, wl.project, task.index, task.attempt,
                          task.placement.host if task.placement else None, task.simulated,
                          task.handle)
        source = self.log_source or NoLogs()
        return wl, source.read_log(ref_, max(0, offset), max(1, min(limit, MAX_LOG_CHUNK)))


def standing(uid: str, phase: str, pending: Sequence[float | None], cancel_requested: bool,
             reason: dict | None, position: int | None, now: float) -> dict:
    """GET /v1/workloads/{w}/pending of one workload: ``pending``, the ``not_before`` of each
    of its Pending tasks; ``reason``, its stored pending reason as the caller may see it;
    ``position`` in ``queue_order``. Without a stored reason it waits for its retry backoff
    (every pending task backing off) or for the next cycle."""
    backoff = [nb for nb in pending if nb and nb > now]
    queued = bool(pending) and not cancel_requested
    if reason is None and backoff and len(backoff) == len(pending):
        reason = {"code": "gpuplane.pending.backoff",
                  "message": f"waiting {min(backoff) - now:.0f}s before retrying "
                             "(retry backoff)", "detail": {}}
    elif reason is None and queued:
        reason = {"code": "gpuplane.pending.not_yet_scheduled",
                  "message": "waiting for the next scheduling cycle", "detail": {}}
    return {"workload": uid, "phase": phase, "pending_tasks": len(pending),
            "queue_position": position if queued else None, "reason": reason,
            "retry_after_s": (min(backoff) - now) if backoff else None}


def _render(page: Page, convert: Callable) -> Page:
    """``page`` with every item passed through ``convert`` (a ``Redactor`` method)."""
    return dataclasses.replace(page, items=[convert(i) for i in page.items])


def _exists(tx, project: str) -> bool:  # noqa: ANN001
    try:
        tx.projects.get(project)
        return True
    except NotFound:
        return False
