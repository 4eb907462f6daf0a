"""The leader keeps an OpenStack Placement converged on gpuplane's inventory (issue 9, item 1).

``PlacementReconciler`` runs ``PlacementSync`` (``drivers/openstack/sync.py``) every
``interval_s`` and at once when its loop becomes the leader (a new lease epoch). A run reads the
hosts, maps them (``tree.fleet_tree``) and syncs, all in a background thread: a cold sync of a
big fleet takes tens of seconds, and the loop's tick only checks whether a run is due and starts
one (at most one at a time). One ``PlacementSync`` is kept across runs, so a steady-state run
whose providers' generations did not move costs three reads and no write.

After the inventory, the run reconciles the allocations (``claims.observe_allocations``, one
read per provider with inventory: ~2 s for 200 hosts): a
consumer holding allocations on gpuplane's providers that no running or starting task explains
is a leak, removed; a running task whose claim is missing or differs is claimed again (the loop
claims before it starts a task and releases when it ends: ``control/placement_claims.py``).

Each change the run made becomes one audit entry (action ``openstack.sync``, actor
``scheduler``, object ``placement_provider`` / the provider name, detail: the change's
``action``, ``uuid``, ``detail`` and the ``placement_url``), each allocation repair one
``openstack.allocation_repair`` (object ``placement_consumer``; detail: ``leak_removed`` or
``claim_restored``, the task, the allocations before and after), and each problem that the previous
run did not report one ``openstack.sync_problem``, in one transaction fenced by the lease
epoch the run was started under (a deposed leader records nothing). A run with no change and no
new problem writes nothing. A failed run (Placement unreachable, a host that cannot be mapped)
is logged (WARNING the first time, DEBUG while it repeats, INFO when it recovers), counted
(``failures``, and ``step_failures["reconcile_placement"]`` on ``/metrics``) and retried at the
next interval; it never reaches the loop.

``PlacementReconciling`` is the ``ControlLoop`` mixin: the ``reconcile_placement`` step and
the stop of the thread on ``release()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from gpuplane.control.containment import one_line
from gpuplane.control.execution import driver_task_id
from gpuplane.control.placement_claims import placement_project
from gpuplane.domain.workloads import Phase
from gpuplane.drivers.openstack import claims
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.sync import PlacementSync, SyncReport
from gpuplane.drivers.openstack.tree import MANAGED_TRAIT, fleet_tree, host_view

log = logging.getLogger("gpuplane.control")

SYNC_ACTION = "openstack.sync"
PROBLEM_ACTION = "openstack.sync_problem"
REPAIR_ACTION = "openstack.allocation_repair"
OBJECT_KIND = "placement_provider"


class PlacementReconciler:
    """Periodic, background, audited ``PlacementSync`` of the store's hosts into one Placement.

    Owns ``client`` (closed by ``stop``). ``poke`` is called from every leader tick; the rest
    happens on the reconciler's own thread. ``runs``, ``failures``, ``last_report`` and
    ``last_error`` say how it goes (read from any thread)."""

    def __init__(self, client: PlacementClient, *, interval_s: float = 60.0,
                 marker: str = MANAGED_TRAIT, whole_class: str = "VGPU",
                 join_timeout_s: float = 10.0) -> None:
        self.client = client
        self.url = client.url
        self.interval_s = interval_s
        self.marker = marker
        self.whole_class = whole_class
        self.join_timeout_s = join_timeout_s
        self.sync = PlacementSync(client, marker=marker)
        self.runs = 0
        self.failures = 0
        self.last_report: SyncReport | None = None
        self.last_error: str | None = None
        self._next = float("-inf")
        self._epoch: int | None = None
        self._problems: set[str] = set()  # reported by the last run: not recorded again
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @classmethod
    def from_settings(cls, settings: Any) -> PlacementReconciler | None:
        """The reconciler ``Settings`` ask for; None when ``placement_url`` is not set."""
        if not settings.placement_url:
            return None
        client = PlacementClient(settings.placement_url,
                                 settings.placement_token.get_secret_value())
        return cls(client, interval_s=settings.placement_sync_interval_s)

    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def poke(self, fenced: Any, now: float,
             on_failure: Callable[[], None] | None = None) -> bool:
        """Start a run if one is due (the interval passed since the last start, or ``fenced``
        carries a lease epoch this reconciler has not run under) and none is under way.
        ``fenced``: the loop's ``FencedStore`` (reads hosts; its grant fences the audit write).
        ``now``: the loop's clock. True when a run was started."""
        epoch = fenced.grant.epoch
        with self._lock:
            if self._stopped or self.running:
                return False
            if epoch == self._epoch and now < self._next:
                return False
            self._epoch, self._next = epoch, now + self.interval_s
            self._thread = threading.Thread(target=self._run, args=(fenced, now, on_failure),
                                            name="gpuplane-placement-sync", daemon=True)
            self._thread.start()
        return True

    def make_due(self) -> None:
        """Run at the next ``poke`` (a claim found Placement's inventory behind)."""
        with self._lock:
            self._next = float("-inf")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run under way (if any); True when none is running any more."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self.running

    def stop(self) -> None:
        """No new run; wait up to ``join_timeout_s`` for the one under way, then close the
        client (a run still going fails on the closed client and records nothing)."""
        with self._lock:
            self._stopped = True
        if not self.wait(self.join_timeout_s):
            log.warning("placement sync still running at shutdown; its changes are not "
                        "audited (the next leader's sync finds no drift to record)")
        self.client.close()

    # -- the run (own thread) -----------------------------------------------------------------
    def _run(self, fenced: Any, at: float, on_failure: Callable[[], None] | None) -> None:
        try:
            with fenced.read() as tx:
                hosts = tx.hosts.list_all()
            desired = fleet_tree(hosts, whole_class=self.whole_class, marker=self.marker)
            report = self.sync.sync(desired)
            repairs, problems = self._reconcile_allocations(fenced, hosts, desired)
            report.problems.extend(problems)
            self._record(fenced, at, report, repairs)
        except Exception as exc:  # noqa: BLE001 - logged and counted; the next interval retries
            self.failures += 1
            if on_failure is not None:
                on_failure()
            text = one_line(exc)
            if text != self.last_error:
                log.warning("placement sync with %s failed; retried every %g s: %s",
                            self.url, self.interval_s, text)
            else:
                log.debug("placement sync with %s failed again: %s", self.url, text)
            self.last_error = text
            return
        self.runs += 1
        self.last_report = report
        if self.last_error is not None:
            log.info("placement sync with %s works again", self.url)
            self.last_error = None
        if report.changes or report.problems:
            log.info("placement sync with %s: %d changes, %d problems, %d writes, %.1f s",
                     self.url, len(report.changes), len(report.problems), report.writes,
                     report.seconds)

    def _reconcile_allocations(self, fenced: Any, hosts: list[Any], desired: list[Any]
                               ) -> tuple[list[tuple[claims.Repair, str | None]], list[str]]:
        """Leaked allocations on gpuplane's providers removed, missing claims of running tasks
        restored (``claims.plan_repairs``). Placement is read before the store, so a claim made
        in between is never taken for a leak. Returns ((repair, task), problems)."""
        managed = {p.uuid for p in desired}
        observed = claims.observe_allocations(self.client,
                                              [p.uuid for p in desired if p.inventories])
        views = {h.name: host_view(h) for h in hosts}
        with fenced.read() as tx:
            active = tx.workloads.list_active()
        expected: dict[str, tuple[claims.Allocation, str, str]] = {}
        tasks: dict[str, str] = {}
        in_flight: set[str] = set()
        for w in active:
            for t in w.tasks:
                if not t.phase.holds_resources or t.placement is None:
                    continue
                c = claims.consumer_uuid(driver_task_id(w.id, t.index, t.attempt))
                view = views.get(t.placement.host)
                if t.phase != Phase.RUNNING or not t.handle or view is None:
                    in_flight.add(c)
                    continue
                alloc = claims.task_allocation(t.placement, view, t.memory_mib, self.whole_class)
                expected[c] = (alloc, placement_project(w), w.submitted_by)
                tasks[c] = f"{w.id}/{t.index}"
        leaks, missing = claims.plan_repairs(observed, {c: e[0] for c, e in expected.items()},
                                             in_flight)
        if not leaks and not missing:
            return [], []
        done, problems = claims.repair(self.client, managed, leaks,
                                       {c: expected[c] for c in missing})
        return [(r, tasks.get(r.consumer)) for r in done], problems

    def _record(self, fenced: Any, at: float, report: SyncReport,
                repairs: Sequence[tuple[claims.Repair, str | None]] = ()) -> None:
        from gpuplane.governance import audit

        new = [p for p in report.problems if p not in self._problems]
        entries = [dict(at=at, actor="scheduler", action=SYNC_ACTION, object_kind=OBJECT_KIND,
                        object_id=c.target,
                        detail={"action": c.action, "uuid": c.uuid, "detail": c.detail,
                                "placement_url": self.url})
                   for c in report.changes]
        entries += [dict(at=at, actor="scheduler", action=REPAIR_ACTION,
                         object_kind="placement_consumer", object_id=r.consumer,
                         detail={"action": r.action, "task": task, "before": r.before,
                                 "after": r.after, "placement_url": self.url})
                    for r, task in repairs]
        entries += [dict(at=at, actor="scheduler", action=PROBLEM_ACTION,
                         object_kind=OBJECT_KIND, object_id=problem_subject(p), outcome="failed",
                         detail={"problem": p, "placement_url": self.url}) for p in new]
        if entries:
            with fenced.write() as tx:
                audit.record_many(tx, entries)
        self._problems = set(report.problems)


def problem_subject(problem: str) -> str:
    """The provider (or trait, class) a problem names: the text before its first ``": "`` when
    that is one word, else ``placement``."""
    head, sep, _ = problem.partition(": ")
    return head if sep and head and not any(ch.isspace() for ch in head) else "placement"


class PlacementReconciling:
    """Mixin of ``ControlLoop`` (uses its ``clock``, ``stats`` and ``_fenced``)."""

    placement: PlacementReconciler | None = None

    def reconcile_placement(self, report: Any = None) -> None:
        """Start a Placement sync in the background when one is due; never waits for it."""
        p = self.placement
        if p is not None:
            p.poke(self._fenced(), self.clock(),
                   lambda: self.stats.step_failed("reconcile_placement"))

    def release(self) -> None:
        if self.placement is not None:
            self.placement.stop()
        super().release()  # type: ignore[misc]


__all__ = ["PROBLEM_ACTION", "REPAIR_ACTION", "SYNC_ACTION", "PlacementReconciler", "PlacementReconciling"]
