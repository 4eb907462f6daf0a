"""The one reconciler (STYLE habit 8): observe -> load -> decide -> apply -> drivers.

Every tick of the leader, in this order (what ended is freed before the cycle decides, as the
simulator does):

1. ``observe`` (``control/observing.py``): drivers report on every task with a handle
   (adopting tasks started before a restart); changes go back to the store with events, usage
   and audit entries.
2. ``schedule``: a short read transaction builds the snapshot (hosts, tasks holding resources)
   and the pending work; ``decide`` (scheduling layer, pure) returns admissions, preemptions
   and pending reasons; short write transactions apply them (``control/apply.py``), each
   admission checked against the generations of the host, workload and tasks it was decided
   on: one that changed meanwhile (a cancel) loses only its own admission, which the next tick
   decides again on fresh data; the fair-share usage history advances every tick.
3. ``launch`` (``control/launching.py``): after commit, Admitted tasks without a driver
   handle are started by the driver of their host; handles are stored in another short
   transaction.
4. ``stop`` (``control/launching.py``): tasks to cancel, preempt or past their max runtime are
   stopped (off the loop thread, since a stop may wait for a grace period); after
   ``schedule``, so the victims of this tick's preemptions are signalled at once.
5. ``remember``: the scheduler memory that changed (``control/memory.py``) is written in a
   fenced transaction; a process that takes the lease loads it first.
6. ``reconcile_placement`` (when ``placement`` is given): a Placement sync is started in the
   background when due (``control/placement_sync.py``); the tick never waits for it.

No tenant can stall the loop (DESIGN invariant 8): a failure that belongs to one task or one
host is contained to it. A task whose start raises (any exception, not only ``DriverError``)
fails with reason ``StartFailed`` (the workload's retry policy and backoff apply); a task the
driver cannot observe ``observe_failure_limit`` ticks in a row is stopped and fails with
``ObserveFailed``; a failed stop is retried next tick; a host the snapshot cannot book (shrunk
under its running tasks, or holding a task that cannot be read) is quarantined: it keeps its
tasks and takes no new ones (``convert.build_snapshot``). Each such failure is a WARNING log
line (once per task or host; repeats go to DEBUG), an event, and a count in ``LoopStats``
(``gpuplane_loop_task_failures_total{stage}`` on ``/metrics``); the rest of the tick goes on.

Only the holder of the database lease ``scheduler`` runs ticks (``control/leadership.py``:
holding, renewing, losing and releasing it); every process serves the API.
The lease's expiry is judged by the database's clock, and every write transaction of a tick
is fenced by the lease epoch the loop was granted (``store/leases.py``): a leader that was
paused (SIGSTOP, a long GC, a partition) past its TTL and wakes up mid-tick commits nothing; its
write raises ``LeaseLost`` and the loop stops leading at once (a WARNING and a ``lost`` line in
the lease log). No network or driver call happens inside a transaction.
"""

from __future__ import annotations

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
from gpuplane.control.convert import (build_snapshot, choose_jurisdiction,
                                      free_gpu_by_jurisdiction, holdings, load_quotas,
                                      to_pending)
from gpuplane.control.decide import Decisions, decide
from gpuplane.control.governing import AuditSigning, Governing, governance_view
from gpuplane.control.launching import TaskLaunching
from gpuplane.control.leadership import LeaseHolder, holder_id
from gpuplane.control.memory import PersistedState, SchedulerMemory
from gpuplane.control.observing import TaskObserving
from gpuplane.control.placement_claims import PlacementClaiming
from gpuplane.control.placement_sync import PlacementReconciler, PlacementReconciling
from gpuplane.control.containment import LoopStats, one_line
from gpuplane.domain.errors import Conflict, LeaseLost
from gpuplane.scheduling.admission.fairshare import UsageHistory
from gpuplane.scheduling.cycle import CycleOptions
from gpuplane.scheduling.placement import profiles
from gpuplane.scheduling.placement.online import OnlineWorkload
from gpuplane.store.leases import LeaseGrant

log = logging.getLogger("gpuplane.control")

#: the name of the fair-share usage history in the scheduler memory
FAIRSHARE_MEMORY = "fairshare"
#: the name of the online placement workload model in the scheduler memory
PLACEMENT_MEMORY = "placement_workload"


