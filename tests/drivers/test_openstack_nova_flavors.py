"""gpuplane requests -> Nova flavors (drivers/openstack/nova_flavors.py): pure, no Nova."""

from __future__ import annotations

import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.domain.workloads import Resources, TaskPlacement
from gpuplane.drivers.openstack.nova_flavors import VmRequest, flavor_for, vm_request_for
from gpuplane.drivers.openstack.tree import GpuView, HostView, mig_class, model_trait

H100 = "H100-80GB"


def _host(tee: str | None = "sev-snp") -> HostView:
    return HostView(name="w1", site="a", cpu_cores=64, memory_mib=512 * 1024, tee=tee, gpus=(
        GpuView(0, H100, 81920, 0, "whole"), GpuView(1, H100, 81920, 1, "whole"),
        GpuView(2, "L40S", 49152, 1, "shared"),
        GpuView(3, "A100-80GB", 81920, 1, "mig", ("1g.10gb",) * 7)))


@pytest.mark.parametrize(("req", "specs"), [
    (VmRequest(vcpus=8, memory_mib=65536, gpus=1, gpu_model=H100),
     {"resources_GPU1:VGPU": "1", "trait_GPU1:CUSTOM_GPU_H100_80GB": "required"}),
    (VmRequest(vcpus=16, memory_mib=131072, gpus=2, gpu_model=H100, numa_nodes=1),
     {"resources_GPU1:VGPU": "1", "trait_GPU1:CUSTOM_GPU_H100_80GB": "required",
      "resources_GPU2:VGPU": "1", "trait_GPU2:CUSTOM_GPU_H100_80GB": "required",
      "group_policy": "isolate", "hw:numa_nodes": "1"}),
    (VmRequest(vcpus=4, memory_mib=16384, mig_profile="1g.10gb", mig_count=2, gpu_model=H100),
     {"resources_GPU1:CUSTOM_MIG_1G_10GB": "2", "trait_GPU1:CUSTOM_GPU_H100_80GB": "required",
      "trait_GPU1:CUSTOM_GPU_MIG_MODE": "required"}),
    (VmRequest(vcpus=2, memory_mib=4096, gpus=1, gpu_milli=250),
     {"resources_GPU1:CUSTOM_GPU_MILLI": "250"}),
    (VmRequest(vcpus=8, memory_mib=32768, gpus=1, gpu_model=H100, tee="sev-snp",
               required_traits=("COMPUTE_SECURITY_TPM_2_0",), forbidden_traits=("CUSTOM_SLOW",)),
     {"resources_GPU1:VGPU": "1", "trait_GPU1:CUSTOM_GPU_H100_80GB": "required",
      "trait:HW_CPU_X86_AMD_SEV_SNP": "required", "trait:COMPUTE_SECURITY_TPM_2_0": "required",
      "trait:CUSTOM_SLOW": "forbidden"}),
    (VmRequest(vcpus=4, memory_mib=8192, tee="tdx"), {"trait:HW_CPU_X86_INTEL_TDX": "required"}),
    (VmRequest(vcpus=1, memory_mib=512), {}),
], ids=["one-gpu", "two-gpus-one-numa", "mig", "milli", "sev-snp-traits", "tdx-cpu-only",
        "no-gpu"])
def test_extra_specs_carry_the_placed_resources(req: VmRequest, specs: dict[str, str]) -> None:
    flavor = flavor_for(req)
    assert dict(flavor.extra_specs) == specs
    assert (flavor.vcpus, flavor.ram, flavor.disk) == (req.vcpus, req.memory_mib, req.disk_gb)


def test_names_come_from_tree_py() -> None:
    specs = flavor_for(VmRequest(vcpus=1, memory_mib=1, mig_profile="1g.10gb+me", mig_count=1,
                                 gpu_model="A100-80GB")).extra_specs
    assert specs[f"resources_GPU1:{mig_class('1g.10gb+me')}"] == "1"
    assert specs[f"trait_GPU1:{model_trait('A100-80GB')}"] == "required"


def test_pci_passthrough_uses_the_alias() -> None:
    flavor = flavor_for(VmRequest(vcpus=8, memory_mib=65536, gpus=2, gpu_model=H100),
                        whole_class="PGPU", pci_alias="h100")
    assert dict(flavor.extra_specs) == {"pci_passthrough:alias": "h100:2"}


