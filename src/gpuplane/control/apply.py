"""The control loop's write transactions: decisions, starts, stops and observations -> store.

Each function is one short transaction (or, when a batch hits a generation conflict, one per
item so a single changed task does not hold the others back). Generations guard every row the
loop read before deciding (STYLE habit 7): a host, workload or task that changed in between
raises ``Conflict`` and the decision is retried on fresh data next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gpuplane.control.convert import PendingItem, from_placement
from gpuplane.control.execution import REASON_CANCELLED, REASON_PREEMPTED, Outcome
from gpuplane.domain.errors import Conflict
from gpuplane.domain.workloads import Phase
from gpuplane.drivers.base import DriverHandle
from gpuplane.service import lifecycle

log = logging.getLogger("gpuplane.control")


# -- helpers ---------------------------------------------------------------
def _each(store: Any, items: Sequence[Any], fn: Callable[[Any, Any], None]) -> list[Any]:
    """Apply ``fn(tx, item)`` to all items in one transaction; on a conflict, retry one item
    per transaction. Returns the items that still conflicted."""
    try:
        with store.write() as tx:
            for item in items:
                fn(tx, item)
        return []
    except Conflict:
        pass
    failed = []
    for item in items:
        try:
            with store.write() as tx:
                fn(tx, item)
        except Conflict as exc:
            log.debug("conflict, retried next tick: %s", exc)
            failed.append(item)
    return failed


# -- 1. decisions ------------------------------------------------------------
def apply_decisions(store: Any, decisions: Any, items: Mapping[str, PendingItem],
                    workloads: Mapping[str, Any], host_generations: Mapping[str, int],
                    now: float) -> int:
    """One write transaction for the whole cycle; returns the number of tasks admitted.
    Raises ``Conflict`` (nothing written) when anything it read has changed."""
    admitted = 0
    with store.write() as tx:
        claimed: set[str] = set()
        for wid, placements in decisions.admits.items():
            item, w = items[wid], workloads[wid]
            index_of = {t.id: t.index for t in w.tasks}
            chosen = {index_of[tid]: from_placement(p)
                      for tid, p in zip(item.task_ids, placements) if p is not None}
            hosts = {p.host for p in chosen.values()} - claimed
            lifecycle.admit_tasks(tx, w, chosen, now,
                                  {h: host_generations[h] for h in sorted(hosts)})
            claimed |= hosts
            admitted += len(chosen)
        for wid, reason in decisions.pending.items():
            old = workloads[wid].pending_reason if wid in workloads else None
            if old is None or (old.code, old.message) != (reason.code, reason.message):
                tx.workloads.set_pending_reason(wid, reason)
        for v in decisions.preempt:
            t = tx.tasks.get(int(v.task_id))
            ben = workloads.get(v.beneficiary)
            record = {"beneficiary": v.beneficiary,
                      "beneficiary_name": f"{ben.project}/{ben.name}" if ben else v.beneficiary,
                      "code": v.code, "reason": v.message, "grace_s": v.grace_s,
                      "decided_at": now}
            why = f"{v.message} (for {record['beneficiary_name']})"
            if t.phase == Phase.ADMITTED and not t.handle:
                lifecycle.requeue_task(tx, t.id, t.generation, now, "Preempted", why,
                                       preemption={**record, "outcome": "not_started",
                                                   "lost_gpu_s": 0.0})
            elif t.phase == Phase.RUNNING and t.reason == REASON_PREEMPTED and t.preemption:
                continue   # already signalled by an earlier cycle: its grace period runs on
            elif t.phase == Phase.RUNNING:
                tx.tasks.update(t.id, t.generation, reason=REASON_PREEMPTED, message=why,
                                preemption=record)
                tx.events.add(now, "Warning", "Preempting",
                              f"task {t.index}: signalled, {v.grace_s:g} s grace to checkpoint "
                              f"and exit: {why}",
                              workload_uid=t.workload_id, task_index=t.index)
    return admitted


# -- 2. starts ---------------------------------------------------------------
def record_starts(store: Any, started: Sequence[tuple[Any, Any, DriverHandle | None, str | None]],
                  now: float) -> list[DriverHandle]:
    """Store the handles of started tasks (or the failure to start them). Returns the handles of
    tasks that changed meanwhile: the caller must stop those."""

    def one(tx: Any, entry: tuple[Any, Any, DriverHandle | None, str | None]) -> None:
        _w, t, handle, error = entry
        if handle is not None:
            lifecycle.mark_task_running(tx, t.id, t.generation, now, handle.to_dict())
        else:
            lifecycle.finish_task(tx, t.id, t.generation, Phase.FAILED, now,
                                  reason="StartFailed", message=f"could not start: {error}")

    return [e[2] for e in _each(store, started, one) if e[2] is not None]


def cancel_unstarted(store: Any, workloads: Iterable[Any], now: float) -> None:
    """Cancel the tasks of cancel-requested workloads that hold no process: Pending ones and
    Admitted ones not started yet."""
    todo = [(w, t) for w in workloads for t in w.tasks
            if t.phase == Phase.PENDING or (t.phase == Phase.ADMITTED and not t.handle)]
    if not todo:
        return

    def one(tx: Any, entry: tuple[Any, Any]) -> None:
        _w, t = entry
        lifecycle.finish_task(tx, t.id, t.generation, Phase.CANCELLED, now,
                              reason=REASON_CANCELLED, message="cancelled before it started")

    _each(store, todo, one)


def mark_stopping(store: Any, marks: Sequence[tuple[Any, str, str]]) -> None:
    """Record why the loop is about to stop each task (read back when the stop is observed)."""

    def one(tx: Any, mark: tuple[Any, str, str]) -> None:
        t, reason, message = mark
        tx.tasks.update(t.id, t.generation, reason=reason, message=message)

    _each(store, marks, one)


# -- 4. observations ---------------------------------------------------------
def record_observations(store: Any, changes: Sequence[tuple[Any, Any, DriverHandle, Outcome]],
                        now: float) -> list[DriverHandle]:
    """Apply observed changes; returns the handles of attempts that ended and were stored."""

    def one(tx: Any, entry: tuple[Any, Any, DriverHandle, Outcome]) -> None:
        w, t, handle, change = entry
        if change.action == "running":
            if t.phase == Phase.ADMITTED:
                lifecycle.mark_task_running(tx, t.id, t.generation, now, handle.to_dict())
            if change.adopted:
                tx.events.add(now, "Normal", "Adopted", f"task {t.index}: {change.message}",
                              workload_uid=w.id, host=handle.host, task_index=t.index)
        elif change.action == "checkpoint":
            tx.tasks.update(t.id, t.generation, checkpointed_at=change.checkpointed_at)
        elif change.action == "requeue":
            lifecycle.requeue_task(tx, t.id, t.generation, now, change.reason or "Preempted",
                                   change.message,
                                   preempted_by=(t.message or "preemption")
                                   if change.reason == REASON_PREEMPTED else None,
                                   preemption=change.preemption)
        else:
            lifecycle.finish_task(tx, t.id, t.generation, change.phase, now,
                                  exit_code=change.exit_code, reason=change.reason,
                                  message=change.message)

    failed = {id(e) for e in _each(store, changes, one)}
    return [e[2] for e in changes
            if id(e) not in failed and e[3].action not in ("running", "checkpoint")]
