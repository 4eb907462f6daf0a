"""The chargeback report (no I/O): a ``Ledger`` from ``accounting.chargeback`` grouped by org,
project or user, filtered to what the caller may see, with the per-host reconciliation for
global viewers. Hours and costs are exact until they are printed (9 and 6 decimals).

Visibility. ``visible`` (project names, None = all) filters every tenant line: a tenant sees its
own projects' usage, the idle spread onto them and their own lost time, and nothing that names
another tenant. Host lines (capacity, idle, fragmented, lost, overcommitted per host) and the
operator's remaining idle are shown only when ``global_view``.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from gpuplane.governance.accounting import (BY, HOUR, RESOURCES, SHARING, Balance, Charge,
                                            HostLine, Ledger)

UNITS = {"gpu": "GPU-hours", "cpu": "core-hours", "memory": "GiB-hours"}
ROW_FIELDS = ("period_start", "period_end", "org", "project", "user", "simulated",
              "gpu_hours", "gpu_hours_whole", "gpu_hours_mig", "gpu_hours_shared",
              "cpu_core_hours", "memory_gib_hours", "idle_gpu_hours", "idle_cpu_core_hours",
              "idle_memory_gib_hours", "lost_gpu_hours", "usage_cost", "idle_cost", "cost",
              "lost_cost", "currency")


MAX_EPOCH = 1e11


def parse_instant(value: object) -> float | None:
    """Seconds since the epoch from a number, a numeric string or ISO 8601 (``2026-01-31``,
    ``2026-01-31T12:00:00Z``; no zone means UTC). Raises ValueError saying what is accepted."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            t = float(value)
        else:
            text = str(value).strip()
            try:
                t = float(text)
            except ValueError:
                d = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
                t = (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"{str(value)[:40]!r} is not a time: give ISO 8601 "
                         "(2026-01-31T00:00:00Z) or seconds since the epoch") from None
    if not 0 <= t <= MAX_EPOCH:
        raise ValueError(f"{t:g} is out of range: between 0 and {MAX_EPOCH:g} seconds since "
                         "the epoch (1970 to 5138)")
    return t


def hours(q: Fraction) -> float:
    return float(round(q / HOUR, 9))


def money(q: Fraction) -> float:
    return float(round(q, 6))


def decimal_str(q: Fraction, places: int) -> str:
    """``q`` rounded to ``places`` decimals, without trailing zeros (``"0.142857143"``)."""
    r = round(q, places)
    s = f"{Decimal(r.numerator) / Decimal(r.denominator):.{places}f}"
    return (s.rstrip("0").rstrip(".") or "0") if "." in s else s


def visible_charge(c: Charge, visible: Collection[str] | None, global_view: bool) -> bool:
    if c.tenant is None:
        return global_view
    return visible is None or c.tenant.project in visible


def _key(c: Charge, by: str) -> tuple:
    t = c.tenant
    assert t is not None
    name = {"org": (t.org, None, None), "project": (t.org, t.project, None),
            "user": (None, None, t.user)}[by]
    return (c.period, *name, c.simulated)


def group(ledger: Ledger, by: str, visible: Collection[str] | None) -> list[dict[str, Any]]:
    """One row per (period, org | project | user, simulated) of the visible tenant charges."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}, not {by!r}")
    acc: dict[tuple, dict[str, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    for c in ledger.charges:
        if c.tenant is None or not visible_charge(c, visible, False):
            continue
        a = acc[_key(c, by)]
        a[f"{c.kind}:{c.resource}:{c.sharing}"] += c.quantity
        a[f"cost:{c.kind}"] += c.value
    rows = []
    for key in sorted(acc, key=lambda k: tuple("" if v is None else str(v) for v in k)):
        rows.append(_row(key, acc[key], ledger.currency))
    return rows


def _row(key: tuple, a: dict[str, Fraction], currency: str) -> dict[str, Any]:
    (p0, p1), org, project, user, simulated = key

    def q(kind: str, res: str, sharing: str = "") -> Fraction:
        return a.get(f"{kind}:{res}:{sharing}", Fraction(0))

    gpu = {s: q("usage", "gpu", s) for s in SHARING}
    usage_cost, idle_cost = a.get("cost:usage", Fraction(0)), a.get("cost:idle_spread", Fraction(0))
    return {"period_start": p0, "period_end": p1, "org": org, "project": project, "user": user,
            "simulated": simulated, "gpu_hours": hours(sum(gpu.values(), Fraction(0))),
            **{f"gpu_hours_{s}": hours(v) for s, v in gpu.items()},
            "cpu_core_hours": hours(q("usage", "cpu")),
            "memory_gib_hours": hours(q("usage", "memory")),
            "idle_gpu_hours": hours(q("idle_spread", "gpu")),
            "idle_cpu_core_hours": hours(q("idle_spread", "cpu")),
            "idle_memory_gib_hours": hours(q("idle_spread", "memory")),
            "lost_gpu_hours": hours(sum((q("lost", "gpu", s) for s in SHARING), Fraction(0))),
            "usage_cost": money(usage_cost), "idle_cost": money(idle_cost),
            "cost": money(usage_cost + idle_cost),
            "lost_cost": money(a.get("cost:lost", Fraction(0))), "currency": currency}


def _block(b: Balance) -> dict[str, Any]:
    parts = {"capacity": b.capacity, "charged": b.charged, "idle": b.idle,
             "idle_spread": b.idle_spread, "idle_remaining": b.idle_remaining,
             "fragmented": b.fragmented, "lost": b.lost, "overcommitted": b.overcommitted}
    return {**{k: hours(v) for k, v in parts.items()},
            "exact_seconds": {k: str(v) for k, v in parts.items()}}


def host_line(line: HostLine) -> dict[str, Any]:
    """Capacity, charged, idle (spread and remaining), fragmented, lost and overcommitted per
    resource, in hours (exact seconds alongside), and their cost."""
    h, p = line.host, line.prices

    def cost(part: str) -> float:
        return money(sum((getattr(line.balances[r], part) * p[r] / HOUR for r in RESOURCES),
                         Fraction(0)))
    return {"host": h.name, "known": line.known, "site": h.site, "jurisdiction": h.jurisdiction,
            "cost_class": h.cost_class, "simulated": h.simulated, "gpus": len(h.gpus),
            "period_start": line.period[0], "period_end": line.period[1],
            "units": UNITS, **{r: _block(line.balances[r]) for r in RESOURCES},
            "cost": {part: cost(part) for part in ("capacity", "charged", "idle_spread",
                                                   "idle_remaining", "lost", "overcommitted")},
            "reconciled": line.reconciled}


def report(ledger: Ledger, by: str, spread: str, period: tuple[float, float],
           requested_end: float, visible: Collection[str] | None,
           global_view: bool) -> dict[str, Any]:
    """The JSON body of ``GET /v1/usage/chargeback``."""
    rows = group(ledger, by, visible)
    totals: dict[str, Any] = {}
    for f in ROW_FIELDS[6:-1]:
        totals[f] = round(sum(r[f] for r in rows), 9 if "hours" in f else 6)
    return {"by": by, "spread": spread, "currency": ledger.currency,
            "period": {"start": period[0], "end": period[1], "requested_end": requested_end},
            "rows": rows, "totals": totals,
            "hosts": [host_line(h) for h in ledger.hosts] if global_view else None,
            "warnings": list(ledger.warnings)}


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """The grouped rows as CSV (``-o csv``): one header line, then ``ROW_FIELDS`` per row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ROW_FIELDS)
    for r in rows:
        w.writerow(["" if r[f] is None else r[f] for f in ROW_FIELDS])
    return buf.getvalue()
