"""Rendering events, reasons and records for one caller: other tenants' objects go unnamed.

The scheduler and the control loop write what happened in full (a preemption names its
beneficiary: ``reclaimed by project P for wl-...``, ``(for P/name)``; a reservation names the
workload it holds capacity for). Those texts are stored once and read by everyone who may see
the *victim*; this module rewrites them at read time for a caller who cannot see the other
project: the reference becomes "a workload of another project" (or "another project"), and a
task id of another project becomes "a task of another project". Global roles see everything.

What counts as a reference (scanned in every message, reason, task message, preemption record
and audit detail a scoped caller reads):

- a workload id ``wl-<16 hex>`` whose project the caller cannot see (or that no longer exists);
- ``project <name>`` and ``<project>/<name>`` where ``<project>`` exists and is not one of the
  caller's; in a text that also holds a foreign workload id (a preemption's), any such
  ``<project>`` the caller cannot see, a deleted one included;
- task ids under a ``victims`` key of a reason's detail.

Other words are left alone, so free text ("project has ...") is not garbled.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from gpuplane.domain.errors import NotFound
from gpuplane.domain.workloads import Event, PendingReason, Task, Workload
from gpuplane.service.authz import Principal, visible_project_ids

OTHER_WORKLOAD = "a workload of another project"
OTHER_PROJECT = "another project"
OTHER_TASK = "a task of another project"

_NAME = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_WL_ID = r"wl-[0-9a-f]{16}"
_PROJECT_FOR_WL = re.compile(rf"\bproject ({_NAME}) for ({_WL_ID})\b")
_PROJECT_SLASH_NAME = re.compile(rf"(?<![-a-z0-9./])({_NAME})/({_NAME})(?![-a-z0-9/])")
_PROJECT_WORD = re.compile(rf"\bproject ({_NAME})(?![-a-z0-9])")
_WORKLOAD_ID = re.compile(rf"\b({_WL_ID})\b")


class Redactor:
    """Rewrites what ``principal`` reads inside one read transaction ``tx``."""

    def __init__(self, tx: Any, principal: Principal, action: str = "workload.read") -> None:
        self.tx = tx
        self.visible = visible_project_ids(principal, action, tx)
        self._project_ids: dict[str, int | None] = {}
        self._workload_ok: dict[str, bool] = {}
        self._task_ok: dict[str, bool] = {}

    @property
    def active(self) -> bool:
        return self.visible is not None

    # -- lookups -------------------------------------------------------------------------------
    def _project_id(self, name: str) -> int | None:
        if name not in self._project_ids:
            try:
                self._project_ids[name] = self.tx.projects.get(name).id
            except NotFound:
                self._project_ids[name] = None
        return self._project_ids[name]

    def _project_ok(self, name: str, *, unknown_ok: bool) -> bool:
        pid = self._project_id(name)
        if pid is None:
            return unknown_ok
        return self.visible is None or pid in self.visible

    def _workload_visible(self, uid: str) -> bool:
        if uid not in self._workload_ok:
            try:
                pid = self.tx.workloads.project_id_of(uid)
                self._workload_ok[uid] = self.visible is None or pid in self.visible
            except NotFound:
                self._workload_ok[uid] = False
        return self._workload_ok[uid]

    def _task_visible(self, task_id: object) -> bool:
        key = str(task_id)
        if key not in self._task_ok:
            try:
                self._task_ok[key] = self._workload_visible(
                    self.tx.tasks.get(int(key)).workload_id)
            except (NotFound, ValueError):
                self._task_ok[key] = False
        return self._task_ok[key]

    # -- rendering -----------------------------------------------------------------------------
    def text(self, s: str | None) -> str | None:
        if not s or not self.active:
            return s

        # a text naming a workload the caller cannot see is about another tenant: there,
        # project names the caller does not know (deleted ones too) are redacted as well
        strict = any(not self._workload_visible(m) for m in _WORKLOAD_ID.findall(s))

        def project_for(m: re.Match) -> str:
            if self._project_ok(m[1], unknown_ok=False) and self._workload_visible(m[2]):
                return m[0]
            return OTHER_WORKLOAD

        def slash(m: re.Match) -> str:
            return m[0] if self._project_ok(m[1], unknown_ok=not strict) else OTHER_WORKLOAD

        def project(m: re.Match) -> str:
            return m[0] if self._project_ok(m[1], unknown_ok=not strict) else OTHER_PROJECT

        def workload(m: re.Match) -> str:
            return m[0] if self._workload_visible(m[1]) else OTHER_WORKLOAD

        s = _PROJECT_FOR_WL.sub(project_for, s)
        s = _PROJECT_SLASH_NAME.sub(slash, s)
        s = _PROJECT_WORD.sub(project, s)
        return _WORKLOAD_ID.sub(workload, s)

    def value(self, v: Any, key: str | None = None) -> Any:
        """Strings rewritten, containers walked; ``victims`` lists of task ids filtered."""
        if not self.active:
            return v
        if key == "victims" and isinstance(v, (list, tuple)):
            return [t if self._task_visible(t) else OTHER_TASK for t in v]
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, Mapping):
            return {k: self.value(x, k if isinstance(k, str) else None) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(self.value(x) for x in v)
        return v

    def reason(self, r: PendingReason | None) -> PendingReason | None:
        if r is None or not self.active:
            return r
        return dataclasses.replace(r, message=self.text(r.message) or "",
                                   detail=self.value(dict(r.detail)))

    def task(self, t: Task) -> Task:
        if not self.active or (not t.message and not t.preemption):
            return t
        return dataclasses.replace(t, message=self.text(t.message),
                                   preemption=self.value(dict(t.preemption))
                                   if t.preemption else t.preemption)

    def workload(self, w: Workload) -> Workload:
        if not self.active:
            return w
        return dataclasses.replace(w, pending_reason=self.reason(w.pending_reason),
                                   message=self.text(w.message),
                                   tasks=tuple(self.task(t) for t in w.tasks))

    def event(self, e: Event) -> Event:
        if not self.active:
            return e
        return dataclasses.replace(e, message=self.text(e.message) or "")
