"""gpuplane's candidate search (drivers/openstack/candidates.py) against the live Placement.

Random fleets (fixed seeds) with random extra traits, aggregates on nested providers and
inventory records with reservations, ratios, max units and steps are synced into the SQLite
Placement; some of gpuplane's own candidates are claimed there (each claim must be granted);
then random requests (granular groups, ``same_subtree`` with resourceless groups, ``member_of``
with ``in:`` and ``!``, required / forbidden / any-of traits, ``root_required``,
``group_policy``) are asked of both, and the candidate sets must be equal. A request Placement
refuses (400) must be refused by ``parse_request`` too.

Requests that would hit Placement 16's shared-amount bug (a class asked in the unsuffixed group
and a suffixed group without ``group_policy=none``; candidates.py's docstring) get
``group_policy=none``.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.drivers.openstack import tree
from gpuplane.drivers.openstack.candidates import (
    AllocationRequest,
    CandidateIndex,
    candidates,
    parse_request,
)
from gpuplane.drivers.openstack.model import Inventory, ProviderState
from gpuplane.drivers.openstack.placement import PlacementClient, PlacementError
from gpuplane.drivers.openstack.sync import PlacementSync

EXTRA_TRAITS = ("HW_CPU_X86_AVX2", "STORAGE_DISK_SSD", "COMPUTE_TRUSTED_CERTS")
MIG = ([("1g.10gb", s) for s in range(7)], [("3g.40gb", 0), ("3g.40gb", 4)],
       [("4g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)])
REQUESTS_PER_FLEET = 60
CLAIMS_PER_FLEET = 6


def random_fleet(rng: random.Random, scope: str, marker: str) -> list[ProviderState]:
    """4-6 hosts of whole, shared or MIG GPUs on 1-2 NUMA nodes, two sites; then extra traits
    on any provider, node aggregates on some GPUs and NUMA nodes, odd inventory records."""
    docs = []
    for h in range(rng.randint(4, 6)):
        numa = rng.randint(1, 2)
        gpus: list[dict[str, Any]] = []
        for g in range(rng.randint(1, 4)):
            mode = rng.choice(("whole", "whole", "shared", "mig"))
            model = "A100-80GB" if mode == "mig" else rng.choice(("H100-80GB", "L40S"))
            gpu: dict[str, Any] = {"index": g, "model": model, "memory_mib": 81920,
                                   "numa": g % numa, "mode": mode}
            if mode == "mig":
                gpu["mig_layout"] = [{"profile": p, "start": s} for p, s in rng.choice(MIG)]
            gpus.append(gpu)
        docs.append({"name": f"cand-{scope}-{h}", "site": f"cand-{scope}-{h % 2}",
                     "cpu": rng.choice((8, 16)), "memory": rng.choice((4096, 8192)),
                     "tee": rng.choice((None, "sev-snp", "tdx")), "gpus": gpus})
    node_aggs = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2)]
    out = []
    for p in tree.fleet_tree(docs, marker=marker):
        traits = p.traits | {t for t in EXTRA_TRAITS if rng.random() < 0.2}
        aggs = p.aggregates
        if p.kind != "host" and rng.random() < 0.3:
            aggs = aggs | {rng.choice(node_aggs)}
        inventories = dict(p.inventories)
        if p.kind == "host":
            cpu, mem = inventories["VCPU"].total, inventories["MEMORY_MB"].total
            inventories["VCPU"] = Inventory(cpu, reserved=rng.choice((0, 2)),
                                            max_unit=rng.choice((0, cpu // 2)),
                                            allocation_ratio=rng.choice((1.0, 1.5, 4.0)))
            inventories["MEMORY_MB"] = Inventory(mem, reserved=rng.choice((0, 512)),
                                                 step_size=rng.choice((1, 256)))
        elif "CUSTOM_GPU_MILLI" in inventories:
            inventories["CUSTOM_GPU_MILLI"] = Inventory(1000, step_size=rng.choice((1, 250)))
        out.append(replace(p, traits=frozenset(traits), aggregates=frozenset(aggs),
                           inventories=inventories))
    return out


def amount(rng: random.Random, rc: str) -> int:
    return {"VCPU": rng.choice((1, 2, 4, 9)), "MEMORY_MB": rng.choice((256, 1024, 3000)),
            "CUSTOM_GPU_MILLI": rng.choice((250, 500, 1000, 300))}.get(rc, 1)


def gpu_classes(fleet: list[ProviderState]) -> list[str]:
    return sorted({rc for p in fleet if p.kind == "gpu" for rc in p.inventories})


def claim_request(rng: random.Random, fleet: list[ProviderState]) -> dict[str, str]:
    """One group: a host's CPU or memory with a GPU class, or a GPU class alone."""
    gpu = rng.choice(gpu_classes(fleet))
    if rng.random() < 0.5:
        host = rng.choice(("VCPU", "MEMORY_MB"))
        return {"resources": f"{host}:{amount(rng, host)},{gpu}:{amount(rng, gpu)}"}
    return {"resources_C": f"{gpu}:{amount(rng, gpu)}"}


