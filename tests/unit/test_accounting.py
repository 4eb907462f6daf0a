"""Chargeback arithmetic (governance/accounting.py): exact examples, no store, no clock."""

from __future__ import annotations

import csv
import io
from fractions import Fraction

import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.governance import chargeback as report_mod
from gpuplane.governance import focus
from gpuplane.governance.accounting import (CostClass, CostModel, GpuShare, HostCapacity, Interval,
                                            Tenant, chargeback, cost_class, gpu_shares,
                                            lost_window_start)
from gpuplane.governance.policies import parse_policy

H = 3600
A = Tenant("org-a", "proj-a", "alice")
B = Tenant("org-b", "proj-b", "bob")
A2 = Tenant("org-a", "proj-a2", "carol")
MODEL = CostModel(currency="EUR", classes={"H100-80GB": CostClass(
    gpu_hour=2.0, power_kw_per_gpu=0.7, power_price_per_kwh=0.25, overhead_fraction=0.3,
    cpu_core_hour=0.01, memory_gib_hour=0.001)})


def host(name="h1", gpus=1, model="H100-80GB", since=0.0, cpu=64_000, mem=262_144, **kw):
    return HostCapacity(name, {i: model for i in range(gpus)}, cpu, mem, since,
                        site="eu-de-1", jurisdiction="EU/DE",
                        cost_class=cost_class({}, [model] * gpus), **kw)


def shared(index, milli):
    return GpuShare(index, Fraction(milli, 1000), "whole" if milli == 1000 else "shared")


def mig(index, profile="1g.10gb", model="H100-80GB"):
    return gpu_shares({"gpus": [index], "mig": [{"gpu_index": index, "profile": profile}]}, 0,
                      {index: model})[0]


def run(intervals, hosts, period=(0, H), **kw):
    ledger = chargeback(intervals, hosts, [period], **kw)
    lines = {line.host.name: line for line in ledger.hosts}
    return ledger, lines


def used(ledger, tenant=None, resource="gpu", kind="usage"):
    return sum((c.quantity for c in ledger.charges if c.resource == resource and c.kind == kind
                and (tenant is None or c.tenant == tenant)), Fraction(0))


def test_four_250_milli_tasks_for_an_hour_are_one_gpu_hour():
    ivs = [Interval("h1", A, 0, H, (shared(0, 250),)) for _ in range(4)]
    ledger, lines = run(ivs, [host()])
    assert used(ledger) == H
    g = lines["h1"].balances["gpu"]
    assert (g.capacity, g.charged, g.idle, g.fragmented, g.lost) == (H, H, 0, 0, 0)
    assert lines["h1"].reconciled


def test_seven_1g_mig_instances_for_an_hour_are_exactly_one_gpu_hour():
    assert mig(0).share == Fraction(1, 7) and mig(0).sharing == "mig"
    ivs = [Interval("h1", A, 0, H, (mig(0),)) for _ in range(7)]
    ledger, lines = run(ivs, [host()])
    assert used(ledger) == H
    assert lines["h1"].balances["gpu"].idle == 0


def test_a_3g_instance_leaves_four_sevenths_idle_and_fragmented():
    ledger, lines = run([Interval("h1", A, 0, H, (mig(0, "3g.40gb"),))], [host(gpus=2)])
    g = lines["h1"].balances["gpu"]
    assert g.charged == Fraction(3, 7) * H
    assert g.idle == (2 - Fraction(3, 7)) * H and g.fragmented == Fraction(4, 7) * H
    assert g.charged + g.idle == g.capacity == 2 * H


def test_a_preempted_attempts_lost_tail_is_its_own_column_and_not_charged():
    start = lost_window_start(0, H, lost_gpu_s=2 * 1200, gpu_milli=2000)
    assert start == H - 1200
    iv = Interval("h1", A, 0, H, (shared(0, 1000), shared(1, 1000)), cpu_milli=4000,
                  memory_mib=8192, lost_from=start)
    ledger, lines = run([iv], [host(gpus=2)], model=MODEL)
    assert used(ledger, A) == 2 * (H - 1200)
    assert used(ledger, A, kind="lost") == 2 * 1200
    assert used(ledger, A, "cpu", "lost") == 4 * 1200
    g = lines["h1"].balances["gpu"]
    assert (g.charged, g.lost, g.idle) == (2 * (H - 1200), 2 * 1200, 0)
    (row,) = report_mod.group(ledger, "project", None)
    assert row["gpu_hours"] == pytest.approx(2 * 2400 / H)
    assert row["lost_gpu_hours"] == pytest.approx(2 * 1200 / H)
    price = MODEL.classes["H100-80GB"].prices()
    assert row["usage_cost"] == pytest.approx(float(
        price["gpu"] * 2 * 2400 / H + price["cpu"] * 4 * 2400 / H + price["memory"] * 8 * 2400 / H))
    assert row["lost_cost"] > 0 and row["cost"] == row["usage_cost"]


