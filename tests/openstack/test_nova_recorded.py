"""gpuplane's Nova client (openstacksdk underneath, unchanged) against recorded Nova responses.

Always run; no Nova needed. ``recorded/nova/live_*.json`` were recorded from the live Nova 34 of
``scripts/openstack/nova.sh`` (no Neutron: show/detail answer 500 and delete fails on the
compute host); ``recorded/nova/apiref_*.json`` add what only a Nova with Neutron answers
(GET /servers/{id}, GET /servers/detail, a DELETE that completes), written from the Compute API
reference — each exchange says ``origin: live`` or ``origin: api-ref`` (docs/openstack.md, "Nova").
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_nova import RECORDED, Replay, replay  # noqa: F401  (fixture)

from gpuplane.domain.errors import Conflict
from gpuplane.drivers.openstack.nova import (
    NovaClient,
    NovaError,
    NovaNotFound,
    ServerFailed,
    WatchTimeout,
)
from gpuplane.drivers.openstack.nova_flavors import VmRequest, flavor_for

# openstacksdk 4.x warns about its own internals on every call
pytestmark = pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning")

IMAGE = "ee10db74-fa85-4be1-b1c9-1de97b22eca9"  # the Glance image of the recordings
MIG_2 = VmRequest(vcpus=2, memory_mib=2048, mig_profile="1g.10gb", mig_count=2,
                  gpu_model="H100-80GB")
MIG_3 = VmRequest(vcpus=1, memory_mib=1024, mig_profile="1g.10gb", mig_count=3,
                  gpu_model="H100-80GB")
CPU_ONLY = VmRequest(vcpus=1, memory_mib=512)


class Clock:
    """A fake clock: ``sleep`` advances it, so timeouts are reached without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps += 1
        self.now += s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(replay: Any, clock: Clock, request: pytest.FixtureRequest  # noqa: F811
           ) -> Iterator[tuple[NovaClient, Replay]]:
    rec: Replay = replay(request.param)
    with NovaClient.connect(rec.url, user_id="gpuplane-test", project_id="p",
                            roles=("admin",), clock=clock, sleep=clock.sleep) as nova:
        yield nova, rec
    assert rec.misses == [], f"requests with no recorded answer: {rec.misses}"


def _server_id(rec: Replay, n: int = -1) -> str:
    posts = [e for e in rec.exchanges if e["method"] == "POST" and e["path"] == "/v2.1/servers"]
    return posts[n]["body"]["server"]["id"]


def test_every_recorded_exchange_says_where_it_came_from() -> None:
    for path in sorted(RECORDED.glob("*.json")):
        doc = json.loads(path.read_text())
        assert doc["source"], path.name
        origins = {e["origin"] for e in doc["exchanges"]}
        assert origins <= {"live", "api-ref"}, path.name
        if path.name.startswith("live_"):
            assert origins == {"live"}, path.name


# -- the live recordings (Nova without Neutron) ---------------------------------------------------
@pytest.mark.parametrize("client", ["live_boot_mig"], indirect=True)
def test_boot_creates_the_flavor_once_and_watches_through_the_listing(client: Any) -> None:
    nova, rec = client
    spec = flavor_for(MIG_2)
    st = nova.boot("gpt-mig", spec, IMAGE)
    assert (st.id, st.status, st.via) == (_server_id(rec), "ACTIVE", "list")
    assert "EmptyCatalog" in (nova.show_unavailable or "")
    post = next(b for m, p, b in rec.bodies if m == "POST" and p == "/v2.1/servers")
    assert post["server"]["networks"] == "none" and post["server"]["flavorRef"] == spec.id
    specs = next(b for m, p, b in rec.bodies if p.endswith("/os-extra_specs"))
    assert specs == {"extra_specs": dict(spec.extra_specs)}
    assert nova.ensure_flavor(spec) == spec.id  # exists now: read, not created again
    assert rec.count("POST", "/v2.1/flavors") == 2  # the flavor and its extra specs, once


@pytest.mark.parametrize("client", ["live_no_valid_host"], indirect=True)
def test_no_valid_host_from_the_listing_and_instance_actions(client: Any) -> None:
    nova, rec = client
    spec = flavor_for(MIG_3)
    assert nova.boot("gpt-fill-0", spec, IMAGE).status == "ACTIVE"
    with pytest.raises(ServerFailed) as err:
        nova.boot("gpt-one-too-many", spec, IMAGE)
    assert err.value.server_id == _server_id(rec)
    assert err.value.reason == "no_valid_host"
    assert err.value.code == "gpuplane.openstack.server_no_valid_host"
    assert err.value.fault == "No valid host was found."
    assert str(err.value) == (f"server {_server_id(rec)} is in ERROR: no compute host has the "
                              "requested resources (Nova: No valid host was found.)")


