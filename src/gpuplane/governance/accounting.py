"""Chargeback that adds up (no I/O, no clock): usage intervals + host capacity + cost model ->
per-tenant charges and a per (host, period) reconciliation.

Units and exactness. Every quantity is a ``Fraction`` of *resource-seconds* (GPU-seconds,
CPU-core-seconds, GiB-seconds); times are the stored float epochs taken exactly
(``Fraction(float)``). A MIG instance counts its compute slices / 7 of a GPU (a 1g is exactly
1/7), a shared task its milli-GPU / 1000 of each GPU it is on, a whole task 1 per GPU. So seven
1g instances for an hour are exactly one GPU-hour and four 250-milli tasks one GPU-hour in all.

What is charged. A task attempt is charged, per GPU it held, its share x the time it ran inside
the period, plus its CPU cores and memory. A *preempted* attempt's ``lost_gpu_s`` (GPU-seconds
since its last checkpoint) is not charged to the victim: the tail of the attempt that it covers
(``lost_gpu_s / gpu_milli * 1000`` seconds up to its end) is booked as ``lost``, for its GPU,
CPU and memory alike, and shown apart (FOCUS ``ListCost`` only, ``BilledCost`` 0).

Idle and fragmented. ``idle`` is capacity not allocated to any task; ``fragmented`` is the part
of idle that lies on GPUs partly allocated at that moment (a subset of idle). Usage on a GPU the
host does not list (rows written before placements were recorded) takes idle capacity of the
host, unfragmented first. Allocation beyond capacity (which the scheduler never makes) is
``overcommitted`` rather than negative idle. Per host, resource and period, exactly::

    charged + idle + lost == capacity x time + overcommitted

A host gone from the inventory (``known = False``) is taken to have exactly the capacity its
tasks used (no idle), so its usage is still charged and the identity holds.

Spreading idle (as OpenCost's shared idle): ``off`` leaves it with the operator; ``uniform``
gives each tenant that was charged on the host in the period an equal share; ``proportional``
shares each resource's idle by the tenants' charged use of that resource. The unit that
receives idle is the (project, user) tenant, so ``--by`` only sums and never changes a number.
Idle is spread per host and period, so ``charged + idle_spread + idle_remaining + lost``
still equals capacity x time (+ overcommitted).

Cost. A host's class is its ``gpuplane.io/cost-class`` label, else the model of its first GPU,
else ``cpu-only``. Per class, price per GPU-hour = (``gpu_hour`` + ``power_kw_per_gpu`` x
``power_price_per_kwh``) x (1 + ``overhead_fraction``); ``cpu_core_hour`` and
``memory_gib_hour`` are all-in prices (no overhead added). A class missing from the model costs
0 and adds a warning.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gpuplane.domain.mig_profiles import COMPUTE_SLICES, find_profile

BY = ("org", "project", "user")
SPREAD = ("off", "uniform", "proportional")
RESOURCES = ("gpu", "cpu", "memory")
SHARING = ("whole", "mig", "shared")
COST_CLASS_LABEL = "gpuplane.io/cost-class"
CPU_ONLY = "cpu-only"
HOUR = 3600


# -- cost model ----------------------------------------------------------------------------------
class CostClass(BaseModel):
    """Prices of one host class, in the model's currency. Every field defaults to 0."""

    model_config = ConfigDict(extra="forbid")
    gpu_hour: float = Field(0.0, ge=0, le=1e6, description="capital per GPU-hour")
    power_kw_per_gpu: float = Field(0.0, ge=0, le=100, description="power draw per GPU, kW")
    power_price_per_kwh: float = Field(0.0, ge=0, le=1e4)
    overhead_fraction: float = Field(0.0, ge=0, le=100,
                                     description="added on top of the GPU price (0.3 = +30 %)")
    cpu_core_hour: float = Field(0.0, ge=0, le=1e6)
    memory_gib_hour: float = Field(0.0, ge=0, le=1e6)

    def prices(self) -> dict[str, Fraction]:
        """Exact price per resource-hour (GPU-hour, core-hour, GiB-hour), as written."""
        def q(x: float) -> Fraction:
            return Fraction(repr(float(x)))
        gpu = (q(self.gpu_hour) + q(self.power_kw_per_gpu) * q(self.power_price_per_kwh)) \
            * (1 + q(self.overhead_fraction))
        return {"gpu": gpu, "cpu": q(self.cpu_core_hour), "memory": q(self.memory_gib_hour)}


