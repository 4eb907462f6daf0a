"""Chargeback adds up: on random hosts (whole, MIG and shared GPUs) with random task intervals
that never over-allocate, over random periods and spread modes, for every host, resource and
period exactly: charged + idle_spread + idle_remaining + lost == capacity x time; fragmented is
part of idle; what the tenants are charged is what the host line says."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from gpuplane.governance.accounting import (SPREAD, HostCapacity, Interval, Tenant, chargeback,
                                            gpu_shares)

TENANTS = [Tenant("org-a", "proj-a", "alice"), Tenant("org-a", "proj-a2", "ann"),
           Tenant("org-b", "proj-b", "bob")]
MIG_SLICES = {"1g.10gb": 1, "1g.20gb": 1, "2g.20gb": 2, "3g.40gb": 3, "4g.40gb": 4, "7g.80gb": 7}
TIME = st.floats(0, 10_000, allow_nan=False, allow_infinity=False)


@st.composite
def lanes(draw, mode: str) -> list[dict]:
    """Shares of one GPU that may be held at the same time (never more than the GPU)."""
    if mode == "whole":
        return [{"gpu_milli": 1000}]
    if mode == "shared":
        millis = draw(st.lists(st.integers(1, 1000), min_size=1, max_size=5))
        out, left = [], 1000
        for m in millis:
            if m <= left:
                out.append({"gpu_milli": m})
                left -= m
        return out or [{"gpu_milli": 1000}]
    profiles = draw(st.lists(st.sampled_from(sorted(MIG_SLICES)), min_size=1, max_size=7))
    out, left = [], 7
    for p in profiles:
        if MIG_SLICES[p] <= left:
            out.append({"profile": p})
            left -= MIG_SLICES[p]
    return out


@st.composite
def world(draw):
    hosts, intervals = [], []
    for h in range(draw(st.integers(1, 3))):
        name, since = f"h{h}", draw(TIME)
        modes = draw(st.lists(st.sampled_from(["whole", "mig", "shared"]), min_size=0,
                              max_size=4))
        n_lanes = 0
        for index, mode in enumerate(modes):
            for lane in draw(lanes(mode)):
                n_lanes += 1
                times = sorted(set(draw(st.lists(st.floats(since, since + 10_000,
                                                           allow_nan=False), max_size=6))))
                for start, end in zip(times[::2], times[1::2]):
                    if "profile" in lane:
                        placement = {"gpus": [index], "gpu_milli": 1000,
                                     "mig": [{"gpu_index": index, "profile": lane["profile"]}]}
                    else:
                        placement = {"gpus": [index], "gpu_milli": lane["gpu_milli"], "mig": []}
                    lost_from = draw(st.none() | st.floats(start, end))
                    intervals.append(Interval(
                        name, draw(st.sampled_from(TENANTS)), start, end,
                        gpu_shares(placement, 0, {i: "H100-80GB" for i in range(len(modes))}),
                        cpu_milli=draw(st.integers(0, 1000)),
                        memory_mib=draw(st.integers(0, 1024)), lost_from=lost_from))
        # a CPU-only lane too, so CPU and memory are used on GPU-less hosts as well
        times = sorted(set(draw(st.lists(st.floats(since, since + 10_000), max_size=4))))
        for start, end in zip(times[::2], times[1::2]):
            intervals.append(Interval(name, draw(st.sampled_from(TENANTS)), start, end,
                                      cpu_milli=1000, memory_mib=1024))
        hosts.append(HostCapacity(name, {i: "H100-80GB" for i in range(len(modes))},
                                  1000 * (n_lanes + 1), 1024 * (n_lanes + 1), since))
    periods = []
    for _ in range(draw(st.integers(1, 3))):
        a, b = draw(TIME), draw(TIME)
        if a != b and (min(a, b) - 50, max(a, b) + 50) not in periods:
            periods.append((min(a, b) - 50, max(a, b) + 50))  # may overlap; each adds up
    return hosts, intervals, periods or [(0.0, 20_000.0)]


def _clip(a, b, p0, p1) -> Fraction:
    return max(Fraction(0), min(Fraction(b), Fraction(p1)) - max(Fraction(a), Fraction(p0)))


@settings(max_examples=80, deadline=None)
@given(world(), st.sampled_from(SPREAD))
def test_every_host_and_period_reconciles_exactly(w, spread):
    hosts, intervals, periods = w
    ledger = chargeback(intervals, hosts, periods, spread=spread)
    by_host = {h.name: h for h in hosts}
    for line in ledger.hosts:
        h = by_host[line.host.name]
        p0, p1 = line.period
        exists = _clip(h.since, p1, p0, p1)
        mine = [c for c in ledger.charges if c.host == h.name and c.period == line.period]
        for res, per_unit in (("gpu", len(h.gpus)), ("cpu", Fraction(h.cpu_milli, 1000)),
                              ("memory", Fraction(h.memory_mib, 1024))):
            b = line.balances[res]
            assert b.capacity == per_unit * exists
            assert b.overcommitted == 0
            assert b.charged + b.idle_spread + b.idle_remaining + b.lost == b.capacity
            assert 0 <= b.fragmented <= b.idle and 0 <= b.idle_spread <= b.idle
            if res != "gpu":
                assert b.fragmented == 0

            def total(kind, res=res):
                return sum((c.quantity for c in mine if c.resource == res and c.kind == kind),
                           Fraction(0))
            assert (total("usage"), total("lost")) == (b.charged, b.lost)
            assert (total("idle_spread"), total("idle")) == (b.idle_spread, b.idle_remaining)
            if spread == "off":
                assert b.idle_spread == 0
            elif spread == "uniform" and any(c.kind == "usage" for c in mine):
                assert b.idle_remaining == 0
            elif spread == "proportional" and b.charged:
                assert b.idle_remaining == 0
        # charged + lost GPU-time is each task's exact share over its clipped interval
        expect = sum((g.share * _clip(iv.start, iv.end, p0, p1)
                      for iv in intervals if iv.host == h.name for g in iv.gpus), Fraction(0))
        assert line.balances["gpu"].charged + line.balances["gpu"].lost == expect
        assert line.reconciled
