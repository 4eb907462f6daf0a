"""GET /v1/usage/chargeback through the real app: who sees what, the CSV and FOCUS exports, and
input errors as problems naming the field. Usage records are written to the store directly (the
control loop is not running here): tenant A (proj-alpha) ran a whole GPU for an hour and a
preempted attempt that lost 15 minutes; tenant B (proj-beta) four 250-milli tasks for an hour."""

from __future__ import annotations

import csv
import io

import pytest

from gpuplane.governance import focus
from gpuplane.governance.chargeback import ROW_FIELDS
from gpuplane.store.records import UsageRecord

from functional.dbs import FakeClock, database_params, make_db_url

from .conftest import build_world

T0 = 1_800_000_000.0
H = 3600.0
COST_MODEL = {"currency": "EUR", "classes": {"H100-80GB": {
    "gpu_hour": 2.0, "power_kw_per_gpu": 0.7, "power_price_per_kwh": 0.25,
    "overhead_fraction": 0.3}}}


def _whole(i):
    return {"gpus": [i], "gpu_milli": 1000, "mig": []}


def seed(world) -> None:
    store = world.client.app.state.store
    with store.write() as tx:
        alpha, beta = tx.projects.get("proj-alpha").id, tx.projects.get("proj-beta").id
        beta_uid = tx.workloads.find(beta, "job-beta").id
        alpha_uid = world.ids["workload"]
        recs = [UsageRecord(alpha, alpha_uid, 0, 1, "gpu-1", "H100-80GB", True, 1000, 4000,
                            16384, T0, T0 + H, "Succeeded", placement=_whole(0)),
                UsageRecord(alpha, alpha_uid, 0, 2, "gpu-1", "H100-80GB", True, 1000, 0, 0,
                            T0, T0 + H, "Preempted", lost_gpu_s=900.0, placement=_whole(1))]
        recs += [UsageRecord(beta, beta_uid, i, 1, "gpu-1", "H100-80GB", True, 250, 0, 0, T0,
                             T0 + H, "Succeeded",
                             placement={"gpus": [2], "gpu_milli": 250, "mig": []})
                 for i in range(4)]
        for r in recs:
            tx.usage.add(r)


@pytest.fixture(params=database_params())
def world(request, tmp_path):
    for url in make_db_url(request.param, tmp_path):
        clock = FakeClock(T0)
        w = build_world(url, tmp_path, clock=clock)
        seed(w)
        clock.advance(2 * H)
        yield w
        w.client.close()
        w.client.app.state.store.dispose()


def get(world, user, **params):
    return world.client.get("/v1/usage/chargeback", headers=world.h(user),
                            params={"since": T0, "until": T0 + 2 * H, **params})


def test_the_admin_sees_every_project_and_each_host_reconciles(world):
    r = world.client.put("/v1/policies/cost-model", headers=world.h("admin"), json=COST_MODEL)
    assert r.status_code == 200, r.text
    body = get(world, "admin").json()
    rows = {row["project"]: row for row in body["rows"]}
    assert set(rows) == {"proj-alpha", "proj-beta"}
    assert rows["proj-alpha"]["gpu_hours"] == 1.75 and rows["proj-alpha"]["lost_gpu_hours"] == 0.25
    alpha = rows["proj-alpha"]
    assert alpha["cpu_core_hours"] == 4 and alpha["memory_gib_hours"] == 16
    assert rows["proj-beta"]["gpu_hours"] == rows["proj-beta"]["gpu_hours_shared"] == 1.0
    assert rows["proj-beta"]["cost"] == 2.8275 and body["currency"] == "EUR"
    (host,) = body["hosts"]
    gpu = host["gpu"]
    assert host["reconciled"] and host["cost_class"] == "H100-80GB"
    assert (gpu["capacity"], gpu["charged"], gpu["lost"]) == (16, 2.75, 0.25)
    assert gpu["idle"] == 13 and gpu["fragmented"] == 0
    assert gpu["exact_seconds"]["capacity"] == str(int(16 * H))
    assert body["totals"]["gpu_hours"] == 2.75 and not body["warnings"]


@pytest.mark.parametrize("user,mine,other", [
    ("bob-beta", "proj-beta", "alpha"), ("alice-alpha", "proj-alpha", "beta"),
    ("audrey-alpha", "proj-alpha", "beta")],
    ids=["tenant B sees only B", "a member of A sees only A", "an org auditor is no global "
                                                              "viewer"])