class CostModel(BaseModel):
    """The ``cost-model`` policy: ``{"currency": "EUR", "classes": {"H100-80GB": {...}}}``."""

    model_config = ConfigDict(extra="forbid")
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    classes: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], CostClass] = \
        Field(default_factory=dict, max_length=1024,
              description="per host class: a cost-class label value or a GPU model")


def cost_class(labels: Mapping[str, str], gpu_models: Sequence[str]) -> str:
    """A host's cost class: its label, else its first GPU's model, else ``cpu-only``."""
    return labels.get(COST_CLASS_LABEL) or (gpu_models[0] if gpu_models else CPU_ONLY)


# -- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostCapacity:
    """A host's capacity, which exists from ``since`` (its registration) on."""

    name: str
    gpus: Mapping[int, str]          # index -> model
    cpu_milli: int
    memory_mib: int
    since: float
    site: str = ""
    jurisdiction: str = ""
    cost_class: str = CPU_ONLY
    simulated: bool = False


@dataclass(frozen=True)
class Tenant:
    """Who a charge goes to (names; never shown to another tenant)."""

    org: str
    project: str
    user: str


@dataclass(frozen=True)
class GpuShare:
    """Part of one GPU a task held: ``index`` None when the GPU is not known."""

    index: int | None
    share: Fraction
    sharing: str  # whole | mig | shared


@dataclass(frozen=True)
class Interval:
    """One task attempt's hold on a host over [start, end); the part from ``lost_from`` on is
    lost to preemption (not charged)."""

    host: str
    tenant: Tenant
    start: float
    end: float
    gpus: tuple[GpuShare, ...] = ()
    cpu_milli: int = 0
    memory_mib: int = 0
    lost_from: float | None = None
    simulated: bool = False
    gpu_model: str | None = None  # prices a host gone from the inventory


def gpu_shares(placement: Mapping[str, Any] | None, gpu_milli: int,
               models: Mapping[int, str]) -> tuple[GpuShare, ...]:
    """The exact shares of a stored placement (``{"gpus", "gpu_milli", "mig"}``); ``None`` (rows
    from before placements were kept) gives ``gpu_milli`` in all on GPUs not known."""
    if not placement:
        if gpu_milli <= 0:
            return ()
        kind = "whole" if gpu_milli % 1000 == 0 else "shared"
        return (GpuShare(None, Fraction(gpu_milli, 1000), kind),)
    indices = [int(i) for i in placement.get("gpus") or ()]
    mig = placement.get("mig") or ()
    if mig:
        out = []
        for m in mig:
            index = int(m.get("gpu_index", indices[0] if indices else -1))
            out.append(GpuShare(index if index >= 0 else None,
                                _mig_share(models.get(index, ""), str(m.get("profile", ""))),
                                "mig"))
        return tuple(out)
    milli = int(placement.get("gpu_milli", 1000))
    kind = "whole" if milli >= 1000 else "shared"
    return tuple(GpuShare(i, Fraction(milli, 1000), kind) for i in indices)


def _mig_share(model: str, profile: str) -> Fraction:
    found = find_profile(model, profile) if model else None
    if found is not None:
        return found.usage
    m = re.search(r"(\d+)g(?:\.|\+|$)", profile.lower())
    return Fraction(min(int(m.group(1)), COMPUTE_SLICES) if m else 1, COMPUTE_SLICES)


def lost_window_start(start: float, end: float, lost_gpu_s: float, gpu_milli: int) -> float | None:
    """Where a preempted attempt's lost tail begins (None when nothing was lost)."""
    if lost_gpu_s <= 0 or gpu_milli <= 0:
        return None
    return max(start, end - lost_gpu_s * 1000 / gpu_milli)


# -- outputs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Charge:
    """One line of the ledger: ``quantity`` resource-seconds of ``resource`` on ``host`` in
    ``period``. ``kind``: ``usage`` and ``idle_spread`` are billed to ``tenant``; ``lost`` (the
    victim as tenant) and ``idle`` (no tenant) are not. ``price``: per resource-hour."""

    period: tuple[float, float]
    host: str
    tenant: Tenant | None
    simulated: bool
    resource: str
    kind: Literal["usage", "idle_spread", "idle", "lost"]
    quantity: Fraction
    price: Fraction
    sharing: str = ""
    fraction: Fraction | None = None

    @property
    def billed(self) -> bool:
        return self.kind in ("usage", "idle_spread")

    @property
    def value(self) -> Fraction:
        """What the quantity is worth at the class price (billed or not)."""
        return self.quantity * self.price / HOUR


