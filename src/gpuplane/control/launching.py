"""Steps 3 and 4 of the control loop's tick (``ControlLoop``'s ``launch`` and ``stop_due``):
start the Admitted tasks without a driver handle on their hosts' drivers and record the
handles; stop what is cancelled, preempted, past its max runtime or on a draining host, off the
loop thread (a stop may wait for its grace period). A start or a stop that fails is contained to
its task (``StartFailed``; a failed stop is asked again next tick).
"""

from __future__ import annotations

from typing import Any

from gpuplane.control import apply as store_apply
from gpuplane.control.containment import one_line
from gpuplane.control.convert import to_placement
from gpuplane.control.execution import REASON_PREEMPTED, driver_task_id, stop_reason, task_spec
from gpuplane.control.placement_claims import REQUEUE_REASON
from gpuplane.domain.errors import LeaseLost
from gpuplane.domain.workloads import Phase
from gpuplane.drivers.base import DriverHandle


class TaskLaunching:
    """The launch and stop steps, mixed into ``ControlLoop``, whose state they use: ``store``,
    ``drivers``, ``clock``, ``local_host``, ``stop_grace_s``, ``_launch_read`` (what launch
    read, handed to ``stop_due`` of the same tick), ``_stopping``/``_stop_lock``/``_pool``
    (stops under way) and the loop's ``_active``, ``_contain``, ``_fenced``,
    ``launch_refusals``/``refuse_starts`` (``Governing``) and ``claim_starts``/
    ``release_claims`` (``PlacementClaiming``)."""

    def _driver_for(self, host: Any) -> Any | None:
        driver = self.drivers.get(host.driver)
        if driver is None or (host.driver == "local" and host.name != self.local_host):
            return None
        return driver

    def launch(self, report: Any) -> None:
        now = self.clock()
        with self.store.read() as tx:
            active, host_list = self._active(tx)
            hosts = {h.name: h for h in host_list}
            due = [(w, t) for w in active if not w.cancel_requested for t in w.tasks
                   if t.phase == Phase.ADMITTED and not t.handle and t.placement is not None]
            refusals = self.launch_refusals(tx, due, now)
        self._launch_read = (active, hosts)
        if refusals:
            self.refuse_starts(refusals, now)
        todo = [(w, t, hosts[t.placement.host]) for w, t in due if t.id not in refusals
                and t.placement.host in hosts and self._driver_for(hosts[t.placement.host])]
        requeue, defer = self.claim_starts(todo, report)  # Placement first, when it is kept
        if requeue:
            self.refuse_starts(requeue, now, reason=REQUEUE_REASON, code="placement.conflict")
        started = []
        for w, t, host in todo:
            if t.id in requeue or t.id in defer:
                continue
            try:
                handle = self._driver_for(host).start(task_spec(w, t), to_placement(t.placement))
                started.append((w, t, handle, None))
            except Exception as exc:  # noqa: BLE001 - any failure is this task's alone
                self._contain(report, "launch", f"task:{t.id}:{t.attempt}",
                              f"task {t.index} of workload {w.id} on {t.placement.host}", exc)
                started.append((w, t, None, one_line(exc)))
        self.release_claims(driver_task_id(w.id, t.index, t.attempt)
                            for w, t, handle, _ in started if handle is None)
        if not started:
            return
        try:
            orphans = store_apply.record_starts(
                self._fenced(), started, self.clock(),
                on_error=lambda what, exc: self._contain(report, "launch", what,
                                                         f"recording the start of {what}", exc))
        except LeaseLost:
            # we are stale: the new leader starts these tasks itself; stop our copies
            for _w, _t, handle, _err in started:
                if handle is not None:
                    self._stop_async(handle, self.stop_grace_s)
            raise
        report.started += sum(1 for e in started if e[2] is not None) - len(orphans)
        if orphans:
            self._stop_orphans(orphans)

    def _stop_orphans(self, orphans: list[DriverHandle]) -> None:
        """Stop what we started for tasks that changed before we could record it (cancelled,
        or recorded by an earlier leader) unless the stored handle is this very attempt."""
        with self.store.read() as tx:
            stored = {t.handle.get("task_id") for t in tx.tasks.list_active() if t.handle}
        gone = [h for h in orphans if h.task_id not in stored]
        for handle in gone:
            self._stop_async(handle, self.stop_grace_s)
        self.release_claims(h.task_id for h in gone)

    # -- 4. stop ---------------------------------------------------------------
    def stop_due(self, report: Any) -> None:
        now = self.clock()
        with self.store.read() as tx:
            cancelled = tx.workloads.list_cancel_requested()
            if self._launch_read is None:
                active, hosts = tx.workloads.list_active(), tx.hosts.list_all()
            else:  # what launch read this tick: the tasks it just started are due next tick
                active, hosts = self._launch_read[0], list(self._launch_read[1].values())
        draining = {h.name for h in hosts if h.state == "draining"}

        def on_error(what: str, exc: BaseException) -> None:
            self._contain(report, "stop", what, f"recording the stop of {what}", exc)

        store_apply.cancel_unstarted(self._fenced(), cancelled, now, on_error=on_error)
        due = []
        for w in active:
            for t in w.tasks:
                try:
                    why = stop_reason(w, t, now, draining)
                except Exception as exc:  # noqa: BLE001
                    self._contain(report, "stop", f"task:{t.id}",
                                  f"task {t.index} of workload {w.id}", exc)
                    continue
                if why is not None:
                    due.append((w, t, why))
        marks = [(t, reason, message) for _, t, (reason, message) in due if t.reason != reason]
        if marks:
            store_apply.mark_stopping(self._fenced(), marks, on_error=on_error)
        for w, t, (reason, _) in due:
            grace = self.stop_grace_s
            try:
                if reason == REASON_PREEMPTED and t.preemption and "grace_s" in t.preemption:
                    grace = float(t.preemption["grace_s"])  # type: ignore[arg-type]
                if self._stop_async(DriverHandle.from_dict(t.handle), grace):
                    report.stops += 1
            except Exception as exc:  # noqa: BLE001
                self._contain(report, "stop", f"task:{t.id}",
                              f"task {t.index} of workload {w.id}", exc)

    def _stop_async(self, handle: DriverHandle, grace_s: float) -> bool:
        """Stop ``handle`` off the loop thread; False when no driver runs it or a stop of it
        is already under way. A stop that raises is logged and counted; the next tick asks
        again while the task still runs."""
        driver = self.drivers.get(handle.driver)
        if driver is None:
            return False
        key = f"{handle.driver}:{handle.task_id}"
        with self._stop_lock:
            if key in self._stopping:
                return False
            self._stopping.add(key)

        def run() -> None:
            try:
                driver.stop(handle, grace_s)
            except Exception as exc:  # noqa: BLE001 - retried next tick
                self._contain(None, "stop", key, f"driver task {key}", exc)
            finally:
                with self._stop_lock:
                    self._stopping.discard(key)

        self._pool.submit(run)
        return True

