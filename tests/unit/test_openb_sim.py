"""openb simulator: readers, arrival sequence, KPI discretisation, small runs."""

from pathlib import Path

import numpy as np
import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.domain.requests import TaskRequest
from gpuplane.sim.openb import PodTrace, read_nodes, read_pods
from gpuplane.sim.openb_kpi import alloc_columns, arrival_levels, discretise, frag_columns
from gpuplane.sim.openb_run import arrival_sequence, run_experiment, tie_rank_by_name

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "openb"
needs_data = pytest.mark.skipif(not (DATA / "openb_node_list_gpu_node.csv").is_file(),
                                reason="openb data not present")

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn1,32000,131072,4,T4\nn0,16000,65536,2,G2\n"
PODS = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos\n"
        "p2,4000,1024,1,500,,LS\np1,8000,2048,2,1000,T4|G2,LS\np0,2000,512,0,0,,BE\n"
        "p3,1000,512,1,1500,,LS\n")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_readers_convert_rows(tmp_path):
    hosts = read_nodes(write(tmp_path, "n.csv", NODES))
    assert [h.name for h in hosts] == ["n1", "n0"]
    assert hosts[0].gpu_count == 4 and hosts[0].gpus[0].model == "T4" and hosts[0].gpus[0].mode == "shared"
    tr = read_pods(write(tmp_path, "p.csv", PODS))
    assert tr.names == ("p2", "p1", "p0", "p3")
    assert tr.tasks[1].gpu_models == frozenset({"T4", "G2"})
    assert tr.tasks[2].is_cpu_only
    assert tr.tasks[3].gpu_milli == 1000  # clipped


@pytest.mark.parametrize("text, row, column", [
    ("name,cpu_milli\np,1\n", "row 1", "memory_mib"),
    ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,abc,1,0,0\n", "row 2", "cpu_milli"),
    ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,0,0\nq,1,-4,0,0\n", "row 3", "memory_mib"),
    ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1\n", "row 2", "num_gpu"),
    ("", "row 1", "name"),
], ids=["missing column", "not an integer", "negative", "short row", "empty file"])
def test_bad_pod_files_name_file_row_and_column(tmp_path, text, row, column):
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(InvalidInput) as e:
        read_pods(p)
    msg = str(e.value)
    assert str(p) in msg and row in msg and column in msg
    assert e.value.code == "gpuplane.sim.bad_trace"


def test_bad_node_files(tmp_path):
    with pytest.raises(InvalidInput, match="duplicate node name"):
        read_nodes(write(tmp_path, "n.csv", NODES + "n1,1,1,0,\n"))
    with pytest.raises(InvalidInput, match="no model"):
        read_nodes(write(tmp_path, "n2.csv", "sn,cpu_milli,memory_mib,gpu,model\nx,1,1,2,\n"))
    with pytest.raises(InvalidInput, match="cannot read"):
        read_nodes(tmp_path / "absent.csv")


def _trace(rows):
    names = tuple(f"p{i:02d}" for i in range(len(rows)))
    return PodTrace("mem", names, tuple(rows))


def test_sequence_grows_with_copies_until_the_per_gpu_stop_test():
    tasks = [TaskRequest(1000, 1, gpus=1, gpu_milli=500), TaskRequest(1000, 1, gpus=2),
             TaskRequest(1000, 1)]
    seq = arrival_sequence(_trace(tasks), 10_000, 1.3, np.random.default_rng(1))
    assert sorted(seq[:3]) == [0, 1, 2]
    demand = sum(tasks[j].gpu_demand_milli for j in seq)
    assert demand <= 13_000 + 1000  # a 2-GPU copy is tested as 1000 (the protocol quirk)
    assert sum(tasks[j].gpu_demand_milli for j in seq[:-1]) <= 13_000
    assert seq == arrival_sequence(_trace(tasks), 10_000, 1.3, np.random.default_rng(1))


