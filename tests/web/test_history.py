"""The history behind the console's charts (api/history.py): what a sample counts, the ring
buffer's bound, ``after``/``reset``, per-tenant cut over REST and on the stream (a tenant sees
the pool and its own projects only), and no history where the console is not served."""

from __future__ import annotations

import pytest

from api.conftest import build_world
from gpuplane.api.history import History
from gpuplane.control.loop import ControlLoop
from gpuplane.drivers.sim import SimDriver

from .conftest import history_served, read_events


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """build_world's tenants, both running a GPU job on gpu-1 (8 H100), one beta job waiting."""
    tmp = tmp_path_factory.mktemp("history")
    world = build_world(f"sqlite:///{tmp / 'gpuplane.db'}", tmp)
    c, admin = world.client, world.h("admin")
    assert c.put("/v1/quotas", headers=admin, json={
        "project": "proj-beta", "resource": "gpu", "guaranteed": 2}).status_code == 200
    for name, gpus in (("beta-gpu", 2), ("beta-wait", 4)):
        r = c.post("/v1/workloads", headers=world.h("bob-beta"), json={
            "name": name, "project": "proj-beta",
            "tasks": [{"command": ["true"], "resources": {"gpus": gpus}}]})
        assert r.status_code == 201, r.text
    store = c.app.state.store
    loop = ControlLoop(store, {"sim": SimDriver(tmp / "sim")}, holder="t", lease_ttl_s=60)
    for _ in range(3):
        loop.tick()
    loop.release()
    yield world
    world.client.close()
    store.dispose()


def test_a_sample_counts_the_pool_and_the_buffer_is_bounded(pool):
    h = History(pool.client.app.state.store, interval_s=5, points=3)
    for _ in range(5):
        s = h.sample()
    assert s is not None and s.seq == 5
    assert (s.capacity, s.schedulable, s.allocated) == (8, 8, 3)
    assert s.tenants == {"proj-alpha": 1.0, "proj-beta": 2.0}
    assert s.queue == 1 and s.fragmented >= 0 and s.free_partial == 0
    assert [x.seq for x in h.since(0)] == [3, 4, 5]      # three kept
    full = h.view(None)
    assert full["reset"] and full["last_seq"] == 5 and len(full["samples"]) == 3
    assert full["interval_s"] == 5 and full["max_points"] == 3
    newer = h.view(None, after=4)
    assert not newer["reset"] and [x["seq"] for x in newer["samples"]] == [5]
    assert h.view(None, after=1)["reset"]                # 2 was dropped: start again
    assert h.view(None, after=5) == {**newer, "samples": [], "last_seq": 5}
    assert h.view({"proj-alpha"})["samples"][-1]["tenants"] == {"proj-alpha": 1.0}


def test_history_over_rest_and_stream_cut_per_tenant(pool):
    app = pool.client.app
    with history_served(app) as c:
        every = c.get("/v1/history", headers=pool.h("admin")).json()
        assert every["samples"], every
        assert set(every["samples"][-1]["tenants"]) == {"proj-alpha", "proj-beta"}
        bob = c.get("/v1/history", headers=pool.h("bob-beta")).json()
        assert set(bob["samples"][-1]["tenants"]) == {"proj-beta"}
        assert bob["samples"][-1]["allocated"] == 3  # the pool, as on /metrics
        later = c.get("/v1/history", headers=pool.h("bob-beta"),
                      params={"after": bob["last_seq"]}).json()
        assert all(x["seq"] > bob["last_seq"] for x in later["samples"])
        assert c.get("/v1/history").status_code == 401

        ticket = c.post("/v1/stream/tickets", headers=pool.h("alice-alpha")).json()["ticket"]
        with c.stream("GET", "/v1/stream", params={"ticket": ticket}) as r:
            events = read_events(r, lambda ev: sum(
                e["event"] == "history" and bool(e["data"]["samples"]) for e in ev) >= 2)
        hist = [e["data"] for e in events if e["event"] == "history" and e["data"]["samples"]]
        assert len(hist) >= 2, [e["event"] for e in events]
        assert hist[0]["reset"] and not hist[1]["reset"]
        assert hist[1]["samples"][0]["seq"] > hist[0]["samples"][-1]["seq"]
        for view in hist:
            for sample in view["samples"]:
                assert set(sample["tenants"]) <= {"proj-alpha"}


def test_no_history_where_the_console_is_not_served(pool):
    r = pool.client.get("/v1/history", headers=pool.h("admin"))
    assert r.status_code == 404 and r.json()["code"] == "gpuplane.history.not_kept"