def test_idle_on_a_partly_used_gpu_is_fragmented_and_a_subset_of_idle():
    _, lines = run([Interval("h1", A, 0, H, (shared(1, 250),))], [host(gpus=2)])
    g = lines["h1"].balances["gpu"]
    assert g.idle == Fraction(7, 4) * H and g.fragmented == Fraction(3, 4) * H


@pytest.mark.parametrize("mode,a,b", [
    ("off", 0, 0),
    ("uniform", Fraction(3, 8), Fraction(3, 8)),
    ("proportional", Fraction(3, 5), Fraction(3, 20))],
    ids=["off leaves idle with the operator", "uniform gives each tenant the same",
         "proportional follows each tenant's charged use"])
def test_spreading_idle_keeps_the_reconciliation(mode, a, b):
    ivs = [Interval("h1", A, 0, H, (shared(0, 1000),)), Interval("h1", B, 0, H, (shared(1, 250),))]
    ledger, lines = run(ivs, [host(gpus=2, cpu=0, mem=0)], spread=mode)
    assert used(ledger, A, kind="idle_spread") == a * H
    assert used(ledger, B, kind="idle_spread") == b * H
    g = lines["h1"].balances["gpu"]
    assert g.idle == Fraction(3, 4) * H and g.idle_spread == (a + b) * H
    assert g.charged + g.idle_spread + g.idle_remaining + g.lost == g.capacity
    assert used(ledger, None, kind="idle") == g.idle_remaining


def test_idle_of_a_host_nobody_used_stays_with_the_operator():
    ivs = [Interval("h1", A, 0, H, (shared(0, 1000),))]
    ledger, lines = run(ivs, [host(), host("h2", gpus=4)], spread="uniform")
    assert lines["h2"].balances["gpu"].idle_remaining == 4 * H
    assert used(ledger, A, kind="idle_spread") == 0


def test_price_per_gpu_hour_is_capital_plus_power_times_overhead():
    prices = MODEL.classes["H100-80GB"].prices()
    assert prices["gpu"] == (Fraction("2.0") + Fraction("0.7") * Fraction("0.25")) * Fraction("1.3")
    assert prices["gpu"] == Fraction("2.8275")
    ledger, lines = run([Interval("h1", A, 0, H, (shared(0, 1000),))], [host()], model=MODEL)
    (row,) = report_mod.group(ledger, "org", None)
    assert row["usage_cost"] == 2.8275 and row["currency"] == "EUR"
    assert not ledger.warnings


def test_a_class_without_a_price_costs_nothing_and_warns():
    ledger, _ = run([Interval("h1", A, 0, H, (shared(0, 1000),))], [host(model="L40S")],
                    model=MODEL)
    assert report_mod.group(ledger, "org", None)[0]["cost"] == 0
    assert any("no class 'L40S'" in w for w in ledger.warnings)
    assert any("no cost-model" in w for w in run([], [host()])[0].warnings)


def test_a_deleted_host_is_still_charged_and_named_unknown():
    ledger, lines = run([Interval("gone", A, 0, H, (shared(0, 1000),), cpu_milli=1000,
                                  gpu_model="H100-80GB")], [], model=MODEL)
    assert used(ledger, A) == H and not lines["gone"].known and lines["gone"].reconciled
    assert lines["gone"].host.cost_class == "H100-80GB"
    assert report_mod.group(ledger, "org", None)[0]["usage_cost"] > 2.8275
    assert any("unknown host 'gone'" in w for w in ledger.warnings)


def test_capacity_counts_from_the_hosts_registration_and_earlier_use_is_overcommitted():
    _, lines = run([Interval("h1", A, 0, H, (shared(0, 1000),))], [host(since=H / 2)])
    g = lines["h1"].balances["gpu"]
    assert g.capacity == H / 2 and g.overcommitted == H / 2 and g.idle == 0
    assert lines["h1"].reconciled


