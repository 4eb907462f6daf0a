"""Many gpuplane workers claiming in one Placement at once: the ledger's concurrency check.

``run_workers`` starts ``workers`` threads, each with its own ``PlacementClient`` and its own
view of the fleet (what it has claimed, and what it learned from refusals: nothing from the
others), and gives each its share of ``requests``. A worker plans a request on its view (first
fit over the hosts in its own shuffled order), claims it with ``claims.claim`` (a consumer
generation 409 is retried there) and, when Placement refuses for capacity, re-reads the usages
of the providers it tried, marks them in its view and plans again, until it is claimed or its
view after a full re-read has no room (``unplaced``; nothing is released during a run, so a
kind of request that found no room is not tried again). The result says what was claimed per
consumer, so a caller can compare it with Placement's own allocations.
"""

from __future__ import annotations

import random
import time
import threading
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gpuplane.drivers.openstack.claims import Allocation, ClaimRefused, claim
from gpuplane.drivers.openstack.model import Inventory, ProviderState
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.tree import GPU_MILLI

Request = Mapping[str, Any]
"""``{"class": resource class, "amount": per GPU, "gpus": how many GPUs of one host}``."""


@dataclass
class WorkerReport:
    claimed: dict[str, Allocation] = field(default_factory=dict)
    replans: int = 0  # refusals for capacity: planned again
    unplaced: int = 0
    seconds: float = 0.0


@dataclass
class ContentionReport:
    workers: list[WorkerReport]
    seconds: float

    @property
    def claimed(self) -> dict[str, Allocation]:
        return {c: a for w in self.workers for c, a in w.claimed.items()}

    @property
    def replans(self) -> int:
        return sum(w.replans for w in self.workers)

    @property
    def unplaced(self) -> int:
        return sum(w.unplaced for w in self.workers)


class _View:
    """One worker's idea of what is free: provider -> class -> free amount, by host."""

    def __init__(self, tree: Sequence[ProviderState]) -> None:
        self.inventory: dict[str, Mapping[str, Inventory]] = {
            p.uuid: p.inventories for p in tree if p.inventories and p.kind == "gpu"}
        root = {p.uuid: p.parent_uuid for p in tree}
        self.host_of: dict[str, str] = {}
        for u in self.inventory:
            top = u
            while root.get(top):
                top = root[top]  # type: ignore[assignment]
            self.host_of[u] = top
        self.free: dict[str, dict[str, int]] = {u: {rc: _capacity(i) for rc, i in inv.items()}
                                                 for u, inv in self.inventory.items()}

    def plan(self, req: Request, order: Sequence[str]) -> Allocation | None:
        rc, amount, gpus = str(req["class"]), int(req["amount"]), int(req.get("gpus", 1))
        by_host: dict[str, list[str]] = {}
        for u, free in self.free.items():
            if free.get(rc, 0) >= amount:
                by_host.setdefault(self.host_of[u], []).append(u)
        for host in order:
            fits = by_host.get(host, [])
            if len(fits) >= gpus:
                return {u: {rc: amount} for u in sorted(fits)[:gpus]}
        return None

    def take(self, alloc: Allocation) -> None:
        for u, res in alloc.items():
            for rc, n in res.items():
                self.free[u][rc] -= n

    def refresh(self, client: PlacementClient, providers: Sequence[str]) -> None:
        for u in providers:
            used = client.provider_usages(u)
            self.free[u] = {rc: _capacity(i) - used.get(rc, 0)
                            for rc, i in self.inventory[u].items()}


def _capacity(inv: Inventory) -> int:
    return int((inv.total - inv.reserved) * inv.allocation_ratio)


def run_workers(url: str, token: str, tree: Sequence[ProviderState], requests: Sequence[Request],
                *, workers: int = 8, seed: int = 0,
                on_claim: Callable[[], None] | None = None) -> ContentionReport:
    """Claim ``requests`` (dealt round-robin) with ``workers`` concurrent workers."""

    hosts = sorted({p.uuid for p in tree if p.parent_uuid is None})
    shares = [list(requests[i::workers]) for i in range(workers)]
    start = threading.Barrier(workers)

    def work(i: int) -> WorkerReport:
        rng = random.Random(seed * 1000 + i)
        order = hosts[:]
        rng.shuffle(order)
        view = _View(tree)
        report = WorkerReport()
        with PlacementClient(url, token, max_connections=2) as client:
            start.wait()
            t0 = time.perf_counter()
            full: set[tuple[Any, ...]] = set()  # kinds that found no room after a re-read
            for req in shares[i]:
                kind = tuple(sorted(req.items()))
                refreshed = False
                while True:
                    alloc = None if kind in full else view.plan(req, order)
                    if alloc is None:
                        if refreshed or kind in full:
                            full.add(kind)
                            report.unplaced += 1
                            break
                        view.refresh(client, list(view.free))
                        refreshed = True
                        continue
                    consumer = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
                    try:
                        claim(client, consumer, alloc, project_id="contention",
                              user_id=f"worker-{i}")
                    except ClaimRefused as exc:
                        if exc.reason != "capacity":
                            raise
                        report.replans += 1
                        view.refresh(client, list(alloc))
                        continue
                    view.take(alloc)
                    report.claimed[consumer] = alloc
                    if on_claim is not None:
                        on_claim()
                    break
            report.seconds = time.perf_counter() - t0
        return report

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers, thread_name_prefix="gpuplane-contention") as pool:
        reports = list(pool.map(work, range(workers)))
    return ContentionReport(reports, time.perf_counter() - t0)


def mixed_requests(n: int, seed: int = 0, whole_class: str = "VGPU") -> list[dict[str, Any]]:
    """``n`` requests: 1 or 2 whole GPUs of one host, a quarter or half of a shared GPU, one
    ``1g.10gb`` MIG instance."""
    rng = random.Random(seed)
    kinds = [{"class": whole_class, "amount": 1, "gpus": 1},
             {"class": whole_class, "amount": 1, "gpus": 2},
             {"class": GPU_MILLI, "amount": 250, "gpus": 1},
             {"class": GPU_MILLI, "amount": 500, "gpus": 1},
             {"class": "CUSTOM_MIG_1G_10GB", "amount": 1, "gpus": 1}]
    return [dict(rng.choice(kinds)) for _ in range(n)]


__all__ = ["ContentionReport", "WorkerReport", "mixed_requests", "run_workers"]