@dataclass
class Balance:
    """One resource of one host in one period, in resource-seconds."""

    capacity: Fraction = Fraction(0)
    charged: Fraction = Fraction(0)
    idle: Fraction = Fraction(0)
    idle_spread: Fraction = Fraction(0)
    fragmented: Fraction = Fraction(0)
    lost: Fraction = Fraction(0)
    overcommitted: Fraction = Fraction(0)

    @property
    def idle_remaining(self) -> Fraction:
        return self.idle - self.idle_spread

    @property
    def reconciled(self) -> bool:
        return (self.charged + self.idle_spread + self.idle_remaining + self.lost
                == self.capacity + self.overcommitted) and 0 <= self.fragmented <= self.idle


@dataclass
class HostLine:
    host: HostCapacity
    known: bool
    period: tuple[float, float]
    balances: dict[str, Balance] = field(default_factory=lambda: {r: Balance() for r in RESOURCES})
    prices: dict[str, Fraction] = field(default_factory=dict)

    @property
    def reconciled(self) -> bool:
        return all(b.reconciled for b in self.balances.values())


@dataclass
class Ledger:
    charges: list[Charge]
    hosts: list[HostLine]
    currency: str
    warnings: list[str]


# -- the computation -----------------------------------------------------------------------------
def chargeback(intervals: Iterable[Interval], hosts: Iterable[HostCapacity],
               periods: Sequence[tuple[float, float]], model: CostModel | None = None,
               spread: str = "off") -> Ledger:
    """Charges and per (host, period) balances of ``intervals`` over ``periods`` (each
    [start, end), in epoch seconds; each period stands alone, so overlapping periods each
    charge their overlap). Raises ValueError on an unknown spread mode."""
    if spread not in SPREAD:
        raise ValueError(f"spread must be one of {', '.join(SPREAD)}, not {spread!r}")
    known = {h.name: h for h in hosts}
    by_host: dict[str, list[Interval]] = defaultdict(list)
    for iv in intervals:
        if iv.end > iv.start:
            by_host[iv.host].append(iv)
    warnings: list[str] = []
    if model is None:
        warnings.append("no cost-model policy is set: every cost is 0 "
                        "(a global admin sets it with PUT /v1/policies/cost-model)")
    unpriced: dict[str, list[str]] = defaultdict(list)
    charges: list[Charge] = []
    lines: list[HostLine] = []
    for name in sorted(set(known) | set(by_host)):
        models = [i.gpu_model for i in by_host[name] if i.gpu_model]
        host = known.get(name) or HostCapacity(name, {}, 0, 0, 0.0, cost_class=cost_class(
            {}, models), simulated=all(i.simulated for i in by_host[name]))
        if name not in known:
            warnings.append(f"unknown host {name!r} (deleted?): its usage is charged; its "
                            "capacity is taken as what its tasks used")
        cls = model.classes.get(host.cost_class) if model is not None else None
        if model is not None and cls is None:
            unpriced[host.cost_class].append(name)
        prices = cls.prices() if cls is not None else {r: Fraction(0) for r in RESOURCES}
        for period in periods:
            line = HostLine(host, name in known, period, prices=prices)
            _balance(line, by_host[name], charges, spread)
            if line.known or any(b.charged or b.lost for b in line.balances.values()):
                lines.append(line)
    for cls_name, names in sorted(unpriced.items()):
        warnings.append(f"the cost model has no class {cls_name!r} (hosts: "
                        f"{', '.join(names)}): their costs are 0")
    return Ledger(charges, lines, model.currency if model is not None else "EUR", warnings)


def _clip(a: Fraction, b: Fraction, p0: Fraction, p1: Fraction) -> Fraction:
    return max(Fraction(0), min(b, p1) - max(a, p0))


