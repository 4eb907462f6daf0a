"""Placement as the ledger of gpuplane's placements (issue 9, item 2).

Every task gpuplane starts on a host it mirrors into Placement is first claimed there: one
consumer per task attempt (``consumer_uuid``), whose allocations are what the placement takes
(``task_allocation``, table in docs/openstack.md):

- a whole GPU: one unit of the whole class (``VGPU``) on the GPU's provider;
- a share of a shared GPU (or a shared GPU taken whole): its milli-GPUs of ``CUSTOM_GPU_MILLI``;
- a MIG instance: one unit of ``CUSTOM_MIG_<PROFILE>`` on its GPU;
- the task's memory as ``MEMORY_MB`` on the host. CPU is not claimed: gpuplane counts milli-cores
  and Placement whole ``VCPU``, and a rounded-up claim could refuse what fits.

A claim is ``PUT /allocations/{consumer}`` with ``consumer_generation: null`` (a new consumer,
microversion >= 1.28). Placement answers 409 when a provider lacks the capacity (someone else
holds it: re-plan, never force) or when the consumer or a provider changed concurrently: the
claim is retried ``retries`` times after re-reading the consumer, and an identical claim that
already exists (a launch retried after a crash) counts as made. What cannot be claimed raises
:class:`ClaimRefused` with a ``reason`` the loop turns into the task's requeue reason.

``observe_allocations`` reads the allocations on gpuplane's providers and ``plan_repairs`` compares them
with what gpuplane says runs: a consumer on gpuplane's providers that gpuplane does not run is
a leak (its allocations there are removed, guarded by its consumer generation; what it holds on
other providers is kept), and a running task whose claim is missing or different is claimed
again (``repair``). Pure except for ``claim``, ``release``, ``observe_allocations`` and
``repair``.
"""

from __future__ import annotations

import random
import re
import time
import uuid as uuidlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gpuplane.domain.errors import GpuplaneError
from gpuplane.drivers.openstack.placement import Conflict, NotFound, PlacementClient, PlacementError
from gpuplane.drivers.openstack.tree import (
    GPU_MILLI,
    NAMESPACE,
    HostView,
    gpu_name,
    mig_class,
    provider_uuid,
)

CONSUMER_TYPE = "GPUPLANE_TASK"
"""Placement's ``consumer_type`` of gpuplane's claims (>= 1.38 shows it in ``/usages``)."""

_EXPECTED = re.compile(r"expected (\d+) but got None")

Allocation = dict[str, dict[str, int]]
"""Provider uuid -> resource class -> amount."""


class ClaimRefused(GpuplaneError):
    """Placement would not take a claim. ``reason``: ``capacity`` (a provider lacks room:
    someone else holds it), ``conflict`` (concurrent changes outlasted the retries) or
    ``unknown`` (a provider or class Placement does not know yet: the inventory sync is
    behind)."""

    def __init__(self, consumer: str, reason: str, detail: str) -> None:
        super().__init__(code=f"gpuplane.openstack.claim_{reason}", detail=detail)
        self.consumer = consumer
        self.reason = reason


def consumer_uuid(task_key: str) -> str:
    """The Placement consumer of one task attempt (``task_key``: the driver task id,
    ``<workload uid>.<index>.<attempt>``): stable, so a retried claim finds its own."""
    return str(uuidlib.uuid5(NAMESPACE, f"task:{task_key}"))


def task_allocation(placement: Any, host: HostView, memory_mib: int = 0,
                    whole_class: str = "VGPU") -> Allocation:
    """What one task's ``TaskPlacement`` takes, as Placement allocations on ``host``'s tree.
    Raises ``ClaimRefused(reason="unknown")`` for a GPU index the host does not have."""
    modes = {g.index: g.mode for g in host.gpus}
    out: Allocation = {}

    def add(index: int, rc: str, n: int) -> None:
        if index not in modes:
            raise ClaimRefused("", "unknown", f"host {host.name} has no GPU {index}")
        rp = out.setdefault(provider_uuid(gpu_name(host.name, index)), {})
        rp[rc] = rp.get(rc, 0) + n

    if placement.mig:
        for m in placement.mig:
            add(int(m.get("gpu_index", placement.gpu_indices[0] if placement.gpu_indices else 0)),
                mig_class(str(m["profile"])), 1)
    else:
        for i in placement.gpu_indices:
            if modes.get(i) == "shared":
                add(i, GPU_MILLI, int(placement.gpu_milli))
            else:
                add(i, whole_class, 1)
    if memory_mib > 0 and host.memory_mib >= 1:
        out[provider_uuid(host.name)] = {"MEMORY_MB": int(memory_mib)}
    return out


