"""A FinOps FOCUS 1.x style CSV of the chargeback ledger (no I/O).

One row per (charge period, host, project, user, resource, GPU fraction, charge kind). FOCUS
column names where one applies, ``x_`` custom columns for the rest:

- ``BilledCost`` = ``EffectiveCost``: what the project is charged (usage and spread idle);
  ``ListCost``: the value at the class price. Lost preemption time (``x_ChargeKind`` ``lost``)
  and the operator's remaining idle (``idle``, global viewers only) have ``ListCost`` and a
  ``BilledCost`` of 0, so per host and period the ``ListCost`` of all rows adds up to capacity
  x price (plus overcommitted, normally 0).
- ``SubAccountId``/``SubAccountName``: the project; ``BillingAccountId``/``Name``: its
  organisation; ``RegionId``/``RegionName``: the host's site; ``ResourceId``: the host.
- ``x_GpuFraction``: the share of one GPU each task held (``1``, ``1/4``, ``3/7``);
  ``x_GpuSharing``: ``whole``, ``mig`` or ``shared``.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, datetime
from fractions import Fraction

from gpuplane.governance.accounting import HOUR, Charge, Ledger
from gpuplane.governance.chargeback import decimal_str, visible_charge

COLUMNS = (
    "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodStart",
    "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "BilledCost", "EffectiveCost", "ListCost",
    "ListUnitPrice", "ConsumedQuantity", "ConsumedUnit", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName",
    "ResourceType", "ServiceCategory", "ServiceName", "SkuId", "SubAccountId", "SubAccountName",
    "x_Organisation", "x_User", "x_Jurisdiction", "x_GpuFraction", "x_GpuSharing", "x_CostClass",
    "x_ChargeKind", "x_Simulated")

_UNIT = {"gpu": "GPU-Hours", "cpu": "Core-Hours", "memory": "GiB-Hours"}
_TYPE = {"gpu": "GPU", "cpu": "CPU", "memory": "Memory"}
_WHAT = {"gpu": "GPU", "cpu": "CPU", "memory": "memory"}


def iso(t: float) -> str:
    """UTC ISO 8601 with a ``Z`` (FOCUS date-time format)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(c: Charge, spread: str) -> str:
    what = _WHAT[c.resource]
    if c.kind == "usage":
        share = f" ({c.sharing} {c.fraction})" if c.resource == "gpu" and c.sharing else ""
        return f"{what} usage{share}"
    if c.kind == "idle_spread":
        return f"idle {what} capacity of the host, spread {spread}"
    if c.kind == "lost":
        return f"{what} time lost to preemption since the last checkpoint (not charged)"
    return f"idle {what} capacity (not allocated, not charged)"


def focus_csv(ledger: Ledger, billing_period: tuple[float, float], spread: str,
              visible: Collection[str] | None, global_view: bool) -> str:
    """The FOCUS-style CSV text (header + rows, ``\\n`` line ends)."""
    hosts = {h.host.name: h.host for h in ledger.hosts}
    agg: dict[tuple, list[Fraction]] = defaultdict(lambda: [Fraction(0), Fraction(0)])
    for c in ledger.charges:
        if visible_charge(c, visible, global_view):
            key = (c.period, c.host, c.tenant, c.simulated, c.resource, c.kind, c.sharing,
                   c.fraction, c.price)
            agg[key][0] += c.quantity
            agg[key][1] += c.value
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)

    def order(k: tuple) -> tuple:
        t = k[2]
        return (k[0], k[1], ("", "", "") if t is None else (t.org, t.project, t.user), k[3],
                k[4], k[5], k[6], k[7] or 0)
    for key in sorted(agg, key=order):
        (p0, p1), host, tenant, sim, res, kind, sharing, fraction, price = key
        qty, value = agg[key]
        h = hosts.get(host)
        c = Charge((p0, p1), host, tenant, sim, res, kind, qty, price, sharing, fraction)
        billed = decimal_str(value, 6) if c.billed else "0"
        quantity = decimal_str(qty / HOUR, 9)
        org = tenant.org if tenant else ""
        project = tenant.project if tenant else ""
        w.writerow([
            org, org, ledger.currency, iso(billing_period[0]), iso(billing_period[1]),
            iso(p0), iso(p1), "Usage", "", _describe(c, spread), "Usage-Based",
            billed, billed, decimal_str(value, 6), decimal_str(price, 6), quantity, _UNIT[res],
            quantity, _UNIT[res], "gpuplane", "gpuplane", h.site if h else "",
            h.site if h else "", host, host, _TYPE[res], "Compute", "gpuplane compute",
            f"{h.cost_class if h else ''}/{res}", project, project, org,
            tenant.user if tenant else "", h.jurisdiction if h else "",
            "" if fraction is None else str(fraction), sharing, h.cost_class if h else "",
            kind, "true" if sim else "false"])
    return buf.getvalue()
