"""The one reconciler (STYLE habit 8): load -> decide -> apply -> drivers -> observe.

Every tick of the leader:

1. ``schedule``: a short read transaction builds the snapshot (hosts, tasks holding resources)
   and the pending work; ``decide`` (scheduling layer, pure) returns admissions, preemptions
   and pending reasons; a short write transaction applies them, guarded by the generations of
   every host, workload and task it read (a conflict rolls the whole cycle back; the next tick
   reruns it on fresh data).
2. ``launch``: after commit, Admitted tasks without a driver handle are started by the driver
   of their host; handles are stored in another short transaction.
3. ``stop``: tasks to cancel, preempt or past their max runtime are stopped (off the loop
   thread, since a stop may wait for a grace period).
4. ``observe``: drivers report on every task with a handle (adopting tasks started before a
   restart); changes go back to the store with events, usage and audit entries.

Only the holder of the database lease ``scheduler`` runs ticks; every process serves the API.
No network or driver call happens inside a transaction.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpuplane.control import apply as store_apply
from gpuplane.control.convert import (choose_jurisdiction, free_gpu_by_jurisdiction,
                                      load_quotas, mig_as_now, schedulable_view, to_host,
                                      to_pending, to_placement, to_running)
from gpuplane.control.decide import decide
from gpuplane.control.execution import (REASON_CANCELLED, REASON_DEADLINE, REASON_DRAINED,
                                        REASON_PREEMPTED, STOP_REASONS, outcome, task_spec)
from gpuplane.domain.errors import Conflict
from gpuplane.domain.workloads import Phase
from gpuplane.drivers.base import DriverError, DriverHandle
from gpuplane.scheduling.cycle import CycleOptions
from gpuplane.scheduling.placement import profiles
from gpuplane.scheduling.snapshot import ClusterSnapshot

log = logging.getLogger("gpuplane.control")


@dataclass
class TickReport:
    leader: bool = False
    admitted: int = 0
    started: int = 0
    observed_changes: int = 0
    stops: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)


class ControlLoop:
    """Runs ticks while holding the scheduler lease.

    ``drivers`` maps a host's ``driver`` name to a driver; ``local_host`` is the host the
    ``local`` driver runs tasks on (tasks of other ``local`` hosts belong to another process).
    ``clock`` returns wall-clock seconds; ``rng`` seeds tie-breaks. ``stop_grace_s`` is the
    grace period of cancels and deadlines; ``preempt_grace_s`` the one preempted tasks get
    (signal, grace, then kill; the outcome and the work lost are recorded).
    """

    def __init__(self, store: Any, drivers: Mapping[str, Any], *, holder: str,
                 lease_ttl_s: float = 15.0, interval_s: float = 1.0,
                 local_host: str | None = None, stop_grace_s: float = 10.0,
                 clock: Callable[[], float] = time.time,
                 rng: np.random.Generator | None = None,
                 lease_log: Path | None = None, preempt_grace_s: float = 30.0) -> None:
        self.store = store
        self.drivers = dict(drivers)
        self.holder = holder
        self.lease_ttl_s = lease_ttl_s
        self.interval_s = interval_s
        self.local_host = local_host
        self.stop_grace_s = stop_grace_s
        self.clock = clock
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.lease_log = lease_log
        # one placement profile for every cycle (plugins keep their caches in it); the grace
        # period each preempted task gets to checkpoint and exit after its SIGTERM
        self.cycle_options = CycleOptions(grace_s=preempt_grace_s, profile=profiles.get())
        self.leader_until = 0.0
        self._stopping: set[str] = set()
        self._stop_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gpuplane-stop")

    # -- lease ---------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.clock() < self.leader_until

    def _lease(self, now: float) -> bool:
        """Hold (acquire or renew) the scheduler lease; True while we are the leader.

        We act only while ``now`` is well inside the lease we were granted (a third of the
        TTL before it ends), so a paused process cannot overlap with its successor."""
        was = self.is_leader
        try:
            ok = self.store.leases.try_acquire(self.holder, self.lease_ttl_s, now)
        except Exception as exc:  # noqa: BLE001 - database down: not the leader
            log.warning("lease: %s", exc)
            ok = False
        if ok:
            self.leader_until = now + self.lease_ttl_s * 2 / 3
            self._note("acquired" if not was else "renewed", now)
        else:
            if was:
                self._note("lost", now)
            self.leader_until = 0.0
        return ok

    def _note(self, what: str, now: float) -> None:
        if what != "renewed":
            log.info("scheduler lease %s by %s", what, self.holder)
        if self.lease_log is not None:
            with open(self.lease_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"holder": self.holder, "event": what, "at": now,
                                     "valid_until": self.leader_until}) + "\n")

    def release(self) -> None:
        """Give the lease back (on shutdown) so another process takes over at once."""
        if self.leader_until:
            try:
                self.store.leases.release(self.holder)
            except Exception as exc:  # noqa: BLE001
                log.warning("lease release: %s", exc)
            self._note("released", self.clock())
            self.leader_until = 0.0

    # -- running -------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick every ``interval_s`` until ``stop`` is set; then release the lease.

        A separate thread keeps the lease (renewing every third of its TTL), so a long tick
        never lets it lapse while this process is alive; ticks only act while it is held."""
        keeper = threading.Thread(target=self._keep_lease, args=(stop,),
                                  name="gpuplane-lease", daemon=True)
        keeper.start()
        try:
            while not stop.is_set():
                try:
                    self.tick(renew=False)
                except Exception:  # noqa: BLE001 - one bad tick must not end the loop
                    log.exception("control loop tick failed")
                stop.wait(self.interval_s)
        finally:
            keeper.join(timeout=self.lease_ttl_s)
            self.release()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _keep_lease(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._lease(self.clock())
            stop.wait(self.lease_ttl_s / 3)

    def tick(self, renew: bool = True) -> TickReport:
        """One reconciliation pass. ``renew``: take or renew the lease first (when no lease
        thread runs, as in tests); otherwise act only if the lease is already held."""
        report = TickReport()
        if renew:
            self._lease(self.clock())
        if not self.is_leader:
            return report
        report.leader = True
        for step in (self.schedule, self.launch, self.stop_due, self.observe):
            if not self.is_leader:
                break
            try:
                step(report)
            except Conflict as exc:
                report.conflicts += 1
                log.debug("%s: %s; retrying next tick", step.__name__, exc)
        return report

    # -- 1. schedule ---------------------------------------------------------
    def schedule(self, report: TickReport) -> None:
        now = self.clock()
        with self.store.read() as tx:
            hosts = tx.hosts.list_all()
            active = tx.workloads.list_active()
            waiting = tx.workloads.list_schedulable(now)
            quotas = load_quotas(tx)
        if not waiting:
            return
        domain_hosts, running = mig_as_now([to_host(h) for h in hosts], to_running(active, now))
        snap = ClusterSnapshot.build(schedulable_view(domain_hosts, hosts),
                                     [(r.task, r.placement) for r in running])
        free = free_gpu_by_jurisdiction(snap, hosts)
        items = [p for p in (to_pending(w, now, choose_jurisdiction(w, free)) for w in waiting)
                 if p is not None]
        if not items:
            return
        decisions = decide(snap, [i.work for i in items], running, quotas, now, self.rng,
                           self.cycle_options)
        if not self.is_leader:
            return
        report.admitted += store_apply.apply_decisions(
            self.store, decisions, {i.work.id: i for i in items},
            {w.id: w for w in waiting}, {h.name: h.generation for h in hosts}, now)

    # -- 2. launch -----------------------------------------------------------
    def _driver_for(self, host: Any) -> Any | None:
        driver = self.drivers.get(host.driver)
        if driver is None or (host.driver == "local" and host.name != self.local_host):
            return None
        return driver

    def launch(self, report: TickReport) -> None:
        with self.store.read() as tx:
            active = tx.workloads.list_active()
            hosts = {h.name: h for h in tx.hosts.list_all()}
        started = []
        for w in active:
            if w.cancel_requested:
                continue
            for t in w.tasks:
                if t.phase != Phase.ADMITTED or t.handle or t.placement is None:
                    continue
                host = hosts.get(t.placement.host)
                driver = self._driver_for(host) if host is not None else None
                if driver is None:
                    continue
                try:
                    handle = driver.start(task_spec(w, t), to_placement(t.placement))
                    started.append((w, t, handle, None))
                except DriverError as exc:
                    started.append((w, t, None, str(exc)))
        if not started:
            return
        orphans = store_apply.record_starts(self.store, started, self.clock())
        report.started += len(started) - len(orphans)
        if orphans:
            self._stop_orphans(orphans)

    def _stop_orphans(self, orphans: list[DriverHandle]) -> None:
        """Stop what we started for tasks that changed before we could record it (cancelled,
        or recorded by an earlier leader) unless the stored handle is this very attempt."""
        with self.store.read() as tx:
            stored = {t.handle.get("task_id") for t in tx.tasks.list_active() if t.handle}
        for handle in orphans:
            if handle.task_id not in stored:
                self._stop_async(handle, self.stop_grace_s)

    # -- 3. stop ---------------------------------------------------------------
    def stop_due(self, report: TickReport) -> None:
        now = self.clock()
        with self.store.read() as tx:
            active = tx.workloads.list_active()
            cancelled = tx.workloads.list_cancel_requested()
            draining = {h.name for h in tx.hosts.list_all() if h.state == "draining"}
        store_apply.cancel_unstarted(self.store, cancelled, now)
        due = [(t, why) for w in active for t in w.tasks
               if (why := stop_reason(w, t, now, draining)) is not None]
        marks = [(t, reason, message) for t, (reason, message) in due if t.reason != reason]
        if marks:
            store_apply.mark_stopping(self.store, marks)
        for t, (reason, _) in due:
            grace = self.stop_grace_s
            if reason == REASON_PREEMPTED and t.preemption and "grace_s" in t.preemption:
                grace = float(t.preemption["grace_s"])  # type: ignore[arg-type]
            if self._stop_async(DriverHandle.from_dict(t.handle), grace):
                report.stops += 1

    def _stop_async(self, handle: DriverHandle, grace_s: float) -> bool:
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
            except Exception:  # noqa: BLE001
                log.exception("stopping %s failed", key)
            finally:
                with self._stop_lock:
                    self._stopping.discard(key)

        self._pool.submit(run)
        return True

    # -- 4. observe ------------------------------------------------------------
    def observe(self, report: TickReport) -> None:
        with self.store.read() as tx:
            active = tx.workloads.list_active()
            hosts = {h.name: h for h in tx.hosts.list_all()}
        by_driver: dict[str, list[tuple[Any, Any, DriverHandle]]] = {}
        for w in active:
            for t in w.tasks:
                if not t.handle or not t.phase.holds_resources:
                    continue
                host = hosts.get(t.placement.host) if t.placement else None
                if host is None or self._driver_for(host) is None:
                    continue
                h = DriverHandle.from_dict(t.handle)
                by_driver.setdefault(h.driver, []).append((w, t, h))
        changes = []
        now = self.clock()
        for name, entries in by_driver.items():
            observations = self.drivers[name].observe([h for _, _, h in entries])
            for (w, t, h), obs in zip(entries, observations):
                change = outcome(t, obs, now)
                if change is not None:
                    changes.append((w, t, h, change))
        if not changes:
            return
        ended = store_apply.record_observations(self.store, changes, self.clock())
        report.observed_changes += len(changes)
        for h in ended:
            forget = getattr(self.drivers.get(h.driver), "forget", None)
            if forget is not None:
                forget([h])


def stop_reason(w: Any, t: Any, now: float, draining: set[str]) -> tuple[str, str] | None:
    """Why the loop must stop running task ``t`` of ``w`` now, as (reason, message), or None.
    A reason the task already carries (a preemption decided by the cycle) is kept."""
    if not t.handle or t.phase != Phase.RUNNING:
        return None
    if w.cancel_requested:
        return REASON_CANCELLED, "cancel requested"
    if t.reason in STOP_REASONS:
        return t.reason, t.message or t.reason
    if w.spec.max_runtime_s and t.started_at and now - t.started_at > w.spec.max_runtime_s:
        return REASON_DEADLINE, "exceeded its max runtime"
    if t.placement is not None and t.placement.host in draining:
        return REASON_DRAINED, f"host {t.placement.host} is draining"
    return None


def holder_id(host: str, port: int) -> str:
    """A lease holder name unique per process: host, port, pid, start time."""
    import os

    return f"{host}:{port}:{os.getpid()}:{int(time.time() * 1000) % 10**9}"


__all__ = ["ControlLoop", "TickReport", "holder_id"]
