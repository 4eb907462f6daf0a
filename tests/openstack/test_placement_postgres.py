"""Placement on PostgreSQL (several workers): the sync converges there too, and the harness's
workarounds of the two upstream bugs hold (docs/openstack.md, "Upstream bugs")."""

from __future__ import annotations

import os
import threading
import uuid

from gpuplane.drivers.openstack import claims, contention, tree
from gpuplane.drivers.openstack.placement import Conflict
from gpuplane.drivers.openstack.sync import PlacementSync

TOKEN = os.environ.get("GPUPLANE_TEST_PLACEMENT_TOKEN", "admin")


def test_sync_converges_and_then_writes_nothing(placement_pg, fleet_docs, marker, cleanup):
    cleanup(placement_pg, marker)
    desired = tree.fleet_tree(fleet_docs, marker=marker)
    first = PlacementSync(placement_pg, marker=marker, workers=4).sync(desired)
    assert first.problems == [] and first.providers == len(desired)
    second = PlacementSync(placement_pg, marker=marker).sync(desired)
    assert (second.writes, second.drift) == (0, 0)


def test_concurrent_claims_on_one_gpu_never_over_allocate(placement_pg, scope, marker, cleanup):
    """8 threads claim the same whole GPU at once: exactly one wins, the others get a 409
    (capacity or ``placement.concurrent_update``). Placement 16.0.0 over-allocates here with
    its default ``allocation_conflict_retry_count``; the harness sets it to 1."""
    cleanup(placement_pg, marker)
    desired = tree.fleet_tree([{"name": f"c-{scope}", "cpu": 8, "memory": 8192,
                                "gpus": [{"index": 0, "model": "H100-80GB",
                                          "memory_mib": 81920}]}], marker=marker)
    PlacementSync(placement_pg, marker=marker).sync(desired)
    gpu = next(p for p in desired if p.kind == "gpu")
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    consumers = [str(uuid.uuid4()) for _ in range(8)]

    def claim(consumer: str) -> None:
        barrier.wait()
        try:
            placement_pg.put_allocations(consumer, {gpu.uuid: {"VGPU": 1}}, project_id="p",
                                         user_id="u", consumer_generation=None)
            outcomes.append("won")
        except Conflict as exc:
            outcomes.append(exc.placement_code)

    threads = [threading.Thread(target=claim, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert outcomes.count("won") == 1, outcomes
        assert placement_pg.provider_usages(gpu.uuid) == {"VGPU": 1}
        # GET /usages at 1.38+ is a 500 on PostgreSQL; the client sends 1.37
        assert placement_pg.usages("p", "u") == {"VGPU": 1}
    finally:
        for c in consumers:
            allocs = placement_pg.get_allocations(c)
            if allocs.allocations:
                placement_pg.delete_allocations(c)


def test_consumer_generations_guard_claims(placement_pg, scope, marker, cleanup):
    cleanup(placement_pg, marker)
    desired = tree.fleet_tree([{"name": f"g-{scope}", "cpu": 8, "memory": 8192,
                                "gpus": [{"index": 0, "model": "L40S", "memory_mib": 49152,
                                          "mode": "shared"}]}], marker=marker)
    PlacementSync(placement_pg, marker=marker).sync(desired)
    gpu = next(p for p in desired if p.kind == "gpu")
    consumer = str(uuid.uuid4())
    placement_pg.put_allocations(consumer, {gpu.uuid: {"CUSTOM_GPU_MILLI": 250}},
                                 project_id="p", user_id="u", consumer_generation=None)
    try:
        allocs = placement_pg.get_allocations(consumer)
        assert allocs.allocations == {gpu.uuid: {"CUSTOM_GPU_MILLI": 250}}
        assert allocs.consumer_generation == 1
        try:
            placement_pg.put_allocations(consumer, {gpu.uuid: {"CUSTOM_GPU_MILLI": 500}},
                                         project_id="p", user_id="u", consumer_generation=None)
            raise AssertionError("a stale consumer generation must be refused")
        except Conflict as exc:
            assert exc.placement_code == "placement.concurrent_update"
        placement_pg.put_allocations(consumer, {gpu.uuid: {"CUSTOM_GPU_MILLI": 500}},
                                     project_id="p", user_id="u", consumer_generation=1)
        assert placement_pg.provider_usages(gpu.uuid) == {"CUSTOM_GPU_MILLI": 500}
    finally:
        placement_pg.delete_allocations(consumer)


def test_eight_gpuplane_workers_claim_without_over_allocation(placement_pg, placement_pg_url,
                                                             scope, marker, cleanup):
    """8 workers, each planning on its own stale view, claim 240 mixed requests (whole GPUs,
    pairs on one host, shares, MIG instances) on a fleet with room for fewer: every refusal is
    retried or re-planned, nothing is over-allocated, and what the workers hold is exactly what
    Placement holds (the full-size run is benchmarks/placement_claims.py)."""
    cleanup(placement_pg, marker)
    docs = [{"name": f"k{h}-{scope}", "cpu": 16, "memory": 65536,
             "gpus": [{"index": 0, "model": "H100-80GB", "numa": 0},
                      {"index": 1, "model": "H100-80GB", "numa": 0},
                      {"index": 2, "model": "L40S", "mode": "shared", "numa": 1},
                      {"index": 3, "model": "A100-80GB", "mode": "mig", "numa": 1,
                       "mig_layout": [{"profile": "1g.10gb", "start": s} for s in range(7)]}]}
            for h in range(6)]
    desired = tree.fleet_tree(docs, marker=marker)
    PlacementSync(placement_pg, marker=marker).sync(desired)
    requests = contention.mixed_requests(240, seed=7)
    report = contention.run_workers(placement_pg_url, TOKEN, desired, requests, workers=8)
    assert len(report.claimed) + report.unplaced == len(requests)
    assert report.unplaced > 0 and report.replans > 0  # it was contended, and full
    gpus = [p for p in desired if p.kind == "gpu"]
    for p in gpus:
        used = placement_pg.provider_usages(p.uuid)
        for rc, inv in p.inventories.items():
            assert used.get(rc, 0) <= inv.total, (p.name, rc)
    held = claims.observe_allocations(placement_pg, [p.uuid for p in gpus])
    assert held == report.claimed
