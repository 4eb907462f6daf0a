"""gpuplane's Nova client against a live Nova 34 (scripts/openstack/nova.sh: api, conductor,
scheduler, compute with the fake driver, real Glance, RabbitMQ and its own real Placement).

Runs with ``GPUPLANE_TEST_NOVA=1`` (``make test-nova``); skipped otherwise (conftest_nova.py).
The fake compute node carries CUSTOM_MIG_1G_10GB: 7 and CUSTOM_GPU_MILLI: 2000 with the traits
CUSTOM_GPU_H100_80GB and CUSTOM_GPU_MIG_MODE. There is no Neutron: GET /servers/{id} answers
500 and the client watches through the brief listing; deleting a server fails on the compute
host (its network deallocation needs Neutron), which the last test pins down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from conftest_nova import NovaStack, nova_endpoint, nova_stack  # noqa: F401  (fixtures)

from gpuplane.drivers.base import DriverHandle, PlacedDevices, TaskObservation, TaskSpec, TaskState
from gpuplane.drivers.openstack.nova import NovaClient, NovaError, ServerFailed
from gpuplane.drivers.openstack.nova_driver import NOVA_HOST_LABEL, NovaDriver
from gpuplane.drivers.openstack.nova_flavors import VmRequest, flavor_for
from gpuplane.drivers.openstack.placement import PlacementClient

# openstacksdk 4.x warns about its own internals on every call
pytestmark = pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning")

MIG = "CUSTOM_MIG_1G_10GB"
GPU_MILLI = "CUSTOM_GPU_MILLI"


@pytest.fixture
def nova(nova_endpoint: str, nova_stack: NovaStack) -> Iterator[NovaClient]:  # noqa: F811
    # a project of its own per test: listings (and the capacity arithmetic) see only its servers
    with NovaClient.connect(nova_endpoint, token=nova_stack.token, user_id="gpuplane-test",
                            project_id=uuid.uuid4().hex,
                            roles=("admin", "member", "reader")) as client:
        yield client


@pytest.fixture
def placement(nova_stack: NovaStack) -> Iterator[PlacementClient]:  # noqa: F811
    if not nova_stack.placement_url:
        pytest.skip("GPUPLANE_TEST_NOVA_PLACEMENT_URL is not set: Placement checks skipped")
    with PlacementClient(nova_stack.placement_url) as client:
        yield client


def _free(placement: PlacementClient, node: str, rc: str) -> int:
    _, inventories = placement.get_inventories(node)
    return inventories[rc].total - placement.provider_usages(node).get(rc, 0)


def test_mig_flavor_boots_active_with_its_allocation_in_placement(
        nova: NovaClient, nova_stack: NovaStack, placement: PlacementClient) -> None:  # noqa: F811
    req = VmRequest(vcpus=2, memory_mib=2048, mig_profile="1g.10gb", mig_count=2,
                    gpu_model="H100-80GB")
    spec = flavor_for(req)
    st = nova.boot(f"gpt-mig-{uuid.uuid4().hex[:6]}", spec, nova_stack.image_id, timeout_s=120)
    assert st.status == "ACTIVE"
    alloc = placement.get_allocations(st.id).allocations
    assert alloc[nova_stack.node_uuid] == {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 1, MIG: 2}
    # the same request reuses the flavor: same id, nothing created
    assert nova.ensure_flavor(flavor_for(req)) == spec.id


def _observe_until(driver: NovaDriver, handle: DriverHandle, done: Any,
                   timeout_s: float = 120.0) -> TaskObservation:
    deadline = time.monotonic() + timeout_s
    while True:
        [ob] = driver.observe([handle])
        if done(ob) or time.monotonic() > deadline:
            return ob
        time.sleep(1.0)


def test_the_nova_driver_runs_a_task_as_a_server_pinned_to_its_host(
        nova: NovaClient, nova_stack: NovaStack, placement: PlacementClient) -> None:  # noqa: F811
    """The live plane's ``nova`` driver (what a host registered with ``driver: nova`` runs):
    a task placed on one MIG slice boots as a server on the compute host named by the host's
    label, with the slice claimed in Placement; ``stop`` deletes it. Without Neutron the delete
    fails on the compute host, and the driver reports the task Failed with that reason."""
    gpu = SimpleNamespace(index=0, model="H100-80GB", mode="mig")
    driver = NovaDriver(nova, image_id=nova_stack.image_id,
                        hosts={"vm-host": SimpleNamespace(name="vm-host", gpus=(gpu,),
                                                          tee=None)}.get,
                        host_labels=lambda name: {NOVA_HOST_LABEL: nova_stack.host})
    task = TaskSpec(task_id=f"live-{uuid.uuid4().hex[:8]}", workload="live-driver",
                    cpu_milli=1000, memory_mib=1024)
    before = placement.provider_usages(nova_stack.node_uuid).get(MIG, 0)
    handle = driver.start(task, PlacedDevices(host="vm-host", gpu_indices=(0,),
                                              mig=((0, "1g.10gb", 0),)))
    assert handle.data["compute_host"] == nova_stack.host
    running = _observe_until(driver, handle, lambda ob: "ACTIVE" in (ob.message or "")
                             or ob.state is not TaskState.RUNNING)
    assert running.state is TaskState.RUNNING and "ACTIVE" in running.message, running
    server_id = handle.data["server_id"]
    assert placement.get_allocations(server_id).allocations[nova_stack.node_uuid][MIG] == 1
    assert placement.provider_usages(nova_stack.node_uuid)[MIG] == before + 1
    driver.stop(handle, grace_s=60)
    ended = _observe_until(driver, handle, lambda ob: ob.state is not TaskState.RUNNING)
    if nova_stack.start_s is None:  # an operator's Nova (with Neutron) deletes it
        assert ended.state is TaskState.CANCELLED, ended
    else:
        assert ended.state is TaskState.FAILED and "could not delete" in ended.message, ended


def test_boot_beyond_capacity_is_no_valid_host(
        nova: NovaClient, nova_stack: NovaStack, placement: PlacementClient) -> None:  # noqa: F811
    spec = flavor_for(VmRequest(vcpus=1, memory_mib=1024, mig_profile="1g.10gb", mig_count=3,
                                gpu_model="H100-80GB"))
    fits = _free(placement, nova_stack.node_uuid, MIG) // 3
    for i in range(fits):
        assert nova.boot(f"gpt-fill-{i}", spec, nova_stack.image_id,
                         timeout_s=120).status == "ACTIVE"
    used = placement.provider_usages(nova_stack.node_uuid)
    with pytest.raises(ServerFailed) as err:
        nova.boot("gpt-one-too-many", spec, nova_stack.image_id, timeout_s=120)
    assert err.value.reason == "no_valid_host"
    assert err.value.code == "gpuplane.openstack.server_no_valid_host"
    assert "No valid host was found" in str(err.value)
    assert placement.provider_usages(nova_stack.node_uuid) == used  # nothing was claimed
    assert placement.get_allocations(err.value.server_id).allocations == {}


def test_concurrent_boots_never_over_allocate(
        nova: NovaClient, nova_endpoint: str, nova_stack: NovaStack,  # noqa: F811
        placement: PlacementClient) -> None:
    """Boots sent at once for more milli-GPUs than are free: exactly those that fit become
    ACTIVE, the others no_valid_host, and Placement never holds more than its inventory."""
    spec = flavor_for(VmRequest(vcpus=1, memory_mib=256, gpus=1, gpu_milli=600,
                                gpu_model="H100-80GB"))
    flavor_id = nova.ensure_flavor(spec)
    node = nova_stack.node_uuid
    fits = _free(placement, node, GPU_MILLI) // 600
    project = uuid.uuid4().hex

    def boot(i: int) -> str:
        with NovaClient.connect(nova_endpoint, token=nova_stack.token, user_id="gpuplane-test",
                                project_id=project, roles=("admin", "member")) as client:
            server_id = client.create_server(f"gpt-race-{i}", flavor_id, nova_stack.image_id)
            return client.wait(server_id, timeout_s=120).status

    with ThreadPoolExecutor(fits + 2) as pool:
        statuses = sorted(pool.map(boot, range(fits + 2)))
    assert statuses == ["ACTIVE"] * fits + ["ERROR"] * 2
    _, inventories = placement.get_inventories(node)
    assert placement.provider_usages(node)[GPU_MILLI] <= inventories[GPU_MILLI].total


def test_a_trait_no_host_has_is_no_valid_host(nova: NovaClient,
                                              nova_stack: NovaStack) -> None:  # noqa: F811
    spec = flavor_for(VmRequest(vcpus=1, memory_mib=512, gpus=1, gpu_milli=100,
                                gpu_model="A100-80GB"))
    with pytest.raises(ServerFailed) as err:
        nova.boot("gpt-no-a100", spec, nova_stack.image_id, timeout_s=120)
    assert err.value.reason == "no_valid_host"


def test_show_detail_and_delete_without_neutron(nova: NovaClient,
                                                nova_stack: NovaStack) -> None:  # noqa: F811
    """What Nova without Neutron does to the calls that need it: reported, no traceback."""
    spec = flavor_for(VmRequest(vcpus=1, memory_mib=512))  # no GPU: the others took them
    st = nova.boot("gpt-delete-me", spec, nova_stack.image_id, timeout_s=120)
    if nova_stack.start_s is None:  # an operator's Nova (with Neutron): the full lifecycle
        assert nova.server(st.id).status == "ACTIVE"
        nova.delete_server(st.id, timeout_s=120)
        return
    assert st.via == "list" and nova.show_unavailable and "EmptyCatalog" in nova.show_unavailable
    with pytest.raises(NovaError) as err:
        nova.servers()
    assert err.value.code == "gpuplane.openstack.nova_failed" and err.value.status == 500
    with pytest.raises(ServerFailed) as failed:
        nova.delete_server(st.id, timeout_s=60)
    assert failed.value.reason == "delete_failed"
    assert failed.value.code == "gpuplane.openstack.server_delete_failed"