def test_a_tenant_sees_only_its_own_rows_and_no_host_lines(world, user, mine, other):
    for by in ("org", "project", "user"):
        r = get(world, user, by=by, spread="uniform")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["hosts"] is None and body["rows"]
        assert other not in r.text.replace("eu-de-1", ""), r.text
        if by == "project":
            assert {row["project"] for row in body["rows"]} == {mine}
    for fmt in ("csv", "focus"):
        r = get(world, user, format=fmt)
        assert other not in r.text, r.text


def test_spreading_gives_the_tenants_the_idle_of_their_host(world):
    off = get(world, "admin", by="user").json()
    uniform = get(world, "admin", by="user", spread="uniform").json()
    users = {row["user"]: row for row in uniform["rows"]}
    assert set(users) == {"alice-alpha", "bob-beta"}
    assert users["alice-alpha"]["idle_gpu_hours"] == users["bob-beta"]["idle_gpu_hours"] == 6.5
    gpu = uniform["hosts"][0]["gpu"]
    assert gpu["idle_spread"] == 13 and gpu["idle_remaining"] == 0
    assert off["hosts"][0]["gpu"]["idle_spread"] == 0


def test_csv_and_focus_exports_parse_with_their_headers(world):
    r = get(world, "admin", format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert tuple(rows[0]) == ROW_FIELDS
    assert {row["project"] for row in rows} == {"proj-alpha", "proj-beta"}
    r = get(world, "bob-beta", format="focus")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert tuple(rows[0]) == focus.COLUMNS
    assert {row["SubAccountName"] for row in rows} == {"proj-beta"}
    assert {row["x_GpuFraction"] for row in rows} == {"1/4"}
    assert rows[0]["ChargeCategory"] == "Usage" and rows[0]["RegionId"] == "eu-de-1"
    assert sum(float(row["ConsumedQuantity"]) for row in rows) == pytest.approx(1.0)
    admin = list(csv.DictReader(io.StringIO(get(world, "admin", format="focus").text)))
    assert {row["x_ChargeKind"] for row in admin} == {"usage", "lost", "idle"}


@pytest.mark.parametrize("params,field", [
    ({"by": "team"}, "query.by"), ({"since": "yesterday"}, "query.since"),
    ({"until": "2026-13-01"}, "query.until"), ({"since": T0 + H, "until": T0}, "query.since"),
    ({"spread": "even"}, "query.spread"), ({"format": "xlsx"}, "query.format"),
    ({"since": -5}, "query.since"), ({"since": T0 + 9 * H}, "query.since")],
    ids=["an unknown grouping", "a since that is no time", "an impossible date",
         "since after until", "an unknown spread", "an unknown format", "a negative time",
         "since after the default until (now)"])
def test_bad_input_is_a_422_problem_naming_the_field(world, params, field):
    r = get(world, "admin", **params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in {e["loc"] for e in r.json()["errors"]}, r.text


def test_iso_times_and_defaults(world):
    r = world.client.get("/v1/usage/chargeback", headers=world.h("admin"), params={
        "since": "2027-01-15T08:00:00Z", "until": "2027-01-15T10:00"})
    assert r.status_code == 200, r.text
    assert r.json()["period"]["start"] == T0 and r.json()["period"]["requested_end"] == T0 + 2 * H
    default = world.client.get("/v1/usage/chargeback", headers=world.h("admin")).json()
    assert default["period"]["start"] <= T0 and default["period"]["end"] == T0 + 2 * H


def test_a_running_task_is_charged_up_to_now_and_capacity_stops_there(world):
    from gpuplane.domain.workloads import TaskPlacement
    from gpuplane.service import lifecycle

    app = world.client.app
    clock, store = app.state.services.clock, app.state.store
    with store.write() as tx:
        wl = tx.workloads.get(world.ids["workload"])
        gen = tx.hosts.get("gpu-1").generation
        wl = lifecycle.admit_workload(tx, wl, {0: TaskPlacement("gpu-1", (3,), 1000)}, clock(),
                                      {"gpu-1": gen})
        t = wl.tasks[0]
        lifecycle.mark_task_running(tx, t.id, t.generation, clock(), {"pid": 1})
    clock.advance(H / 2)
    body = get(world, "admin", until=T0 + 3 * H).json()
    assert body["period"]["end"] == T0 + 2.5 * H
    rows = {row["project"]: row for row in body["rows"]}
    assert rows["proj-alpha"]["gpu_hours_whole"] == 2.25
    assert body["hosts"][0]["gpu"]["capacity"] == 20 and body["hosts"][0]["reconciled"]
