"""Golden placements of each baseline on a four-host cluster (hand-checked for
packing and best-fit against FGD_PROTOCOL §6; the others pin the behaviour)."""

import numpy as np
import pytest

from gpuplane.domain.inventory import uniform_host
from gpuplane.domain.requests import Placement, TaskRequest as T
from gpuplane.scheduling.placement import place, profiles
from gpuplane.scheduling.placement.fragmentation import TypicalWorkload
from gpuplane.scheduling.snapshot import ClusterSnapshot

HOSTS = [uniform_host("big", 96000, 393216, 8, "G2"), uniform_host("two", 16000, 65536, 2, "T4"),
         uniform_host("one", 8000, 32768, 1, "P100"), uniform_host("four", 32000, 131072, 4, "V100M16")]
STREAM = [T(8000, 1000, 1, 500), T(4000, 1000, 1, 1000), T(2000, 1000), T(16000, 1000, 2, 1000),
          T(4000, 1000, 1, 300), T(8000, 1000, 1, 500), T(6000, 1000, 1, 700), T(24000, 1000, 4, 1000),
          T(1000, 1000, 1, 250), T(8000, 1000, 1, 500, gpu_models=frozenset({"T4"})), T(2000, 1000),
          T(8000, 1000, 8, 1000)]

GOLDEN = {
    "random": [("four", (2,)), ("one", (0,)), ("four", ()), ("two", (0, 1)), ("four", (3,)),
               ("big", (0,)), ("big", (2,)), ("big", (1, 3, 4, 5)), ("four", (3,)), None,
               ("big", ()), None],
    "dotprod": [("one", (0,)), ("two", (0,)), ("two", ()), ("four", (0, 1)), ("two", (1,)),
                ("four", (2,)), ("two", (1,)), ("big", (0, 1, 2, 3)), ("four", (2,)), None,
                ("four", ()), None],
    "clustering": [("one", (0,)), ("two", (0,)), ("two", ()), ("four", (0, 1)), ("big", (0,)),
                   ("big", (0,)), ("big", (1,)), ("big", (2, 3, 4, 5)), ("big", (1,)),
                   ("two", (1,)), ("two", ()), None],
    "packing": [("one", (0,)), ("two", (0,)), ("two", ()), ("four", (0, 1)), ("two", (1,)),
                ("four", (2,)), ("two", (1,)), ("big", (0, 1, 2, 3)), ("four", (2,)), None,
                ("four", ()), None],
    "bestfit": [("one", (0,)), ("two", (0,)), ("two", ()), ("four", (0, 1)), ("two", (1,)),
                ("four", (2,)), ("two", (1,)), ("big", (0, 1, 2, 3)), ("four", (2,)), None,
                ("four", ()), None],
    "fgd": [("one", (0,)), ("two", (0,)), ("two", ()), ("four", (0, 1)), ("four", (2,)),
            ("two", (1,)), ("four", (2,)), ("big", (0, 1, 2, 3)), ("two", (1,)), None,
            ("big", ()), None],
}


@pytest.mark.parametrize("policy", list(GOLDEN))
def test_baseline_places_the_stream_as_recorded(policy):
    snap = ClusterSnapshot.build(HOSTS, tie_rank=[2, 0, 3, 1])
    prof = profiles.get(policy, workload=TypicalWorkload.from_tasks(STREAM))
    rng = np.random.default_rng(7)
    got = []
    for t in STREAM:
        r = place(snap, t, prof, rng)
        if isinstance(r, Placement):
            snap.assign(t, r)
            got.append((r.host, r.gpu_indices))
        else:
            got.append(None)
    assert got == GOLDEN[policy]
