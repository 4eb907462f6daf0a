"""Inventory and request value types: validation names every bad field."""

import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.domain.inventory import GpuDevice, Host, Taint, gpu_memory_mib, uniform_host
from gpuplane.domain.requests import Placement, TaskRequest, Toleration


def test_a_host_with_bad_amounts_lists_every_bad_field():
    with pytest.raises(InvalidInput) as e:
        Host(name="", cpu_milli=-1, memory_mib="x")
    locs = {f.loc for f in e.value.errors}
    assert locs == {"name", "cpu_milli", "memory_mib"}


def test_gpu_devices_must_be_indexed_in_order():
    with pytest.raises(InvalidInput) as e:
        Host("h", 1000, 1000, gpus=(GpuDevice(1, "T4"),))
    assert e.value.errors[0].loc == "gpus[0].index"


def test_gpu_device_rejects_unknown_mode_and_layout_outside_mig():
    with pytest.raises(InvalidInput) as e:
        GpuDevice(0, "T4", mode="sliced")
    assert e.value.errors[0].loc == "mode"
    with pytest.raises(InvalidInput):
        GpuDevice(0, "T4", mode="shared", mig_layout=object())


def test_known_models_get_their_memory_and_unknown_ones_zero():
    assert GpuDevice(0, "H100-80GB").memory_mib == 80 * 1024
    assert GpuDevice(0, "Mystery").memory_mib == 0
    assert gpu_memory_mib("T4") == 16 * 1024


def test_hosts_and_requests_are_hashable_values():
    a = uniform_host("h", 8000, 1000, 2, "T4", labels={"zone": "a"})
    b = uniform_host("h", 8000, 1000, 2, "T4", labels={"zone": "a"})
    assert a == b and hash(a) == hash(b)
    assert hash(TaskRequest(1000, 10, selector={"a": "b"})) == hash(TaskRequest(1000, 10, selector={"a": "b"}))


@pytest.mark.parametrize("kwargs, loc", [
    (dict(cpu_milli=-5, memory_mib=1), "cpu_milli"),
    (dict(cpu_milli=1, memory_mib=1, gpus=1, gpu_milli=0), "gpu_milli"),
    (dict(cpu_milli=1, memory_mib=1, gpus=1, gpu_milli=1500), "gpu_milli"),
    (dict(cpu_milli=1, memory_mib=1, gpus=2, mig_profile="1g.10gb"), "gpus"),
    (dict(cpu_milli=1, memory_mib=1, gpus=-1), "gpus"),
    (dict(cpu_milli=1.5, memory_mib=1), "cpu_milli"),
], ids=["negative cpu", "zero share", "share above one GPU", "mig needs one gpu",
        "negative gpus", "fractional cpu"])
def test_bad_requests_name_the_field(kwargs, loc):
    with pytest.raises(InvalidInput) as e:
        TaskRequest(**kwargs)
    assert loc in {f.loc for f in e.value.errors}
    assert "task request" in str(e.value)


def test_request_kinds():
    assert TaskRequest(1000, 1).is_cpu_only and TaskRequest(1000, 1).gpu_milli == 0
    assert TaskRequest(1000, 1, gpus=1, gpu_milli=300).is_shared
    assert TaskRequest(1000, 1, gpus=4).is_whole
    assert TaskRequest(1000, 1, gpus=4).gpu_demand_milli == 4000
    assert TaskRequest(1000, 1, gpus=1, mig_profile="1g.10gb").gpu_demand_milli == 0


def test_tolerations_match_taints():
    t = Taint("gpu", "h100", "NoSchedule")
    assert Toleration("gpu", "Equal", "h100").tolerates(t)
    assert not Toleration("gpu", "Equal", "a100").tolerates(t)
    assert Toleration("gpu", "Exists").tolerates(t)
    assert Toleration(operator="Exists").tolerates(t)
    assert not Toleration("gpu", "Exists", effect="NoExecute").tolerates(t)
    with pytest.raises(InvalidInput):
        Toleration("", "Equal")
    with pytest.raises(InvalidInput):
        Taint("k", effect="Sometimes")


def test_placement_rejects_repeated_devices():
    with pytest.raises(InvalidInput):
        Placement("h", (1, 1), 1000)
    assert Placement("h", [2, 0], 500).gpu_indices == (2, 0)
