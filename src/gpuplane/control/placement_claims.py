"""The live plane claims in Placement before it starts anything (issue 9, item 2).

When the loop keeps a Placement (``GPUPLANE_PLACEMENT_URL``), ``launch`` claims every task it is
about to start (``drivers/openstack/claims.py``): a workload's tasks are claimed together, and
when one claim is refused the others made for it are released and none of them starts:

- ``capacity`` or ``conflict`` (someone else holds the room): the tasks go back to the queue
  (reason ``PlacementConflict``, audited ``task.start_refused``) and are placed again: gpuplane
  re-plans, it never over-allocates; the reconciler is made due at once, so a leaked
  allocation behind the refusal is removed by the next tick's run, not an interval later;
- ``unknown`` (a provider or resource class Placement does not have yet: the inventory sync is
  behind, e.g. a new host or MIG layout) or Placement unreachable: the tasks stay admitted and
  unstarted, the sync is made due at once, and the next tick claims again.

A task attempt that ends (observed finished, failed, preempted) or that could not be started is
released at once, off the loop thread; what a crash leaves behind either way is repaired by the
reconciler (``control/placement_sync.py``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gpuplane.control.containment import one_line
from gpuplane.control.execution import driver_task_id
from gpuplane.domain.errors import GpuplaneError
from gpuplane.drivers.openstack.claims import (
    ClaimRefused,
    claim,
    consumer_uuid,
    release,
    task_allocation,
)
from gpuplane.drivers.openstack.tree import host_view

log = logging.getLogger("gpuplane.control")

REQUEUE_REASON = "PlacementConflict"
CLAIM_WORKERS = 8


def placement_project(workload: Any) -> str:
    """The ``project_id`` gpuplane's claims carry in Placement: ``<org>/<project>``."""
    return f"{workload.org}/{workload.project}"


class PlacementClaiming:
    """Mixin of ``ControlLoop`` (uses ``placement``, ``_pool``, ``_contain``)."""

    placement: Any = None

    def claim_starts(self, todo: Sequence[tuple[Any, Any, Any]], report: Any
                     ) -> tuple[dict[int, str], set[int]]:
        """Claim ``todo`` ((workload, task, host record) about to start). Returns (task id ->
        why, for tasks to put back in the queue; task ids to leave unstarted this tick)."""
        p = self.placement
        if p is None or not todo:
            return {}, set()
        by_workload: dict[str, list[tuple[Any, Any, Any]]] = defaultdict(list)
        for item in todo:
            by_workload[item[0].id].append(item)
        views: dict[str, Any] = {}
        for _w, _t, host in todo:
            if host.name not in views:
                views[host.name] = host_view(host)

        def one(items: list[tuple[Any, Any, Any]]) -> tuple[str, str] | None:
            made: list[str] = []
            try:
                for w, t, host in items:
                    c = consumer_uuid(driver_task_id(w.id, t.index, t.attempt))
                    claim(p.client, c, task_allocation(t.placement, views[host.name],
                                                       t.memory_mib, p.whole_class),
                          project_id=placement_project(w), user_id=w.submitted_by)
                    made.append(c)
                return None
            except GpuplaneError as exc:
                for c in made:
                    self._release_quietly(c)
                if not isinstance(exc, ClaimRefused):
                    return "defer", exc.detail  # Placement unreachable: try again next tick
                return ("sync" if exc.reason == "unknown" else "requeue"), exc.detail

        groups = list(by_workload.values())
        if len(groups) == 1:
            results = [one(groups[0])]
        else:
            with ThreadPoolExecutor(min(CLAIM_WORKERS, len(groups)),
                                    thread_name_prefix="gpuplane-claim") as pool:
                results = list(pool.map(one, groups))
        requeue: dict[int, str] = {}
        defer: set[int] = set()
        sync_due = False
        for items, result in zip(groups, results):
            if result is None:
                continue
            what, why = result
            w = items[0][0]
            self._contain(report, "claim", f"workload:{w.id}",
                          f"the Placement claim of workload {w.id}", why)
            for _w, t, _h in items:
                if what == "requeue":
                    requeue[t.id] = f"Placement refused the claim: {why}"
                else:
                    defer.add(t.id)
            sync_due = sync_due or what in ("sync", "requeue")
        if sync_due:
            p.make_due()
        return requeue, defer

    def release_claims(self, task_keys: Iterable[str]) -> None:
        """Release the claims of these driver task ids, off the loop thread."""
        if self.placement is None:
            return
        for key in task_keys:
            self._pool.submit(self._release_quietly, consumer_uuid(key))

    def _release_quietly(self, consumer: str) -> None:
        try:
            release(self.placement.client, consumer)
        except Exception as exc:  # noqa: BLE001 - the reconciler removes it as a leak
            log.warning("could not release Placement consumer %s (the reconciler will): %s",
                        consumer, one_line(exc))


__all__ = ["REQUEUE_REASON", "PlacementClaiming", "placement_project"]