@dataclass
class TickReport:
    leader: bool = False
    admitted: int = 0
    started: int = 0
    observed_changes: int = 0
    stops: int = 0
    conflicts: int = 0
    #: a fenced write was refused: the lease changed hands or expired; the loop stopped leading
    lease_lost: bool = False
    errors: list[str] = field(default_factory=list)
    #: contained per-task / per-host failures of this tick, by stage
    failures: dict[str, int] = field(default_factory=dict)


class ControlLoop(Governing, PlacementClaiming, PlacementReconciling, TaskObserving,
                  TaskLaunching, LeaseHolder):
    """Runs ticks while holding the scheduler lease.

    ``drivers`` maps a host's ``driver`` name to a driver; ``local_host`` is the host the
    ``local`` driver runs tasks on (tasks of other ``local`` hosts belong to another process).
    ``clock`` returns wall-clock seconds; ``rng`` seeds tie-breaks. ``stop_grace_s`` is the
    grace period of cancels and deadlines; ``preempt_grace_s`` the one preempted tasks get
    (signal, grace, then kill; the outcome and the work lost are recorded).
    ``observe_failure_limit``: ticks in a row a task's observation may raise before the task
    is stopped and failed. ``stats`` collects contained failures (a fresh one by default).
    ``memory``: more named objects to persist across leaders besides the fair-share usage
    history (``fairshare``), see ``control/memory.py``; ``memory_every_s``: how often at most
    the changed ones are written. ``placement``: keeps an OpenStack Placement in sync
    (``control/placement_sync.py``).
    """

    def __init__(self, store: Any, drivers: Mapping[str, Any], *, holder: str,
                 lease_ttl_s: float = 15.0, interval_s: float = 1.0,
                 local_host: str | None = None, stop_grace_s: float = 10.0,
                 clock: Callable[[], float] = time.time,
                 rng: np.random.Generator | None = None,
                 lease_log: Path | None = None, preempt_grace_s: float = 30.0,
                 observe_failure_limit: int = 3, stats: LoopStats | None = None,
                 memory: Mapping[str, Any] | None = None, memory_every_s: float = 5.0,
                 audit: AuditSigning | None = None,
                 placement: PlacementReconciler | None = None) -> None:
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
        #: the workload distribution the default placement policy learns online (issue 11):
        #: each arriving workload counted once (``schedule``); plain data, ``to_dict()`` /
        #: ``restore(d)`` so a new leader resumes it (placement/online.py)
        self.workload_model = OnlineWorkload()
        #: what the scheduler learns over time, kept in the store by the leader
        #: (``control/memory.py``); loaded whenever this process takes the lease. The workload
        #: model is restored in place: the placement profile holds this very object.
        self.memory = SchedulerMemory(
            {FAIRSHARE_MEMORY: UsageHistory(),
             PLACEMENT_MEMORY: PersistedState(self.workload_model.to_dict,
                                              self.workload_model.restore),
             **(memory or {})}, every_s=memory_every_s)
        self._memory_epoch: int | None = None
        # one placement profile for every cycle (plugins keep their caches in it); the grace
        # period each preempted task gets to checkpoint and exit after its SIGTERM
        self.cycle_options = CycleOptions(grace_s=preempt_grace_s,
                                          profile=profiles.get(online=self.workload_model))
        self.leader_until = 0.0
        #: signs audit checkpoints while leader (``governing.py``); None: this loop does not
        self.audit = audit
        self.placement = placement  # syncs OpenStack Placement in the background, or None
        #: (task id, attempt) of confidential tasks already evicted/flagged for a lapsed appraisal
        self._flagged: set[tuple[int, int]] = set()
        #: the lease grant we hold (its epoch fences our writes), None when not the leader
        self.grant: LeaseGrant | None = None
        self._tick_grant: LeaseGrant | None = None
        #: what ``launch`` read, handed to ``stop_due`` of the same tick (one read less)
        self._launch_read: tuple[list[Any], dict[str, Any]] | None = None
        #: the active workloads and hosts a step of this tick read, with ``_writes`` then
        #: (``_seen``/``_saw``); the loop's writes are counted by ``_fenced``
        self._read: tuple[int, list[Any], list[Any]] | None = None
        self._writes = 0
        self._lease_lock = threading.Lock()
        self._stopping: set[str] = set()
        self._stop_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gpuplane-stop")
        self.observe_failure_limit = observe_failure_limit
        self.stats = stats if stats is not None else LoopStats()
        self.quarantined: dict[str, str] = {}
        self._observe_failures: dict[str, int] = {}
        self._warned: set[tuple[str, str]] = set()

    # -- memory --------------------------------------------------------------
    @property
    def history(self) -> UsageHistory:
        """The fair-share usage history (decayed), advanced every tick, kept across leaders."""
        return self.memory[FAIRSHARE_MEMORY]

    def release(self) -> None:
        """Write the scheduler memory that changed (however recently it was last written), then
        give the lease back: a graceful hand-over loses nothing the scheduler learned."""
        if self.grant is not None:
            try:
                self.remember(force=True)
            except Exception as exc:  # noqa: BLE001 - the next leader resumes an older copy
                log.warning("scheduler memory not saved at shutdown: %s", one_line(exc))
            self.final_checkpoint()
        super().release()

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

    def tick(self, renew: bool = True) -> TickReport:
        """One reconciliation pass. ``renew``: take or renew the lease first (when no lease
        thread runs, as in tests); otherwise act only if the lease is already held."""
        report = TickReport()
        if renew:
            self._lease(self.clock())
        if not self.is_leader:
            return report
        report.leader = True
        self._tick_grant = grant = self.grant  # one epoch fences every write of this tick
        try:
            if grant is not None and grant.epoch != self._memory_epoch:
                self.memory.load(self.store)  # a new term: resume the memory of the last one
                self._memory_epoch = grant.epoch
            with self.stats.timed("tick"):
                self._steps(report, grant)
        finally:
            self._tick_grant = None
            self._launch_read = self._read = None
        return report

    def _steps(self, report: TickReport, grant: LeaseGrant | None) -> None:
        for step in (self.observe, self.recheck_attestation, self.schedule, self.launch,
                     self.stop_due, self.remember, self.sign_checkpoint, self.reconcile_placement):
            if not self.is_leader:
                break
            try:
                with self.stats.timed(step.__name__):  # /metrics: step and cycle latency
                    step(report)
            except LeaseLost as exc:
                report.lease_lost = True
                self._lose(grant, f"{step.__name__}: {exc}")
                break
            except Conflict as exc:
                report.conflicts += 1
                log.debug("%s: %s; retrying next tick", step.__name__, exc)
            except Exception as exc:  # noqa: BLE001 - one step failing must not skip the others
                self.stats.step_failed(step.__name__)
                report.errors.append(f"{step.__name__}: {one_line(exc)}")
                log.warning("control loop step %s failed; the other steps go on: %s",
                            step.__name__, one_line(exc), exc_info=log.isEnabledFor(logging.DEBUG))

    # -- reads shared by the steps of a tick ---------------------------------
    def _seen(self) -> tuple[list[Any], list[Any]] | None:
        """The active workloads and hosts an earlier step of this tick read, if the loop has
        written nothing since (else None: read again). Safe to act on: tasks start and stop
        only through this loop, and each of its writes is checked against the generations of
        the rows it changes (an admission: its hosts, tasks and workload)."""
        r = self._read
        return (r[1], r[2]) if r is not None and r[0] == self._writes else None

    def _active(self, tx: Any) -> tuple[list[Any], list[Any]]:
        """The active workloads and hosts: what this tick read already (:meth:`_seen`), else
        read in ``tx``."""
        return self._seen() or (tx.workloads.list_active(), tx.hosts.list_all())

    def _saw(self, active: list[Any], hosts: list[Any]) -> None:
        self._read = (self._writes, active, hosts)

    # -- containment ---------------------------------------------------------
    def _contain(self, report: TickReport | None, stage: str, subject: str, what: str,
                 exc: BaseException | str) -> None:
        """Count and log one contained failure: a WARNING the first time for ``subject`` (a
        task or host key) at this ``stage``, DEBUG when it repeats."""
        self.stats.failed(stage)
        if report is not None:
            report.failures[stage] = report.failures.get(stage, 0) + 1
        text = exc if isinstance(exc, str) else one_line(exc)
        key = (stage, subject)
        if key in self._warned:
            log.debug("%s failed again for %s (contained): %s", stage, what, text)
            return
        if len(self._warned) > 10_000:
            self._warned.clear()
        self._warned.add(key)
        log.warning("%s failed for %s; contained, the loop goes on: %s", stage, what, text,
                    exc_info=isinstance(exc, BaseException) and log.isEnabledFor(logging.DEBUG))

    # -- 2. schedule ---------------------------------------------------------
    def schedule(self, report: TickReport) -> None:
        now = self.clock()
        with self.store.read() as tx:
            active, hosts = self._active(tx)
            waiting = tx.workloads.list_schedulable(now)
            quotas = load_quotas(tx)
            gov = governance_view(tx, hosts, now) if waiting else None
        self._saw(active, hosts)
        self.history.advance(now, holdings(active))
        if gov is None:
            return
        built = build_snapshot(hosts, active, now, attested=gov.attested)
        self._note_quarantine(report, built.quarantined, built.dropped, now)
        snap, running = built.snap, built.running
        free = free_gpu_by_jurisdiction(snap, built.records, skip=built.quarantined)
        items, refused = [], {}
        for w in waiting:
            try:
                allowed, why = gov.allowed(w)
                if why is not None:
                    refused[w.id] = why
                    continue
                item = to_pending(w, now, choose_jurisdiction(allowed, free))
            except Exception as exc:  # noqa: BLE001 - one unreadable workload waits alone
                self._contain(report, "snapshot", f"workload:{w.id}",
                              f"pending workload {w.id} (left out of this cycle)", exc)
                continue
            if item is not None:
                items.append(item)
        if not items and not refused:
            return
        # count newly arrived workloads once in the online placement model (seen ones skip)
        self.workload_model.arrive_many((i.work.id, i.work.submitted_at, i.work.tasks)
                                        for i in items)
        decisions = decide(snap, [i.work for i in items], running, quotas, now, self.rng,
                           self.cycle_options, history=self.history) if items else Decisions()
        decisions.pending.update(refused)
        if not self.is_leader:
            return
        applied = store_apply.apply_decisions(
            self._fenced(), decisions, {i.work.id: i for i in items},
            {w.id: w for w in waiting}, {h.name: h.generation for h in hosts}, now,
            on_error=lambda what, exc: self._contain(report, "snapshot", what,
                                                     f"applying the decision on {what}", exc))
        report.admitted += applied.admitted
        report.conflicts += applied.conflicts

    def remember(self, report: TickReport | None = None, force: bool = False) -> None:
        """Write the scheduler memory that changed (at most every ``memory_every_s`` unless
        ``force``), in a fenced transaction of this tick."""
        now = self.clock()
        due = self.memory.due(now, force)
        if not due:
            return
        fenced = self._fenced()
        with fenced.write() as tx:
            self.memory.write(tx, due, fenced.grant.epoch, now)
        self.memory.committed(due, now)

    def _note_quarantine(self, report: TickReport, quarantined: Mapping[str, str],
                         dropped: Mapping[str, str], now: float) -> None:
        """Log, count and record (as host events) the hosts that entered or left quarantine
        since the last snapshot; log the running tasks left out of the snapshot."""
        for wid, why in dropped.items():
            self._contain(None, "snapshot", f"workload:{wid}",
                          f"running workload {wid} (left out of the snapshot)", why)
        entered = {h: why for h, why in quarantined.items() if self.quarantined.get(h) != why}
        left = [h for h in self.quarantined if h not in quarantined]
        self.quarantined = dict(quarantined)
        self.stats.set_quarantined(quarantined)
        for host, why in entered.items():
            self._warned.discard(("snapshot", f"host:{host}"))
            self._contain(report, "snapshot", f"host:{host}",
                          f"host {host} (quarantined: no new tasks)", why)
        for host in left:
            log.warning("host %s leaves quarantine: its running tasks fit again", host)
        if not entered and not left:
            return
        try:
            with self._fenced().write() as tx:
                for host, why in entered.items():
                    tx.events.add(now, "Warning", "HostQuarantined",
                                  f"host {host} takes no new tasks: {why}; its running tasks "
                                  "go on. Drain it, or give it back its capacity", host=host)
                for host in left:
                    tx.events.add(now, "Normal", "HostQuarantineLifted",
                                  f"host {host} takes new tasks again: its running tasks fit",
                                  host=host)
        except LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - the events are a courtesy; scheduling goes on
            log.warning("could not record quarantine events: %s", one_line(exc))


__all__ = ["ControlLoop", "TickReport", "holder_id"]
