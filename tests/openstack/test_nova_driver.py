"""The nova driver: state mapping (pure), start/observe/stop against a fake NovaClient, and
one boot/observe/delete through the recorded Nova exchanges (Replay)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gpuplane.drivers.base import DriverError, DriverHandle, PlacedDevices, TaskSpec, TaskState
from gpuplane.drivers.openstack.nova import NovaError, ServerFailed, ServerState
from gpuplane.drivers.openstack.nova_driver import NovaDriver, state_of
from gpuplane.drivers.registry import DRIVERS

from conftest_nova import replay  # noqa: F401, E402  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TASK = TaskSpec(task_id="t-1", workload="train", cpu_milli=2000, memory_mib=2048)
GPU = SimpleNamespace(index=0, model="H100-80GB", mode="mig")
HOST = SimpleNamespace(name="h1", gpus=(GPU,), tee=None)
MIG = PlacedDevices(host="h1", gpu_indices=(0,), mig=((0, "1g.10gb", 0), (0, "1g.10gb", 1)))


@pytest.mark.parametrize(("status", "stopped", "want"), [
    ("ACTIVE", False, TaskState.RUNNING), ("BUILD", False, TaskState.RUNNING),
    ("ERROR", False, TaskState.FAILED), (None, False, TaskState.LOST),
    (None, True, TaskState.CANCELLED), ("DELETED", True, TaskState.CANCELLED),
    ("SHUTOFF", False, TaskState.SUCCEEDED)])
def test_state_mapping(status: str | None, stopped: bool, want: TaskState) -> None:
    assert state_of(status, stopped=stopped)[0] is want


def test_error_carries_the_fault_and_a_failed_delete_is_failed() -> None:
    assert "No valid host" in state_of("ERROR", fault="No valid host was found.")[1]
    st, msg = state_of("ERROR", stopped=True, stop_error="delete failed: no Neutron")
    assert st is TaskState.FAILED and "no Neutron" in msg


class FakeNova:
    def __init__(self) -> None:
        self.flavors: list[Any] = []
        self.created: list[dict[str, Any]] = []
        self.status: dict[str, ServerState | None] = {}
        self.delete_error: Exception | None = None

    def ensure_flavor(self, spec: Any) -> str:
        self.flavors.append(spec)
        return spec.id

    def create_server(self, name: str, flavor_id: str, image_id: str, **attrs: Any) -> str:
        self.created.append({"name": name, "flavor_id": flavor_id, "image_id": image_id,
                             **attrs})
        self.status["s-1"] = ServerState(id="s-1", status="BUILD")
        return "s-1"

    def state(self, sid: str) -> ServerState | None:
        return self.status.get(sid)

    def delete_server(self, sid: str, **kw: Any) -> None:
        if self.delete_error:
            raise self.delete_error
        self.status[sid] = None


def _driver(nova: FakeNova, **kw: Any) -> NovaDriver:
    return NovaDriver(nova, image_id="img", hosts={"h1": HOST}.get,
                      host_labels=lambda n: {"gpuplane.io/nova-host": "compute-7"}, **kw)


def test_start_observe_stop() -> None:
    nova = FakeNova()
    drv = _driver(nova)
    h = drv.start(TASK, MIG)
    assert h.data["server_id"] == "s-1" and h.driver == "nova" and h.host == "h1"
    [spec] = nova.flavors
    assert (spec.vcpus, spec.ram) == (2, 2048)
    assert any("1g.10gb" in k or "1g.10gb" in str(v) or "MIG" in k.upper()
               for k, v in spec.extra_specs.items())
    assert nova.created[0]["availability_zone"] == "nova:compute-7"
    assert drv.observe([h])[0].state is TaskState.RUNNING          # BUILD
    nova.status["s-1"] = ServerState(id="s-1", status="ACTIVE")
    assert drv.observe([h])[0].state is TaskState.RUNNING
    nova.status["s-1"] = ServerState(id="s-1", status="ERROR", fault="No valid host was found.")
    ob = drv.observe([h])[0]
    assert ob.state is TaskState.FAILED and "No valid host" in ob.message
    nova.status["s-1"] = ServerState(id="s-1", status="ACTIVE")
    drv.stop(h)
    drv.stop(h)                                                      # idempotent
    assert drv.observe([h])[0].state is TaskState.CANCELLED


def test_gone_without_stop_is_lost_and_handle_roundtrips() -> None:
    nova = FakeNova()
    drv = _driver(nova)
    h = DriverHandle.from_dict(drv.start(TASK, MIG).to_dict())
    nova.status["s-1"] = None
    assert drv.observe([h])[0].state is TaskState.LOST


def test_delete_that_fails_is_reported_failed_not_raised() -> None:
    nova = FakeNova()
    nova.delete_error = ServerFailed("s-1", "delete_failed", "network info missing")
    drv = _driver(nova)
    h = drv.start(TASK, MIG)
    drv.stop(h)
    ob = drv.observe([h])[0]
    assert ob.state is TaskState.FAILED and "could not delete" in ob.message


def test_nova_errors_on_start_are_driver_errors() -> None:
    nova = FakeNova()

    def boom(*args: Any, **kw: Any) -> Any:
        raise NovaError("creating server: Nova answered 400: bad AZ", status=400,
                        code="gpuplane.openstack.nova_error")
    nova.create_server = boom  # type: ignore[method-assign]
    with pytest.raises(DriverError, match="bad AZ"):
        _driver(nova).start(TASK, MIG)


def test_registry_lists_nova_and_needs_an_image() -> None:
    assert "nova" in DRIVERS
    with pytest.raises(DriverError):
        NovaDriver(FakeNova(), image_id="")


def test_driver_flavor_matches_the_recorded_one() -> None:
    from gpuplane.drivers.openstack.nova_flavors import VmRequest, flavor_for
    want = flavor_for(VmRequest(vcpus=2, memory_mib=2048, mig_profile="1g.10gb", mig_count=2,
                                gpu_model="H100-80GB"))
    assert _driver(FakeNova()).flavor(TASK, MIG) == want


@pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning")
def test_recorded_boot_observe_delete(replay: Any) -> None:  # noqa: F811
    from gpuplane.drivers.openstack.nova import NovaClient
    rec = replay("apiref_lifecycle")
    with NovaClient.connect(rec.url, user_id="gpuplane-test", project_id="p",
                            roles=("admin",)) as nova:
        drv = NovaDriver(nova, image_id="ee10db74-fa85-4be1-b1c9-1de97b22eca9",
                         hosts={"h1": HOST}.get)
        h = drv.start(TASK, MIG)
        assert h.data["server_id"]
        states = {drv.observe([h])[0].state for _ in range(3)}
        assert states == {TaskState.RUNNING}
        drv.stop(h)
        assert drv.observe([h])[0].state is TaskState.CANCELLED
    assert rec.misses == [], rec.misses