@pytest.mark.parametrize("client", ["live_show_detail_delete"], indirect=True)
def test_detail_500_and_a_delete_the_compute_host_fails(client: Any) -> None:
    nova, rec = client
    st = nova.boot("gpt-delete-me", flavor_for(CPU_ONLY), IMAGE)
    with pytest.raises(NovaError) as err:
        nova.servers()
    assert err.value.status == 500 and err.value.code == "gpuplane.openstack.nova_failed"
    assert "listing servers: Nova answered 500: Unexpected API Error" in str(err.value)
    with pytest.raises(ServerFailed) as failed:
        nova.delete_server(st.id)
    assert failed.value.reason == "delete_failed"
    assert failed.value.fault == "Unauthorized"  # neutronclient, in nova-compute
    assert rec.count("DELETE", f"/v2.1/servers/{st.id}") == 1


# -- constructed from the API reference (what a Nova with Neutron answers) -------------------------
@pytest.mark.parametrize("client", ["apiref_lifecycle"], indirect=True)
def test_lifecycle_through_show_detail_and_delete(client: Any, clock: Clock) -> None:
    nova, rec = client
    spec = flavor_for(MIG_2)
    st = nova.boot("gpt-mig", spec, IMAGE)
    sid = _server_id(rec)
    assert (st.id, st.status, st.via) == (sid, "ACTIVE", "show")
    assert st.host == "gpuplane-fake-27901673" and st.task_state is None
    assert st.flavor and st.flavor["extra_specs"] == dict(spec.extra_specs)
    assert nova.show_unavailable is None and clock.sleeps == 1  # BUILD once, then ACTIVE
    [listed] = nova.servers()
    assert (listed.id, listed.status, listed.host) == (sid, "ACTIVE", "gpuplane-fake-27901673")
    nova.delete_server(sid)  # ACTIVE (deleting), then 404
    assert nova.state(sid) is None
    with pytest.raises(NovaNotFound) as gone:
        nova.server(sid)
    assert gone.value.code == "gpuplane.openstack.nova_not_found"
    assert f"Instance {sid} could not be found" in str(gone.value)


@pytest.mark.parametrize("client", ["apiref_no_valid_host"], indirect=True)
def test_no_valid_host_through_show_fault(client: Any) -> None:
    nova, rec = client
    with pytest.raises(ServerFailed) as err:
        nova.boot("gpt-one-too-many", flavor_for(MIG_3), IMAGE)
    assert err.value.reason == "no_valid_host" and err.value.fault == "No valid host was found. "
    nova.delete_server(err.value.server_id)  # an ERROR server deletes fine with Neutron


@pytest.mark.parametrize("client", ["apiref_lifecycle"], indirect=True)
def test_watch_times_out_with_the_last_status(client: Any, clock: Clock) -> None:
    nova, rec = client
    sid = _server_id(rec)
    with pytest.raises(WatchTimeout) as err:
        nova.wait(sid, until=("SHUTOFF",), timeout_s=1, poll_s=0.5)
    assert err.value.code == "gpuplane.openstack.server_timeout"
    assert err.value.last == "ACTIVE" and "still ACTIVE after 1 s" in str(err.value)


@pytest.mark.parametrize("client", ["apiref_flavor_changed"], indirect=True)
def test_a_flavor_changed_behind_gpuplanes_back_is_a_conflict(client: Any) -> None:
    nova, rec = client
    with pytest.raises(Conflict) as err:
        nova.ensure_flavor(flavor_for(MIG_2))
    assert err.value.code == "gpuplane.openstack.flavor_conflict"
    assert "resources_GPU1:CUSTOM_MIG_1G_10GB" in str(err.value)
    assert rec.count("POST", "/v2.1/flavors") == 0


@pytest.mark.parametrize("client", ["apiref_flavor_half_made"], indirect=True)
def test_a_half_made_flavor_gets_its_extra_specs(client: Any) -> None:
    nova, rec = client
    spec = flavor_for(MIG_2)
    assert nova.ensure_flavor(spec) == spec.id
    assert rec.count("POST", f"/v2.1/flavors/{spec.id}/os-extra_specs") == 1
    assert rec.count("POST", "/v2.1/flavors") == 1  # only the extra specs


def test_an_unreachable_nova_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    with NovaClient.connect(f"http://127.0.0.1:{port}/v2.1", timeout_s=5) as nova:
        with pytest.raises(NovaError) as err:
            nova.ensure_flavor(flavor_for(MIG_2))
    assert err.value.code == "gpuplane.openstack.nova_unreachable" and err.value.status is None
    assert "Nova cannot be reached" in str(err.value)