def _balance(line: HostLine, ivs: list[Interval], out: list[Charge], spread: str) -> None:
    p0, p1 = (Fraction(t) for t in line.period)
    host, prices, bal = line.host, line.prices, line.balances
    mine: list[Charge] = []
    events: dict[Fraction, list[tuple[Any, Fraction]]] = defaultdict(list)

    def book(iv: Interval, kind: str, length: Fraction) -> None:
        if length <= 0:
            return
        for g in iv.gpus:
            mine.append(Charge(line.period, host.name, iv.tenant, iv.simulated, "gpu", kind,
                               g.share * length, prices["gpu"], g.sharing, g.share))
        for res, amount in (("cpu", Fraction(iv.cpu_milli, 1000)),
                            ("memory", Fraction(iv.memory_mib, 1024))):
            if amount:
                mine.append(Charge(line.period, host.name, iv.tenant, iv.simulated, res, kind,
                                   amount * length, prices[res]))

    for iv in ivs:
        s, e = Fraction(iv.start), Fraction(iv.end)
        lf = e if iv.lost_from is None else max(s, min(e, Fraction(iv.lost_from)))
        book(iv, "usage", _clip(s, lf, p0, p1))
        book(iv, "lost", _clip(lf, e, p0, p1))
        a, b = max(s, p0), min(e, p1)
        if b <= a:
            continue
        for g in iv.gpus:
            key = g.index if g.index in host.gpus else None
            events[a].append((key, g.share))
            events[b].append((key, -g.share))
        for res, amount in (("cpu", Fraction(iv.cpu_milli, 1000)),
                            ("memory", Fraction(iv.memory_mib, 1024))):
            events[a].append((res, amount))
            events[b].append((res, -amount))
    for c in mine:
        b = bal[c.resource]
        if c.kind == "usage":
            b.charged += c.quantity
        else:
            b.lost += c.quantity
    if line.known:
        _sweep(line, events, p0, p1)
    else:   # capacity unknown: exactly what was used
        for b in bal.values():
            b.capacity = b.charged + b.lost
    out.extend(mine)
    out.extend(_spread(line, [c for c in mine if c.kind == "usage"], spread))


def _sweep(line: HostLine, events: dict[Fraction, list[tuple[Any, Fraction]]],
           p0: Fraction, p1: Fraction) -> None:
    """Integrate capacity, idle, fragmented and overcommitted over the period."""
    host, bal = line.host, line.balances
    since = Fraction(host.since)
    times = sorted({p0, p1, *events, *([since] if p0 < since < p1 else [])})
    alloc: dict[Any, Fraction] = defaultdict(Fraction)
    cap = {"cpu": Fraction(host.cpu_milli, 1000), "memory": Fraction(host.memory_mib, 1024)}
    for t0, t1 in zip(times, times[1:]):
        for key, delta in events.get(t0, ()):
            alloc[key] += delta
        if t0 < p0 or t1 > p1:
            continue
        dt, exists = t1 - t0, t0 >= since
        idle = frag = over = Fraction(0)
        for index in host.gpus:
            a = alloc.get(index, Fraction(0))
            free = (1 if exists else 0) - a
            idle += max(Fraction(0), free)
            over += max(Fraction(0), -free)
            if exists and 0 < a < 1:
                frag += 1 - a
        unplaced = alloc.get(None, Fraction(0))
        taken = min(unplaced, idle)
        idle, over = idle - taken, over + unplaced - taken
        g = bal["gpu"]
        g.capacity += len(host.gpus) * dt if exists else 0
        g.idle += idle * dt
        g.fragmented += min(frag, idle) * dt
        g.overcommitted += over * dt
        for res in ("cpu", "memory"):
            c = cap[res] if exists else Fraction(0)
            free = c - alloc.get(res, Fraction(0))
            b = bal[res]
            b.capacity += c * dt
            b.idle += max(Fraction(0), free) * dt
            b.overcommitted += max(Fraction(0), -free) * dt


def _spread(line: HostLine, usage: list[Charge], mode: str) -> list[Charge]:
    """Idle of ``line`` as ``idle_spread`` charges to its tenants, the rest as ``idle``."""
    out: list[Charge] = []
    used: dict[tuple[Tenant, bool], dict[str, Fraction]] = defaultdict(
        lambda: {r: Fraction(0) for r in RESOURCES})
    for c in usage:
        used[(c.tenant, c.simulated)][c.resource] += c.quantity  # type: ignore[index]
    units = sorted((u for u, q in used.items() if any(q.values())),
                   key=lambda u: (u[0].org, u[0].project, u[0].user, u[1]))
    for res in RESOURCES:
        b = line.balances[res]
        total = sum((used[u][res] for u in units), Fraction(0))
        if mode == "off" or not units or not b.idle or (mode == "proportional" and not total):
            shares = {}
        elif mode == "uniform":
            shares = {u: b.idle / len(units) for u in units}
        else:
            shares = {u: b.idle * used[u][res] / total for u in units if used[u][res]}
        for (tenant, sim), q in shares.items():
            out.append(Charge(line.period, line.host.name, tenant, sim, res, "idle_spread", q,
                              line.prices[res]))
            b.idle_spread += q
        if b.idle_remaining:
            out.append(Charge(line.period, line.host.name, None, line.host.simulated, res,
                              "idle", b.idle_remaining, line.prices[res]))
    return out
