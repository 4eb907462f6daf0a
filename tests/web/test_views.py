"""The console's fleet view is shared by every stream and recomputed only when its
fingerprint moves: it must move with every change the view shows (host state, a task taking
or leaving GPUs, a host's GPUs replaced)."""

from __future__ import annotations

from api.conftest import build_world
from gpuplane.control.loop import ControlLoop
from gpuplane.drivers.sim import SimDriver
from gpuplane.web import views


def test_the_fleet_view_follows_every_change_and_is_shared_while_nothing_changes(tmp_path):
    world = build_world(f"sqlite:///{tmp_path / 'gpuplane.db'}", tmp_path)
    c, admin = world.client, world.h("admin")
    svc = c.app.state.services
    who = svc.auth.authenticate(world.tokens["admin"])
    first = views.fleet(svc, who)
    assert views.fleet(svc, who) is first  # unchanged: the same view, not read again
    assert all(g["allocated"] == 0 for g in first["hosts"][0]["gpus"])

    # a task takes a GPU (job-alpha asks for 1): the view moves
    loop = ControlLoop(c.app.state.store, {"sim": SimDriver(tmp_path / "sim")}, holder="t",
                       lease_ttl_s=60)
    loop.tick()
    placed = views.fleet(svc, who)
    assert placed is not first
    assert sum(g["allocated"] for g in placed["hosts"][0]["gpus"]) == 1.0

    # the host is cordoned
    assert c.put("/v1/hosts/gpu-1/state", headers=admin,
                 json={"state": "cordoned"}).status_code == 200
    cordoned = views.fleet(svc, who)
    assert cordoned["hosts"][0]["state"] == "cordoned"

    # the workload is cancelled: its task leaves the GPU
    assert c.post(f"/v1/workloads/{world.ids['workload']}/cancel",
                  headers=admin).status_code in (200, 202)
    for _ in range(3):
        loop.tick()
    assert sum(g["allocated"] for g in views.fleet(svc, who)["hosts"][0]["gpus"]) == 0
    loop.release()

    # the host's GPUs are replaced (4 instead of 8)
    r = c.put("/v1/hosts/gpu-1", headers=admin, json={
        "name": "gpu-1", "site": "eu-de-1", "cpu": 64, "memory": "512Gi",
        "gpus": [{"index": i, "model": "H100-80GB", "memory_mib": 81920} for i in range(4)]})
    assert r.status_code == 200, r.text
    assert len(views.fleet(svc, who)["hosts"][0]["gpus"]) == 4
    world.client.close()
    c.app.state.store.dispose()
