"""``gpuplane sim openb`` / ``openb-grid``: JSON output and clear errors on bad input."""

import json

import pytest

from gpuplane.cli.main import main

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn1,32000,131072,4,T4\nn0,16000,65536,2,G2\n"
PODS = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,4000,1024,1,500\np1,8000,2048,2,1000\n"
        "p2,2000,512,0,0\n")


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture()
def files(tmp_path):
    n = tmp_path / "nodes.csv"
    n.write_text(NODES)
    p = tmp_path / "pods.csv"
    p.write_text(PODS)
    return n, p


def test_openb_prints_one_json_object(files, capsys):
    n, p = files
    code, out, _ = run(["sim", "openb", "--nodes", str(n), "--pods", str(p), "--policy", "fgd",
                        "--seed", "1", "--inflation", "1.3", "--json"], capsys)
    assert code in (0, None)
    obj = json.loads(out)
    assert set(obj["alloc_ratio"]) == {str(x) for x in range(131)}
    assert {"frag_ratio", "failed_pods", "seconds"} <= set(obj)


@pytest.mark.parametrize("extra, needle", [
    (["--policy", "nope"], "unknown placement policy"),
    (["--inflation", "-1"], "tuning ratio"),
], ids=["unknown policy", "negative inflation"])
def test_openb_bad_options_exit_2_with_a_message(files, capsys, extra, needle):
    n, p = files
    code, _, err = run(["sim", "openb", "--nodes", str(n), "--pods", str(p)] + extra, capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_openb_bad_csv_names_file_row_column(files, capsys, tmp_path):
    n, _ = files
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1,1,two,100\n")
    code, _, err = run(["sim", "openb", "--nodes", str(n), "--pods", str(bad)], capsys)
    assert code == 2
    assert str(bad) in err and "row 2" in err and "num_gpu" in err


def test_openb_missing_file(capsys, tmp_path):
    code, _, err = run(["sim", "openb", "--nodes", str(tmp_path / "x.csv"),
                        "--pods", str(tmp_path / "y.csv")], capsys)
    assert code == 2 and "cannot read trace file" in err


def test_grid_rejects_bad_seeds_and_missing_traces(capsys, tmp_path):
    code, _, err = run(["sim", "openb-grid", "--data", str(tmp_path), "--seeds", "x-y"], capsys)
    assert code == 2 and "seed" in err
    code, _, err = run(["sim", "openb-grid", "--data", str(tmp_path), "--traces", "zzz",
                        "--seeds", "1"], capsys)
    assert code == 2 and "openb_pod_list_zzz.csv" in err


def test_grid_writes_csv_json_and_plots(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "openb_node_list_gpu_node.csv").write_text(NODES)
    (data / "openb_pod_list_tiny.csv").write_text(PODS)
    out = tmp_path / "out"
    code, stdout, _ = run(["sim", "openb-grid", "--data", str(data), "--traces", "tiny",
                           "--policies", "bestfit,fgd", "--seeds", "1-2", "--jobs", "1",
                           "--out", str(out), "--json"], capsys)
    assert code in (0, None)
    obj = json.loads(stdout)
    assert obj["runs"] == 4 and len(obj["summary"]) == 2
    for f in ("runs.json", "alloc_discrete.csv", "summary.csv", "alloc_tiny.png", "frag_tiny.png",
              "bars_100.png"):
        assert (out / f).is_file(), f


@pytest.mark.parametrize("extra, expected", [([], "online"),
                                             (["--distribution", "online"], "online"),
                                             (["--distribution", "trace"], "trace")])
def test_the_distribution_reaches_the_run(files, capsys, extra, expected):
    n, p = files
    code, out, _ = run(["sim", "openb", "--nodes", str(n), "--pods", str(p), "--json", "--no-frag", *extra], capsys)
    assert code in (0, None)
    assert json.loads(out)["distribution"] == expected


def test_a_bad_distribution_names_the_field(files, capsys):
    n, p = files
    code, _, err = run(["sim", "openb", "--nodes", str(n), "--pods", str(p), "--distribution", "paper"], capsys)
    assert code == 2
    assert "distribution" in err and "online, trace" in err and "Traceback" not in err


def test_help_explains_both_modes(capsys):
    code, out, _ = run(["sim", "openb", "--help"], capsys)
    assert code in (0, None)
    text = " ".join(out.split())
    assert "--distribution" in text and "live control plane" in text and "trace" in text