def test_whole_class_and_flat_requests() -> None:
    req = VmRequest(vcpus=8, memory_mib=65536, gpus=2, gpu_model=H100)
    assert dict(flavor_for(req, whole_class="PGPU").extra_specs)["resources_GPU2:PGPU"] == "1"
    assert dict(flavor_for(req, granular=False).extra_specs) == {
        "resources:VGPU": "2", "trait:CUSTOM_GPU_H100_80GB": "required"}


def test_identical_requests_share_one_flavor_and_others_do_not() -> None:
    a = flavor_for(VmRequest(vcpus=4, memory_mib=16384, mig_profile="1g.10gb", mig_count=2,
                             gpu_model=H100))
    b = flavor_for(VmRequest(vcpus=4, memory_mib=16384, mig_profile="1g.10gb", mig_count=2,
                             gpu_model=H100))
    c = flavor_for(VmRequest(vcpus=4, memory_mib=16384, mig_profile="1g.10gb", mig_count=3,
                             gpu_model=H100))
    assert a == b and a.id == b.id and a.name == b.name
    assert c.id != a.id and c.name != a.name
    assert a.name.startswith("gpuplane.4c16384m1g-mig1g10gbx2-h10080gb.")
    assert flavor_for(VmRequest(vcpus=4, memory_mib=16384), prefix="acme").name.startswith("acme.")


def test_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidInput) as err:
        flavor_for(VmRequest(vcpus=0, memory_mib=0, gpus=2, gpu_milli=500, tee="sgx",
                             mig_profile="big", required_traits=("lower",)),
                   whole_class="GPU", pci_alias="bad alias")
    locs = {e.loc for e in err.value.errors}
    assert locs == {"vcpus", "memory_mib", "gpu_milli", "tee", "mig_profile", "mig_count", "gpus",
                    "required_traits", "whole_class", "pci_alias"}


def test_a_task_and_its_placement_become_a_vm_request() -> None:
    host = _host()
    whole = vm_request_for(Resources(cpu=6.5, memory="64Gi", gpus=2),
                           placement=TaskPlacement(host="w1", gpu_indices=(0, 1)), host=host,
                           confidential=True)
    assert whole == VmRequest(vcpus=7, memory_mib=65536, gpus=2, gpu_model=H100, tee="sev-snp")
    mig = vm_request_for(Resources(cpu=2, memory=8192, gpus=1, mig_profile="1g.10gb"),
                         placement=TaskPlacement(host="w1", gpu_indices=(3,), mig=(
                             {"profile": "1g.10gb", "gpu_index": 3},)), host=host)
    assert (mig.mig_profile, mig.mig_count, mig.gpu_model, mig.gpus) == \
        ("1g.10gb", 1, "A100-80GB", 0)
    share = vm_request_for(Resources(cpu=1, memory=2048, gpus=1, gpu_milli=300),
                           placement=TaskPlacement(host="w1", gpu_indices=(2,), gpu_milli=300),
                           host=host)
    assert dict(flavor_for(share).extra_specs) == {
        "resources_GPU1:CUSTOM_GPU_MILLI": "300", "trait_GPU1:CUSTOM_GPU_L40S": "required"}
    whole_shared = vm_request_for(Resources(gpus=1), placement=TaskPlacement(
        host="w1", gpu_indices=(2,)), host=host)
    assert dict(flavor_for(whole_shared).extra_specs)["resources_GPU1:CUSTOM_GPU_MILLI"] == "1000"


def test_before_placement_the_request_alone_decides() -> None:
    one_model = vm_request_for(Resources(gpus=1, gpu_models=[H100]))
    any_model = vm_request_for(Resources(gpus=1, gpu_models=[H100, "A100-80GB"]))
    assert one_model.gpu_model == H100 and any_model.gpu_model is None
    with pytest.raises(InvalidInput, match="TEE"):
        vm_request_for(Resources(gpus=1), confidential=True)
    assert vm_request_for(Resources(gpus=1), confidential=True, tee="tdx").tee == "tdx"
