"""Response bodies and query types of ``GET /v1/usage/chargeback``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field

from gpuplane.governance.chargeback import parse_instant

#: A query time: seconds since the epoch or ISO 8601 (no zone = UTC).
Instant = Annotated[float | None, BeforeValidator(parse_instant)]
By = Literal["org", "project", "user"]
Spread = Literal["off", "uniform", "proportional"]
ChargebackFormat = Literal["json", "csv", "focus"]


class ChargePeriodOut(BaseModel):
    start: float
    end: float = Field(description="min(until, now): charges stop here")
    requested_end: float = Field(description="the until asked for (the billing period's end)")


class ChargeTotalsOut(BaseModel):
    """Resource-hours and costs; ``cost`` = ``usage_cost`` + ``idle_cost`` (idle spread onto
    it); ``lost_*`` is not charged."""

    gpu_hours: float
    gpu_hours_whole: float
    gpu_hours_mig: float
    gpu_hours_shared: float
    cpu_core_hours: float
    memory_gib_hours: float
    idle_gpu_hours: float
    idle_cpu_core_hours: float
    idle_memory_gib_hours: float
    lost_gpu_hours: float
    usage_cost: float
    idle_cost: float
    cost: float
    lost_cost: float


class ChargeRowOut(ChargeTotalsOut):
    """One tenant (org, project or user) in one period."""

    period_start: float
    period_end: float
    org: str | None
    project: str | None
    user: str | None
    simulated: bool
    currency: str


class ExactSecondsOut(BaseModel):
    """The same amounts as exact fractions of resource-seconds (``"25200/7"``)."""

    capacity: str
    charged: str
    idle: str
    idle_spread: str
    idle_remaining: str
    fragmented: str
    lost: str
    overcommitted: str


class BalanceOut(BaseModel):
    """charged + idle_spread + idle_remaining + lost = capacity + overcommitted (hours)."""

    capacity: float
    charged: float
    idle: float
    idle_spread: float
    idle_remaining: float
    fragmented: float = Field(description="idle on GPUs that were partly allocated (in idle)")
    lost: float
    overcommitted: float
    exact_seconds: ExactSecondsOut


class HostCostOut(BaseModel):
    capacity: float
    charged: float
    idle_spread: float
    idle_remaining: float
    lost: float
    overcommitted: float


class HostLineOut(BaseModel):
    """One host in one period (global operators, admins and auditors only)."""

    host: str
    known: bool = Field(description="false: the host is gone; its capacity is taken as used")
    site: str
    jurisdiction: str
    cost_class: str
    simulated: bool
    gpus: int
    period_start: float
    period_end: float
    units: dict[str, str]
    gpu: BalanceOut
    cpu: BalanceOut
    memory: BalanceOut
    cost: HostCostOut
    reconciled: bool


class ChargebackOut(BaseModel):
    by: By
    spread: Spread
    currency: str
    period: ChargePeriodOut
    rows: list[ChargeRowOut]
    totals: ChargeTotalsOut
    hosts: list[HostLineOut] | None = Field(
        description="per-host reconciliation; null unless you hold a global operator, admin "
                    "or auditor role")
    warnings: list[str]
