"""Behaviour only the local driver has: real processes, env, exit codes, signals, adoption."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from gpuplane.drivers.base import DriverError, DriverHandle, PlacedDevices, TaskSpec, TaskState
from gpuplane.drivers.local import LocalDriver
from gpuplane.drivers.local_inventory import (
    LocalGpu,
    LocalHostInfo,
    LocalMig,
    discover_local_host,
    normalise_model,
    parse_declared,
)
from gpuplane.domain.errors import InvalidInput

from .conftest import wait_until

PY = sys.executable


def run_to_end(d, h, timeout=10.0):
    assert wait_until(lambda: d.observe([h])[0].state.terminal, timeout)
    return d.observe([h])[0]


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (PID 1 may reap late)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def inventory(*gpus: LocalGpu) -> LocalHostInfo:
    return LocalHostInfo("h1", 2000, 4096, gpus, "nvml")


def test_the_task_sees_exactly_its_gpus_and_gang_variables(tmp_path):
    inv = inventory(*(LocalGpu(i, "H100-80GB", 81920, uuid=f"GPU-{i}") for i in range(4)))
    d = LocalDriver(tmp_path, host="h1", inventory=inv)
    code = ("import json,os,sys; print(json.dumps({k: v for k, v in os.environ.items() "
            "if k.startswith(('CUDA', 'NVIDIA', 'GPUPLANE'))}))")
    task = TaskSpec(task_id="t-env", workload="train", index=1, world_size=2,
                    command=(PY, "-c", code), master_port=29511)
    h = d.start(task, PlacedDevices(host="h1", gpu_indices=(1, 3)))
    assert run_to_end(d, h).state == TaskState.SUCCEEDED
    env = json.loads(d.read_logs(h)[0])
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-1,GPU-3"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-1,GPU-3"
    assert (env["GPUPLANE_WORKLOAD"], env["GPUPLANE_TASK_INDEX"], env["GPUPLANE_WORLD_SIZE"]) == (
        "train", "1", "2")
    assert (env["GPUPLANE_MASTER_ADDR"], env["GPUPLANE_MASTER_PORT"]) == ("127.0.0.1", "29511")
    assert "GPUPLANE_TOKEN" not in env


def test_a_task_without_gpus_sees_none_and_mig_tasks_see_their_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # gpuplane's own view must not leak
    d = LocalDriver(tmp_path, host="h1")
    env = d.task_env(TaskSpec(task_id="a", workload="w"), PlacedDevices(host="h1"))
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["NVIDIA_VISIBLE_DEVICES"] == "none"
    assert "GPUPLANE_MASTER_ADDR" not in env
    mig = PlacedDevices(host="h1", gpu_indices=(0,), mig_uuids=("MIG-abc",))
    assert d.task_env(TaskSpec(task_id="b", workload="w"), mig)["CUDA_VISIBLE_DEVICES"] == "MIG-abc"


def test_a_mig_placement_is_exposed_by_the_uuid_of_that_instance(tmp_path):
    inv = inventory(LocalGpu(0, "A100-40GB", 40960, uuid="GPU-0", mig=(
        LocalMig("MIG-a", "3g.20gb", 0), LocalMig("MIG-b", "3g.20gb", 4))))
    d = LocalDriver(tmp_path, host="h1", inventory=inv)
    placed = PlacedDevices(host="h1", gpu_indices=(0,), mig=((0, "3g.20gb", 4),))
    env = d.task_env(TaskSpec(task_id="m", workload="w"), placed)
    assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == "MIG-b"
    with pytest.raises(DriverError, match="no MIG instance 1g.5gb"):
        d.task_env(TaskSpec(task_id="m", workload="w"),
                   PlacedDevices(host="h1", gpu_indices=(0,), mig=((0, "1g.5gb", 6),)))


def test_a_whole_gpu_placement_on_a_mig_mode_gpu_is_refused(tmp_path):
    inv = inventory(LocalGpu(0, "A100-40GB", 40960, uuid="GPU-0", mig=(LocalMig("MIG-x", "1g.5gb"),)))
    d = LocalDriver(tmp_path, host="h1", inventory=inv)
    with pytest.raises(DriverError, match="MIG mode"):
        d.start(TaskSpec(task_id="t", workload="w", command=("true",)),
                PlacedDevices(host="h1", gpu_indices=(0,)))


def test_exit_codes_and_output_are_recorded(tmp_path):
    d = LocalDriver(tmp_path, host="h1")
    h = d.start(TaskSpec(task_id="t-fail", workload="w",
                         command=(PY, "-c", "print('hello from task'); raise SystemExit(3)")),
                PlacedDevices(host="h1"))
    obs = run_to_end(d, h)
    assert (obs.state, obs.exit_code) == (TaskState.FAILED, 3)
    assert b"hello from task" in d.read_logs(h)[0]
    assert (tmp_path / "logs" / "t-fail.log").exists()


def test_a_missing_program_fails_with_127_and_a_message(tmp_path):
    d = LocalDriver(tmp_path, host="h1")
    h = d.start(TaskSpec(task_id="t-missing", workload="w", command=("no-such-program-xyz",)),
                PlacedDevices(host="h1"))
    obs = run_to_end(d, h)
    assert (obs.state, obs.exit_code) == (TaskState.FAILED, 127)
    out = d.read_logs(h)[0]  # the runner's message, or env(1)'s inside the sandbox
    assert b"cannot start" in out or b"No such file or directory" in out


def test_a_task_without_command_is_refused(tmp_path):
    with pytest.raises(DriverError, match="no command"):
        LocalDriver(tmp_path, host="h1").start(TaskSpec(task_id="t", workload="w"),
                                               PlacedDevices(host="h1"))


def test_stop_kills_a_task_that_ignores_sigterm_after_the_grace_period(tmp_path):
    d = LocalDriver(tmp_path, host="h1")
    code = ("import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    h = d.start(TaskSpec(task_id="t-stubborn", workload="w", command=(PY, "-c", code)),
                PlacedDevices(host="h1"))
    assert wait_until(lambda: b"ready" in d.read_logs(h)[0])
    d.stop(h, grace_s=0.3)
    obs = run_to_end(d, h)
    assert obs.state == TaskState.CANCELLED
    assert wait_until(lambda: not live_group_members(h.data["pid"]))


def test_a_task_that_ended_while_gpuplane_was_down_reports_its_exit_code(tmp_path):
    d1 = LocalDriver(tmp_path, host="h1")
    h = d1.start(TaskSpec(task_id="t-gone", workload="w", command=(PY, "-c", "raise SystemExit(5)")),
                 PlacedDevices(host="h1"))
    assert wait_until(lambda: Path(h.data["exit_file"]).exists())
    obs = LocalDriver(tmp_path, host="h1").observe([DriverHandle.from_dict(h.to_dict())])[0]
    assert (obs.state, obs.exit_code) == (TaskState.FAILED, 5)
    d1.observe([h])  # reap


def test_adoption_is_reported_once_and_a_killed_task_is_lost(tmp_path):
    d1 = LocalDriver(tmp_path, host="h1")
    h = d1.start(TaskSpec(task_id="t-kill", workload="w", command=("sleep", "60")),
                 PlacedDevices(host="h1"))
    d2 = LocalDriver(tmp_path, host="h1")
    first, second = d2.observe([h])[0], d2.observe([h])[0]
    assert first.adopted and first.state == TaskState.RUNNING and not second.adopted
    os.killpg(h.data["pid"], signal.SIGKILL)  # nothing can write an exit code now
    d1.observe([h])  # the old parent reaps it
    assert wait_until(lambda: d2.observe([h])[0].state == TaskState.LOST)


def test_a_reused_pid_is_not_mistaken_for_the_task(tmp_path):
    d = LocalDriver(tmp_path, host="h1")
    fake = DriverHandle("local", "t-reused", "h1",
                        {"pid": os.getpid(), "start_time": 1, "boot_id": d._boot})
    assert d.observe([fake])[0].state == TaskState.LOST


def test_declared_gpus_are_parsed_and_flagged_and_bad_ones_name_the_item():
    gpus = parse_declared("2xL40S-48GB, A100-80GB")
    assert [(g.index, g.model, g.declared) for g in gpus] == [
        (0, "L40S-48GB", True), (1, "L40S-48GB", True), (2, "A100-80GB", True)]
    with pytest.raises(InvalidInput) as err:
        parse_declared("2xL40S-48GB,banana")
    assert err.value.errors[0].loc == "local_gpus[1]"


def test_nvml_names_are_normalised():
    assert normalise_model("NVIDIA H100 80GB HBM3", 81559) == "H100-80GB"
    assert normalise_model("NVIDIA A100-SXM4-40GB", 40536) == "A100-40GB"
    assert normalise_model("NVIDIA L40S", 46068) == "L40S"
    assert normalise_model("NVIDIA H200", 143771) == "H200"
    assert normalise_model("NVIDIA RTX A6000", 49140) == "RTXA6000-48GB"


def test_discovery_without_a_gpu_is_cpu_only_or_declared():
    info = discover_local_host("here", declared="1xL4-24GB")
    assert info.cpu_milli >= 1000 and info.memory_mib > 0
    if info.source == "declared":
        assert all(g.declared for g in info.gpus) and info.notes
    else:
        assert info.source == "nvml"


def test_starting_again_after_a_crash_returns_the_first_start_instead_of_a_second_process(tmp_path):
    task = TaskSpec(task_id="t-once", workload="w", command=("sleep", "60"))
    h1 = LocalDriver(tmp_path, host="h1").start(task, PlacedDevices(host="h1"))
    d2 = LocalDriver(tmp_path, host="h1")  # the handle was never stored: start is asked again
    h2 = d2.start(task, PlacedDevices(host="h1"))
    assert h2.data["pid"] == h1.data["pid"]
    d2.stop(h2, grace_s=1)
    d2.forget([h2])
    h3 = d2.start(task, PlacedDevices(host="h1"))  # forgotten: a new attempt really starts
    assert h3.data["pid"] != h1.data["pid"]
    d2.stop(h3, grace_s=1)


def test_a_relative_home_works_although_tasks_run_inside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = LocalDriver(".gpuplane", host="h1")  # the default GPUPLANE_HOME is relative
    h = d.start(TaskSpec(task_id="t-rel", workload="w", command=(PY, "-c", "print('ok')")),
                PlacedDevices(host="h1"))
    obs = run_to_end(d, h)
    assert (obs.state, obs.exit_code) == (TaskState.SUCCEEDED, 0)
    assert d.read_logs(h)[0] == b"ok\n"