def test_sequence_shrinks_by_random_removal():
    tasks = [TaskRequest(1000, 1, gpus=8)] * 10
    seq = arrival_sequence(_trace(tasks), 10_000, 1.3, np.random.default_rng(2))
    assert len(seq) == 1 and len(set(seq)) == 1


def test_tie_rank_permutes_name_sorted_hosts(tmp_path):
    hosts = read_nodes(write(tmp_path, "n.csv", NODES))
    rank = tie_rank_by_name(hosts, np.random.default_rng(0))
    perm = np.random.default_rng(0).permutation(2)
    assert rank[1] == perm[0] and rank[0] == perm[1]   # n0 is first by name


def test_kpi_rounding_fallback_window_and_cpu_only_events():
    cap = 1000
    arrived = [0, 0, 10, 25, 25, 40]        # arrival % 0,0,1,2(2.5 -> 2, half-even),2,4
    used = [0, 5, 10, 20, 20, 30]
    assert arrival_levels(arrived, cap).tolist() == [0, 0, 1, 2, 2, 4]
    cols = alloc_columns(arrived, used, cap)
    assert cols["0"] == 0.25                 # mean of 0.0 and 0.5
    assert cols["2"] == 2.0 and cols["4"] == 3.0
    assert cols["3"] == round((2.0 + 2.0 + 3.0) / 3, 2)   # no event at 3: window 2..4
    assert cols["7"] is None
    ratio, amount = frag_columns(arrived, [0, 1, 2, 3, 3, 4], [1000 - u for u in used], cap)
    assert ratio["1"] == pytest.approx(round(100 * 2 / 990, 2))
    assert amount["4"] == round(100 * 4 / 1000, 2)


def test_discretise_rounds_half_to_even_like_python():
    arr = np.array([5, 5])
    assert discretise(arr, [1.0, 1.05], 1)["5"] == round(1.025, 1)


def test_small_run_end_to_end(tmp_path):
    hosts = read_nodes(write(tmp_path, "n.csv", NODES))
    tr = read_pods(write(tmp_path, "p.csv", PODS))
    for policy in ("random", "dotprod", "clustering", "packing", "bestfit", "fgd", "gpuplane"):
        r = run_experiment(hosts, tr, policy, 42)
        assert r.pods_submitted >= 4 and 0 <= r.failed_pods <= r.pods_submitted
        assert set(r.alloc_ratio) == {str(x) for x in range(131)}
        vals = [v for v in r.alloc_ratio.values() if v is not None]
        assert all(0 <= v <= 100 for v in vals)


@needs_data
def test_openb_cluster_and_default_trace_totals():
    hosts = read_nodes(DATA / "openb_node_list_gpu_node.csv")
    assert len(hosts) == 1213 and sum(h.gpu_count for h in hosts) == 6212
    assert sum(h.cpu_milli for h in hosts) == 107_018_000
    tr = read_pods(DATA / "openb_pod_list_default.csv")
    assert len(tr.tasks) == 8152
    assert sum(t.is_cpu_only for t in tr.tasks) == 1088
    assert sum(t.is_shared for t in tr.tasks) == 3078
    assert round(100 * sum(t.gpu_demand_milli for t in tr.tasks) / 6_212_000, 2) == 97.98
    from gpuplane.scheduling.placement.fragmentation import TypicalWorkload

    assert len(TypicalWorkload.from_tasks(tr.tasks)) == 35


@needs_data
def test_fgd_default_seed_42_lands_in_the_published_range():
    hosts = read_nodes(DATA / "openb_node_list_gpu_node.csv")
    tr = read_pods(DATA / "openb_pod_list_default.csv")
    r = run_experiment(hosts, tr, "fgd", 42, frag=False)
    assert 10_700 < r.pods_submitted < 10_950
    assert 95.27 - 0.5 <= r.alloc_ratio["130"] <= 95.49 + 0.5
    assert r.alloc_ratio["80"] == pytest.approx(80.0, abs=0.2)
