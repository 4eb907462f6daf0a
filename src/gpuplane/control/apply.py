"""The control loop's write transactions: decisions, starts, stops and observations -> store.

Each function is one short transaction (or, when a batch hits a generation conflict, one per
item so a single changed task does not hold the others back). Generations guard every row the
loop read before deciding (STYLE habit 7): a host, workload or task that changed in between
costs the decisions made on it (a ``Conflict``, or an admission ``lifecycle.admit_many`` leaves
out), which are retried on fresh data next tick; the others are written.

The loop passes a ``FencedStore`` (``store/leases.py``): every transaction here first checks,
inside the transaction, that the loop's lease grant is still the live lease. A stale leader's
write raises ``LeaseLost`` (nothing written); it is never retried item by item or swallowed
here, it goes up to the loop, which stops leading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    if not items:
        return []
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
#: admissions written per transaction: bounds how long one write holds its locks
ADMIT_BATCH = 500


@dataclass
class Applied:
    """What ``apply_decisions`` wrote: tasks admitted, and decisions left out because what they
    were decided on changed meanwhile (each is decided again next tick)."""

    admitted: int = 0
    conflicts: int = 0


def apply_decisions(store: Any, decisions: Any, items: Mapping[str, PendingItem],
                    workloads: Mapping[str, Any], host_generations: Mapping[str, int],
                    now: float, on_error: OnError | None = None) -> Applied:
    """Write a cycle's decisions: admissions in transactions of up to ``ADMIT_BATCH``
    workloads (``lifecycle.admit_many``), then the pending reasons that changed (one
    statement), then each preemption. Raises ``LeaseLost`` (nothing more written) when the
    loop's lease grant is stale.

    One conflict costs one decision, not the cycle: ``admit_many`` locks and checks every
    workload, task and host first and leaves out only the admissions whose rows changed since
    the loop read them (a concurrent cancel, a drained host). When a batch fails otherwise (one
    workload's write raises), each of its admissions is retried in a transaction of its own:
    the one at fault goes to ``on_error``, the others are written."""
    applied = Applied()
    generations = dict(host_generations)
    admissions = []
    for wid in decisions.admits:
        try:
            admissions.append(_admission(decisions, wid, items, workloads))
        except Exception as exc:  # noqa: BLE001 - this workload's alone
            _report(on_error, f"workload {wid}", exc)
    for i in range(0, len(admissions), ADMIT_BATCH):
        batch = admissions[i:i + ADMIT_BATCH]
        try:
            _admit_batch(store, batch, generations, now, applied)
        except LeaseLost:
            raise
        except Exception:  # noqa: BLE001 - one at a time below
            log.debug("an admission batch failed; writing its admissions one by one",
                      exc_info=True)
            for a in batch:
                try:
                    _admit_batch(store, [a], generations, now, applied)
                except LeaseLost:
                    raise
                except Conflict as exc:
                    log.debug("conflict, retried next tick: %s", exc)
                    applied.conflicts += 1
                except Exception as exc:  # noqa: BLE001
                    _report(on_error, f"workload {a.workload.id}", exc)
    _pending_reasons(store, workloads, decisions.pending, on_error)
    _each(store, list(decisions.preempt), lambda tx, v: _preempt(tx, workloads, v, now),
          on_error)
    return applied


def _report(on_error: OnError | None, what: str, exc: BaseException) -> None:
    if on_error is not None:
        on_error(what, exc)
    else:
        log.warning("applying the decision on %s failed: %s", what, exc)


def _admission(decisions: Any, wid: str, items: Mapping[str, PendingItem],
               workloads: Mapping[str, Any]) -> lifecycle.Admission:
    placements = decisions.admits[wid]
    borrowed = wid in decisions.borrowing
    item, w = items[wid], workloads[wid]
    index_of = {t.id: t.index for t in w.tasks}
    return lifecycle.Admission(w, {index_of[tid]: from_placement(p, borrowed)
                                   for tid, p in zip(item.task_ids, placements)
                                   if p is not None})


def _admit_batch(store: Any, batch: Sequence[lifecycle.Admission],
                 generations: dict[str, int], now: float, applied: Applied) -> None:
    """One transaction of admissions; on commit, the hosts it claimed move to their new
    generation in ``generations`` (later batches of this cycle build on them)."""
    with store.write() as tx:
        skipped = lifecycle.admit_many(tx, batch, now, generations)
    for wid, why in skipped.items():
        log.debug("admission of %s left out, decided again next tick: %s", wid, why)
    done = [a for a in batch if a.workload.id not in skipped]
    for host in {p.host for a in done for p in a.placements.values()}:
        generations[host] += 1
    applied.admitted += sum(len(a.placements) for a in done)
    applied.conflicts += len(skipped)


def _pending_reasons(store: Any, workloads: Mapping[str, Any], pending: Mapping[str, Any],
                     on_error: OnError | None) -> None:
    """Write the pending reasons that changed (advisory: no generation guard), in one
    transaction; a workload whose reason reads as before is not written."""
    changed = {}
    for wid, reason in pending.items():
        old = workloads[wid].pending_reason if wid in workloads else None
        if old is None or (old.code, old.message) != (reason.code, reason.message):
            changed[wid] = reason
    if not changed:
        return
    try:
        with store.write(advisory=True) as tx:
            tx.workloads.set_pending_reasons(changed)
    except LeaseLost:
        raise
    except Exception as exc:  # noqa: BLE001 - advisory; written again next tick
        _report(on_error, f"pending reasons of {len(changed)} workload(s)", exc)


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
    """Store the handles of started tasks (``lifecycle.mark_many_running``, one transaction;
    one per task if that fails otherwise than by a stale lease) or the failure to start them
    (the task fails with ``StartFailed``, its retry policy applies). Returns the handles of
    tasks that changed meanwhile, or whose start could not be recorded: the caller must stop
    those."""
    ran = [(t, h) for _w, t, h, _err in started if h is not None]
    skipped: set[int] = set()
    if ran:
        try:
            with store.write() as tx:
                skipped = set(lifecycle.mark_many_running(
                    tx, [(t, h.to_dict()) for t, h in ran], now))
        except LeaseLost:
            raise
        except Exception:  # noqa: BLE001 - one at a time below
            log.debug("batch write failed; writing one start at a time", exc_info=True)
            skipped = set()
            for t, h in ran:
                try:
                    with store.write() as tx:
                        skipped |= set(lifecycle.mark_many_running(tx, [(t, h.to_dict())], now))
                except LeaseLost:
                    raise
                except Exception as exc:  # noqa: BLE001
                    skipped.add(t.id)
                    if not isinstance(exc, Conflict):
                        _report(on_error, _describe(t), exc)

    def failed(tx: Any, entry: tuple[Any, Any, DriverHandle | None, str | None]) -> None:
        _w, t, _handle, error = entry
        lifecycle.finish_task(tx, t.id, t.generation, Phase.FAILED, now,
                              reason="StartFailed", message=f"could not start: {error}")

    _each(store, [e for e in started if e[2] is None], failed, on_error)
    return [h for t, h in ran if t.id in skipped]


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