def same(a: Mapping[str, Mapping[str, int]], b: Mapping[str, Mapping[str, int]]) -> bool:
    """Whether two allocations take the same amounts (zero amounts ignored)."""
    def norm(x: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        return {rp: {rc: n for rc, n in res.items() if n} for rp, res in x.items()
                if any(res.values())}
    return norm(a) == norm(b)


def _refusal(consumer: str, exc: GpuplaneError) -> ClaimRefused:
    """Placement 16 says "provider does not exist" / "No such resource class" with a 400 and
    "Inventory for 'X' on resource provider 'Y' invalid" (no such inventory there) or "would
    exceed the capacity" with a 409, all with ``placement.undefined_code``: the text tells
    them apart."""
    behind = (isinstance(exc, PlacementError) and exc.status == 400) or \
        (" invalid" in exc.detail and "exceed" not in exc.detail)
    return ClaimRefused(consumer, "unknown" if behind else "capacity", exc.detail)


def claim(client: PlacementClient, consumer: str, allocation: Mapping[str, Mapping[str, int]],
          *, project_id: str, user_id: str, retries: int = 8) -> None:
    """Claim ``allocation`` for ``consumer``; raises :class:`ClaimRefused`.

    A ``placement.concurrent_update`` 409 (the consumer exists, or a provider changed
    meanwhile: on PostgreSQL with the harness's ``allocation_conflict_retry_count = 1`` this
    happens under contention) is retried, after a short random back-off, on re-reading the
    consumer: the same allocation already there
    counts as claimed (a launch retried after a crash), a different one is a stale claim of this
    same task attempt and is replaced, guarded by its generation. A 409 for capacity is not
    retried: the caller re-plans.

    Placement 16 keeps the consumer record of a refused claim with no allocations: ``GET``
    shows no generation, yet a ``PUT`` with ``null`` is refused ("expected 0 but got None");
    the generation the refusal names is used."""
    generation: int | None = None
    for attempt in range(retries + 1):
        try:
            client.put_allocations(consumer, allocation, project_id=project_id,
                                   user_id=user_id, consumer_generation=generation,
                                   consumer_type=CONSUMER_TYPE)
            return
        except Conflict as exc:
            if exc.placement_code != "placement.concurrent_update":
                raise _refusal(consumer, exc) from None
            current = client.get_allocations(consumer)
            if same(current.allocations, allocation):
                return
            generation = current.consumer_generation
            m = _EXPECTED.search(exc.detail)
            if generation is None and m:  # an empty consumer left by a refused claim (above)
                generation = int(m.group(1))
            time.sleep(random.uniform(0, 0.005 * 2 ** attempt))  # contended: spread the retries
        except PlacementError as exc:
            raise _refusal(consumer, exc) from None
    raise ClaimRefused(consumer, "conflict",
                       f"consumer {consumer}: Placement kept answering concurrent updates "
                       f"after {retries} retries")


def release(client: PlacementClient, consumer: str) -> bool:
    """Remove a consumer's allocations; False when it had none."""
    try:
        client.delete_allocations(consumer)
        return True
    except NotFound:
        return False


# -- the reconciler's view -----------------------------------------------------------------
@dataclass(frozen=True)
class Repair:
    """One change ``repair`` made: ``action`` is ``leak_removed`` or ``claim_restored``."""

    action: str
    consumer: str
    before: Allocation
    after: Allocation


def observe_allocations(client: PlacementClient, providers: Iterable[str], *,
                        workers: int = 4) -> dict[str, Allocation]:
    """Consumer -> its allocations on ``providers`` (uuids), one read per provider, ``workers``
    at a time. Every provider is read each time: a ``DELETE /allocations`` does not move the
    provider generations, so no cache keyed on them could see a claim disappear. A provider
    gone meanwhile is skipped."""
    def one(uuid: str) -> tuple[str, dict[str, dict[str, int]]]:
        try:
            return uuid, client.provider_allocations(uuid)[1]
        except NotFound:
            return uuid, {}

    out: dict[str, Allocation] = {}
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="gpuplane-allocs") as pool:
        for rp, consumers in pool.map(one, list(providers)):
            for c, res in consumers.items():
                out.setdefault(c, {})[rp] = dict(res)
    return out


def plan_repairs(observed: Mapping[str, Allocation], expected: Mapping[str, Allocation],
                 in_flight: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(leaked consumers, consumers to claim again). ``observed`` must have been read before
    ``expected`` and ``in_flight`` (tasks admitted but not yet started, whose claims may or may
    not exist), so that a claim made between the two reads is never taken for a leak."""
    keep = set(expected) | set(in_flight)
    leaks = sorted(c for c in observed if c not in keep)
    missing = sorted(c for c, want in expected.items()
                     if not same(observed.get(c, {}), want))
    return leaks, missing


def repair(client: PlacementClient, managed: set[str], leaks: Iterable[str],
           missing: Mapping[str, tuple[Allocation, str, str]]) -> tuple[list[Repair], list[str]]:
    """Remove leaked allocations from gpuplane's providers (``managed``) and restore missing
    claims (consumer -> (allocation, project_id, user_id)). Every write is guarded by the
    consumer generation just read: a consumer that changed meanwhile is left to the next run.
    Returns (repairs made, problems)."""
    done: list[Repair] = []
    problems: list[str] = []
    for c in leaks:
        cur = client.get_allocations(c)
        before = {rp: dict(r) for rp, r in cur.allocations.items()}
        after = {rp: r for rp, r in before.items() if rp not in managed}
        if same(before, after):
            continue
        try:
            client.put_allocations(c, after, project_id=cur.project_id or "gpuplane",
                                   user_id=cur.user_id or "gpuplane",
                                   consumer_generation=cur.consumer_generation,
                                   consumer_type=cur.consumer_type or CONSUMER_TYPE)
            done.append(Repair("leak_removed", c, before, after))
        except (Conflict, PlacementError) as exc:
            problems.append(f"{c}: could not remove its leaked allocations: {exc.detail}")
    for c, (want, project_id, user_id) in missing.items():
        before = {rp: dict(r) for rp, r in client.get_allocations(c).allocations.items()}
        if same(before, want):
            continue
        try:
            claim(client, c, want, project_id=project_id, user_id=user_id)
            done.append(Repair("claim_restored", c, before, dict(want)))
        except ClaimRefused as exc:
            problems.append(f"{c}: could not restore its claim: {exc.detail}")
    return done, problems


__all__ = ["CONSUMER_TYPE", "ClaimRefused", "Repair", "claim", "consumer_uuid",
           "observe_allocations", "plan_repairs", "release", "repair", "same", "task_allocation"]