def test_usage_without_a_placement_takes_unfragmented_idle_first():
    assert gpu_shares(None, 2000, {}) == (GpuShare(None, Fraction(2), "whole"),)
    ivs = [Interval("h1", A, 0, H, gpu_shares(None, 1000, {})),
           Interval("h1", B, 0, H, (shared(0, 500),))]
    _, lines = run(ivs, [host(gpus=2)])
    g = lines["h1"].balances["gpu"]
    assert g.idle == H / 2 and g.fragmented == H / 2 and lines["h1"].reconciled


def test_grouping_sums_the_same_charges_and_visibility_hides_other_tenants():
    ivs = [Interval("h1", A, 0, H, (shared(0, 1000),)), Interval("h1", A2, 0, H, (shared(1, 500),)),
           Interval("h1", B, 0, H, (shared(2, 250),))]
    ledger, _ = run(ivs, [host(gpus=4)], spread="uniform", model=MODEL)
    by_org = {r["org"]: r for r in report_mod.group(ledger, "org", None)}
    by_project = report_mod.group(ledger, "project", None)
    assert by_org["org-a"]["gpu_hours"] == 1.5
    assert sum(r["cost"] for r in by_project) == pytest.approx(
        sum(r["cost"] for r in by_org.values()))
    users = report_mod.group(ledger, "user", {"proj-b"})
    assert [(r["user"], r["org"], r["project"]) for r in users] == [("bob", None, None)]
    body = report_mod.report(ledger, "project", "uniform", (0, H), H, {"proj-b"}, False)
    assert body["hosts"] is None and "proj-a" not in str(body["rows"])


def test_focus_rows_add_up_to_capacity_at_list_price():
    ivs = [Interval("h1", A, 0, H, (mig(0, "3g.40gb"),), cpu_milli=2000, memory_mib=1024,
                    lost_from=H - 600),
           Interval("h1", B, 0, H, (shared(1, 250),))]
    ledger, lines = run(ivs, [host(gpus=2)], spread="proportional", model=MODEL)
    text = focus.focus_csv(ledger, (0, 2 * H), "proportional", None, True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == focus.COLUMNS
    gpu = [r for r in rows if r["ResourceType"] == "GPU"]
    price = MODEL.classes["H100-80GB"].prices()["gpu"]
    assert sum(Fraction(r["ListCost"]) for r in gpu) == pytest.approx(float(2 * price), abs=1e-5)
    kinds = {r["x_ChargeKind"] for r in gpu}
    assert kinds == {"usage", "idle_spread", "lost"}
    assert {r["x_GpuFraction"] for r in gpu if r["x_ChargeKind"] == "usage"} == {"3/7", "1/4"}
    lost = [r for r in rows if r["x_ChargeKind"] == "lost"]
    assert lost and all(r["BilledCost"] == "0" and float(r["ListCost"]) > 0 for r in lost)
    assert rows[0]["BillingPeriodEnd"] == "1970-01-01T02:00:00Z"
    assert rows[0]["ChargePeriodEnd"] == "1970-01-01T01:00:00Z"
    assert {r["SubAccountName"] for r in rows} <= {"proj-a", "proj-b", ""}
    tenant = list(csv.DictReader(io.StringIO(
        focus.focus_csv(ledger, (0, H), "proportional", {"proj-b"}, False))))
    assert {r["SubAccountName"] for r in tenant} == {"proj-b"}


def test_the_cost_model_is_a_policy_that_names_bad_fields():
    parsed = parse_policy("cost-model", {"currency": "CHF", "classes": {"A100-80GB": {
        "gpu_hour": 1.5}}})
    assert parsed.currency == "CHF"
    with pytest.raises(InvalidInput) as err:
        parse_policy("cost-model", {"currency": "euro", "classes": {"x": {"gpu_hour": -1,
                                                                          "colour": 1}}})
    locs = {e.loc for e in err.value.errors}
    assert locs == {"currency", "classes.x.gpu_hour", "classes.x.colour"}


def test_cost_class_comes_from_the_label_then_the_gpu_model():
    assert cost_class({"gpuplane.io/cost-class": "gold"}, ["H100-80GB"]) == "gold"
    assert cost_class({}, ["H100-80GB"]) == "H100-80GB"
    assert cost_class({}, []) == "cpu-only"


def test_an_unknown_spread_mode_is_refused():
    with pytest.raises(ValueError, match="uniform"):
        chargeback([], [], [(0, 1)], spread="even")