def random_request(rng: random.Random, fleet: list[ProviderState]) -> dict[str, Any]:
    """A request over what the fleet has: its classes, traits and aggregates."""
    gpu_rcs = gpu_classes(fleet)
    # in the fleet's order, not by name: the names hold the test's random scope
    traits = list(dict.fromkeys(t for p in fleet for t in sorted(p.traits)))
    aggs = list(dict.fromkeys(a for p in fleet for a in p.aggregates)) + [str(uuid.UUID(int=1))]

    def traits_value() -> str:
        if rng.random() < 0.3:
            return "in:" + ",".join(rng.sample(traits, 2))
        picked = rng.sample(traits, rng.randint(1, 2))
        return ",".join(("!" + t) if rng.random() < 0.5 else t for t in picked)

    def aggs_value() -> str:
        form = rng.random()
        if form < 0.3:
            return "in:" + ",".join(rng.sample(aggs, 2))
        return ("!" if form > 0.6 else "") + rng.choice(aggs)

    q: dict[str, Any] = defaultdict(list)
    suffixed: list[str] = []
    if rng.random() < 0.6:
        classes = rng.sample(["VCPU", "MEMORY_MB", *gpu_rcs], rng.randint(1, 2))
        q["resources"] = ",".join(f"{rc}:{amount(rng, rc)}" for rc in classes)
        if rng.random() < 0.4:
            q["required"].append(traits_value())
        if rng.random() < 0.3:
            q["member_of"].append(aggs_value())
    for i in range(rng.randint(0 if "resources" in q else 1, 3)):
        s = f"_G{i}"
        suffixed.append(s)
        rc = rng.choice([*gpu_rcs, "VCPU"] if rng.random() < 0.2 else gpu_rcs)
        q[f"resources{s}"] = f"{rc}:{amount(rng, rc)}"
        if rng.random() < 0.4:
            q[f"required{s}"].append(traits_value())
        if rng.random() < 0.2:
            q[f"member_of{s}"].append(aggs_value())
    if suffixed and rng.random() < 0.5:
        q["required_NUMA"].append("HW_NUMA_ROOT" if rng.random() < 0.8 else traits_value())
        q["same_subtree"].append(",".join(["_NUMA", *rng.sample(suffixed, rng.randint(
            1, len(suffixed)))]))
        suffixed.append("_NUMA")
    elif len(suffixed) > 1 and rng.random() < 0.3:
        q["same_subtree"].append(",".join(rng.sample(suffixed, 2)))
    if rng.random() < 0.2:
        q["root_required"] = ("!" if rng.random() < 0.5 else "") + rng.choice(traits)
    if len(suffixed) > 1 or rng.random() < 0.3:
        q["group_policy"] = rng.choice(("none", "isolate"))
    shared = {rc.split(":")[0] for rc in str(q.get("resources", "")).split(",")} & {
        q[f"resources{s}"].split(":")[0] for s in suffixed if f"resources{s}" in q}
    if shared:  # Placement 16 sums into a shared object otherwise (module docstring)
        q["group_policy"] = "none"
    if rng.random() < 0.05:  # invalid: both must refuse
        if len(suffixed) > 1:
            del q["group_policy"]
        else:
            q["required_LOOSE"].append(rng.choice(traits))
    return {k: v for k, v in q.items() if v}


def placements_answer(client: PlacementClient, query: dict[str, Any], ours: set[str]
                      ) -> set[AllocationRequest] | None:
    """Placement's candidates on our providers (other tests' providers may be there too),
    or None when Placement refuses the request."""
    try:
        answer = client.allocation_candidates(query)
    except PlacementError as exc:
        assert exc.status == 400, exc
        return None
    return {c for c in map(AllocationRequest.from_json, answer.allocation_requests)
            if {rp for rp, _, _ in c.allocations} | {rp for _, rp in c.mappings} <= ours}


@pytest.mark.parametrize("seed", [11, 23, 37, 41])
def test_gpuplane_finds_the_candidates_placement_finds(
        placement: PlacementClient, marker: str, scope: str, seed: int,
        cleanup: Callable[[PlacementClient, str], None]) -> None:
    cleanup(placement, marker)
    rng = random.Random(seed)
    fleet = random_fleet(rng, scope, marker)
    report = PlacementSync(placement, marker=marker).sync(fleet)
    assert report.problems == []
    ours = {p.uuid for p in fleet}
    usages: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    # claim some of gpuplane's own single-group candidates: Placement must grant each
    claimed = 0
    for _ in range(CLAIMS_PER_FLEET * 5):
        found = candidates(CandidateIndex(fleet, usages),
                           parse_request(claim_request(rng, fleet)))
        if not found:
            continue
        pick = rng.choice(found)
        allocations: dict[str, dict[str, int]] = defaultdict(dict)
        for rp, rc, n in pick.allocations:
            allocations[rp][rc] = n
            usages[rp][rc] += n
        placement.put_allocations(str(uuid.uuid4()), allocations, project_id="cand",
                                  user_id="cand", consumer_generation=None)
        claimed += 1
        if claimed == CLAIMS_PER_FLEET:
            break
    assert claimed == CLAIMS_PER_FLEET
    for p in fleet:
        if p.inventories:
            assert placement.provider_usages(p.uuid) == {
                rc: usages[p.uuid].get(rc, 0) for rc in p.inventories}, p.name

    index = CandidateIndex(fleet, usages)
    answered = 0
    for _ in range(REQUESTS_PER_FLEET):
        query = random_request(rng, fleet)
        theirs = placements_answer(placement, query, ours)
        if theirs is None:
            with pytest.raises(InvalidInput):
                parse_request(query)
            continue
        found = candidates(index, parse_request(query))
        assert len(found) == len(set(found)), query
        mine = set(found)
        assert mine == theirs, (f"{query}: only gpuplane {list(mine - theirs)[:3]}, "
                                f"only Placement {list(theirs - mine)[:3]}")
        answered += bool(theirs)
    assert answered >= 5  # not vacuous: these seeds give 8-18 answers with candidates
