"""Requests no host could ever satisfy are refused at submission, naming the field, what the
fleet offers and the command that lists it (domain/feasibility.py)."""

from __future__ import annotations

from gpuplane.domain.feasibility import HostShape, infeasible
from gpuplane.domain.workloads import WorkloadSpec

FLEET = [
    HostShape(64_000, 512 * 1024, (("H100-80GB", "whole"),) * 8),
    HostShape(32_000, 256 * 1024, (("A100-40GB", "mig"),) * 2 + (("A100-40GB", "shared"),) * 2),
]


def spec(gang: bool = False, replicas: int = 1, **resources) -> WorkloadSpec:
    return WorkloadSpec(name="w", gang=gang, tasks=[{"command": ["x"], "replicas": replicas,
                                                     "resources": resources}])


def locs(s: WorkloadSpec) -> list[str]:
    return [e.loc for e in infeasible(s, FLEET)]


def test_what_fits_passes():
    assert locs(spec(gpus=8)) == []
    assert locs(spec(gpus=1, mig_profile="3g.20gb")) == []
    assert locs(spec(gpus=1, gpu_milli=250)) == []
    assert locs(spec(gang=True, replicas=2, gpus=4)) == []   # both on the 8-GPU host
    assert infeasible(spec(gpus=64), []) == []               # an empty fleet refuses nothing


def test_more_gpus_than_any_host_names_the_most_and_a_split():
    errors = infeasible(spec(gpus=16), FLEET)
    assert [e.loc for e in errors] == ["tasks[0].resources.gpus"]
    assert "no host has more than 8" in errors[0].msg and "gang of 2 tasks" in errors[0].msg
    assert "`gpuplane get hosts`" in errors[0].msg


def test_models_restrict_what_counts():
    errors = infeasible(spec(gpus=4, gpu_models=["A100-40GB"]), FLEET)
    assert "no host has more than 2 usable GPUs of models A100-40GB" in errors[0].msg


def test_a_mig_profile_no_gpu_offers():
    errors = infeasible(spec(gpus=1, mig_profile="3g.40gb"), FLEET)
    assert errors[0].loc == "tasks[0].resources.mig_profile"
    assert "A100-40GB" in errors[0].msg and "`gpuplane get gpus`" in errors[0].msg
    errors = infeasible(spec(gpus=1, mig_profile="1g.10gb", gpu_models=["H100-80GB"]), FLEET)
    assert "no GPU of models H100-80GB is in MIG mode" in errors[0].msg


def test_shares_need_a_shared_gpu_and_cpu_memory_must_fit_a_host():
    errors = infeasible(spec(gpus=1, gpu_milli=500, gpu_models=["H100-80GB"]), FLEET)
    assert errors[0].loc == "tasks[0].resources.gpu_milli"
    assert locs(spec(cpu=128)) == ["tasks[0].resources.cpu"]
    assert locs(spec(memory="1024Gi")) == ["tasks[0].resources.memory"]


def test_a_gang_larger_than_the_fleet():
    errors = infeasible(spec(gang=True, replicas=4, gpus=4), FLEET)
    assert [e.loc for e in errors] == ["gang"]
    assert "needs 16 GPUs at once but the whole fleet has 10" in errors[0].msg
