"""Fragmentation measure (FGD_PROTOCOL §5.2) against the authors' unit-test vectors."""

import json
from pathlib import Path

import numpy as np
import pytest

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.placement.fragmentation import FragmentationModel, TypicalWorkload

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "fgd_frag_test_vectors.json"


def _cases():
    if not VECTORS.is_file():
        return []
    data = json.loads(VECTORS.read_text())
    out = []
    for i, c in enumerate(data["cases"]):
        typ = c["typical"]
        rows = data[f"typical_{typ}"] if isinstance(typ, str) else typ
        out.append(pytest.param(rows, c["node"], c["expected"], id=f"case{i}-{c['node']['model']}"))
    return out


@pytest.mark.skipif(not VECTORS.is_file(), reason="shared/benchmarks not present")
@pytest.mark.parametrize("rows, node, expected", _cases())
def test_fragment_amount_matches_the_authors_vectors(rows, node, expected):
    fm = FragmentationModel(TypicalWorkload.from_dicts(rows), [node["model"]])
    got = fm.node_fragment(node["cpu_free"], node["gpu_free"], node["model"])
    assert got == pytest.approx(expected, abs=0.01)


def test_batch_and_single_evaluation_agree():
    wl = TypicalWorkload.from_tasks([TaskRequest(4000, 1, gpus=1, gpu_milli=300)] * 3
                                    + [TaskRequest(8000, 1, gpus=2)] * 2 + [TaskRequest(2000, 1)])
    fm = FragmentationModel(wl, ["G2"])
    states = [(8000, (0, 200, 1000, 1000), 0), (1000, (1000, 1000, 1000, 1000), 0),
              (0, (-1, -1, 700, 900), 0), (64000, (250, 250, 250, 250), -1)]
    batch = fm.fragment_rows(np.array([s[0] for s in states]), np.array([s[1] for s in states]),
                             np.array([s[2] for s in states]))
    for s, b in zip(states, batch):
        assert FragmentationModel(wl, ["G2"]).fragment(s) == pytest.approx(b)
    # all buckets sum to the free GPU: F <= free
    assert all(b <= sum(max(x, 0) for x in s[1]) + 1e-9 for s, b in zip(states, batch))


def test_typical_workload_keeps_the_popular_95_percent():
    tasks = ([TaskRequest(1000, 1, gpus=1, gpu_milli=500)] * 60
             + [TaskRequest(2000, 1, gpus=1)] * 36 + [TaskRequest(3000, 1)] * 3
             + [TaskRequest(4000, 1, gpus=2)] * 1)
    wl = TypicalWorkload.from_tasks(tasks)
    assert [(t.cpu_milli, t.gpu_milli, t.gpus) for t in wl.types] == [(1000, 500, 1), (2000, 1000, 1)]
    assert wl.freq.tolist() == pytest.approx([60 / 96, 36 / 96])


def test_no_access_types_count_the_whole_free_gpu():
    wl = TypicalWorkload.from_dicts([{"cpu_milli": 1, "gpu_milli": 100, "num_gpu": 1,
                                      "gpu_spec": "T4", "freq": 1.0}])
    fm = FragmentationModel(wl, ["G2", "T4"])
    assert fm.node_fragment(1000, [1000, 1000], "G2") == 2000
    assert fm.node_fragment(1000, [1000, 1000], "T4") == 0
