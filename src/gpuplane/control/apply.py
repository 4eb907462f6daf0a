"""The control loop's write transactions: decisions, starts, stops and observations -> store.

Each function is one short transaction (or, when a batch hits a generation conflict, one per
item so a single changed task does not hold the others back). Generations guard every row the
loop read before deciding (STYLE habit 7): a host, workload or task that changed in between
raises ``Conflict`` and the decision is retried on fresh data next tick.

The loop passes a ``FencedStore`` (``store/leases.py``): every transaction here first checks,
inside the transaction, that the loop's lease grant is still the live lease. A stale leader's
write raises ``LeaseLost`` (nothing written); it is never retried item by item or swallowed
here, it goes up to the loop, which stops leading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gpuplane.control.convert import PendingItem, from_placement
from gpuplane.control.execution import REASON_CANCELLED, REASON_PREEMPTED, Outcome
from gpuplane.domain.errors import Conflict, LeaseLost
from gpuplane.domain.workloads import Phase
from gpuplane.drivers.base import DriverHandle
from gpuplane.service import lifecycle

log = logging.getLogger("gpuplane.control")


#: Called with (what, exception) for an item whose write raised something else than a
#: ``Conflict`` (the caller counts and logs it; the other items are written).
OnError = Callable[[str, BaseException], None]


# -- helpers ---------------------------------------------------------------
def _describe(item: Any) -> str:
    """A short name for an item of a batch (in logs): its task, else what it is."""
    parts = item if isinstance(item, tuple) else (item,)
    for part in parts:
        if hasattr(part, "index") and hasattr(part, "workload_id"):
            return f"task {part.index} of workload {part.workload_id}"
    return type(item).__name__


def _each(store: Any, items: Sequence[Any], fn: Callable[[Any, Any], None],
          on_error: OnError | None = None) -> list[Any]:
    """Apply ``fn(tx, item)`` to all items in one transaction; when that fails (a conflict,
    or any error of one item), retry one item per transaction, so one bad item holds no other
    back. Returns the items that still failed; those that failed otherwise than by a conflict
    also go to ``on_error`` (or the log). ``LeaseLost`` is raised at once."""
    try:
        with store.write() as tx:
            for item in items:
                fn(tx, item)
        return []
    except LeaseLost:
        raise
    except Conflict:
        pass
    except Exception:  # noqa: BLE001 - find the item at fault below
        log.debug("batch write failed; writing one item at a time", exc_info=True)
    failed = []
    for item in items:
        try:
            with store.write() as tx:
                fn(tx, item)
        except LeaseLost:
            raise
        except Conflict as exc:
            log.debug("conflict, retried next tick: %s", exc)
            failed.append(item)
        except Exception as exc:  # noqa: BLE001
            failed.append(item)
            if on_error is not None:
                on_error(_describe(item), exc)
            else:
                log.warning("write failed for %s: %s", _describe(item), exc)
    return failed


# -- 1. decisions ------------------------------------------------------------
def apply_decisions(store: Any, decisions: Any, items: Mapping[str, PendingItem],
                    workloads: Mapping[str, Any], host_generations: Mapping[str, int],
                    now: float, on_error: OnError | None = None) -> int:
    """One write transaction for the whole cycle; returns the number of tasks admitted.
    Raises ``Conflict`` (nothing written) when anything it read has changed, ``LeaseLost``
    (nothing written) when the loop's lease grant is stale.

    When the transaction fails otherwise (one workload's write raises), each admission,
    pending reason and preemption is retried in a transaction of its own: the one at fault
    goes to ``on_error``, the others are written (an admission on a host an earlier one of
    this cycle claimed conflicts and is decided again next tick)."""
    try:
        with store.write() as tx:
            claimed: set[str] = set()
            admitted = sum(_admit(tx, decisions, wid, items, workloads, host_generations,
                                  claimed, now) for wid in decisions.admits)
            for wid, reason in decisions.pending.items():
                _pending(tx, workloads, wid, reason)
            for v in decisions.preempt:
                _preempt(tx, workloads, v, now)
        return admitted
    except Conflict:
        raise
    except Exception:  # noqa: BLE001 - one at a time below
        log.debug("the cycle's write failed; writing its decisions one by one", exc_info=True)
    admitted = 0
    steps: list[tuple[str, Callable[[Any], int | None]]] = []
    for wid in decisions.admits:
        steps.append((f"workload {wid}", lambda tx, wid=wid: _admit(
            tx, decisions, wid, items, workloads, host_generations, set(), now)))
    for wid, reason in decisions.pending.items():
        steps.append((f"workload {wid}", lambda tx, wid=wid, reason=reason:
                      _pending(tx, workloads, wid, reason)))
    for v in decisions.preempt:
        steps.append((f"task {v.task_id}", lambda tx, v=v: _preempt(tx, workloads, v, now)))
    for what, step in steps:
        try:
            with store.write() as tx:
                admitted += step(tx) or 0
        except LeaseLost:
            raise
        except Conflict as exc:
            log.debug("conflict, retried next tick: %s", exc)
        except Exception as exc:  # noqa: BLE001
            if on_error is not None:
                on_error(what, exc)
            else:
                log.warning("applying the decision on %s failed: %s", what, exc)
    return admitted


def _admit(tx: Any, decisions: Any, wid: str, items: Mapping[str, PendingItem],
           workloads: Mapping[str, Any], host_generations: Mapping[str, int],
           claimed: set[str], now: float) -> int:
    placements = decisions.admits[wid]
    item, w = items[wid], workloads[wid]
    index_of = {t.id: t.index for t in w.tasks}
    chosen = {index_of[tid]: from_placement(p)
              for tid, p in zip(item.task_ids, placements) if p is not None}
    hosts = {p.host for p in chosen.values()} - claimed
    lifecycle.admit_tasks(tx, w, chosen, now, {h: host_generations[h] for h in sorted(hosts)})
    claimed |= hosts
    return len(chosen)


def _pending(tx: Any, workloads: Mapping[str, Any], wid: str, reason: Any) -> None:
    old = workloads[wid].pending_reason if wid in workloads else None
    if old is None or (old.code, old.message) != (reason.code, reason.message):
        tx.workloads.set_pending_reason(wid, reason)


def _preempt(tx: Any, workloads: Mapping[str, Any], v: Any, now: float) -> None:
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
        return   # already signalled by an earlier cycle: its grace period runs on
    elif t.phase == Phase.RUNNING:
        tx.tasks.update(t.id, t.generation, reason=REASON_PREEMPTED, message=why,
                        preemption=record)
        tx.events.add(now, "Warning", "Preempting",
                      f"task {t.index}: signalled, {v.grace_s:g} s grace to checkpoint "
                      f"and exit: {why}",
                      workload_uid=t.workload_id, task_index=t.index)


# -- 2. starts ---------------------------------------------------------------
def record_starts(store: Any, started: Sequence[tuple[Any, Any, DriverHandle | None, str | None]],
                  now: float, on_error: OnError | None = None) -> list[DriverHandle]:
    """Store the handles of started tasks (or the failure to start them: the task fails with
    ``StartFailed``, its retry policy applies). Returns the handles of tasks that changed
    meanwhile, or whose start could not be recorded: the caller must stop those."""

    def one(tx: Any, entry: tuple[Any, Any, DriverHandle | None, str | None]) -> None:
        _w, t, handle, error = entry
        if handle is not None:
            lifecycle.mark_task_running(tx, t.id, t.generation, now, handle.to_dict())
        else:
            lifecycle.finish_task(tx, t.id, t.generation, Phase.FAILED, now,
                                  reason="StartFailed", message=f"could not start: {error}")

    return [e[2] for e in _each(store, started, one, on_error) if e[2] is not None]


def cancel_unstarted(store: Any, workloads: Iterable[Any], now: float,
                     on_error: OnError | None = None) -> None:
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

    _each(store, todo, one, on_error)


def mark_stopping(store: Any, marks: Sequence[tuple[Any, str, str]],
                  on_error: OnError | None = None) -> None:
    """Record why the loop is about to stop each task (read back when the stop is observed)."""

    def one(tx: Any, mark: tuple[Any, str, str]) -> None:
        t, reason, message = mark
        tx.tasks.update(t.id, t.generation, reason=reason, message=message)

    _each(store, marks, one, on_error)


# -- 4. observations ---------------------------------------------------------
def record_observations(store: Any, changes: Sequence[tuple[Any, Any, DriverHandle, Outcome]],
                        now: float, on_error: OnError | None = None) -> list[DriverHandle]:
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

    failed = {id(e) for e in _each(store, changes, one, on_error)}
    return [e[2] for e in changes
            if id(e) not in failed and e[3].action not in ("running", "checkpoint")]


def fail_task(store: Any, t: Any, now: float, reason: str, message: str) -> None:
    """Fail one task the loop gave up on (its retry policy applies), in its own transaction."""
    with store.write() as tx:
        lifecycle.finish_task(tx, t.id, t.generation, Phase.FAILED, now, reason=reason,
                              message=message)
