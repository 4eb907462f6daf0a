"""Plain records the repositories return for inventory and tenancy (no ORM objects escape).

These stay independent of ``domain/inventory.py`` and ``domain/tenancy.py`` (other areas) and
convert to them in ``store/convert.py``. Amounts are base units: milli-CPU, MiB, milli-GPU;
quota amounts are milli-units of the resource (GPUs, CPU cores, MiB).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Site:
    id: int
    name: str
    jurisdiction: str
    region: str
    provider: str
    labels: Mapping[str, str]
    generation: int
    created_at: float


@dataclass(frozen=True)
class Gpu:
    index: int
    model: str
    memory_mib: int
    numa: int = 0
    nvlink_domain: str | None = None
    mode: str = "whole"  # whole | shared | mig
    mig_layout: tuple[Mapping[str, Any], ...] | None = None
    uuid: str | None = None


@dataclass(frozen=True)
class HostRecord:
    id: int
    name: str
    site: str
    jurisdiction: str
    cpu_milli: int
    memory_mib: int
    rack: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, Any], ...]
    tee: str | None
    driver: str
    simulated: bool
    declared: bool
    state: str  # ready | cordoned | draining | down
    heartbeat_at: float | None
    generation: int
    created_at: float
    gpus: tuple[Gpu, ...] = ()

    @property
    def schedulable(self) -> bool:
        """New tasks may be placed here (not cordoned, draining or down)."""
        return self.state == "ready"


@dataclass(frozen=True)
class Organisation:
    id: int
    name: str
    display_name: str
    generation: int
    created_at: float


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    org_id: int
    org: str
    display_name: str
    weight: float
    cohort: str | None
    generation: int
    created_at: float
    classification: str | None = None  # data classification (governance/policies.py)


@dataclass(frozen=True)
class RoleBinding:
    id: int
    user: str
    role: str
    scope_kind: str  # global | organisation | project
    scope_id: int
    scope_name: str
    created_at: float


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str
    org_id: int | None
    org: str | None
    disabled: bool
    created_at: float
    roles: tuple[RoleBinding, ...] = ()


@dataclass(frozen=True)
class ApiToken:
    id: int
    user_id: int
    user: str
    name: str
    prefix: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


@dataclass(frozen=True)
class Quota:
    id: int
    project_id: int
    project: str
    resource: str  # gpu | cpu | memory
    flavor: str  # GPU model or "*"
    guaranteed_milli: int
    borrowing_limit_milli: int | None  # None: may borrow without limit
    lending_limit_milli: int | None  # None: may lend all unused guarantee
    generation: int
    updated_at: float


@dataclass(frozen=True)
class PriorityClass:
    id: int
    name: str
    value: int
    preemptible: bool
    is_default: bool
    description: str
    created_at: float


@dataclass(frozen=True)
class UsageRecord:
    project_id: int
    workload_uid: str
    task_index: int
    attempt: int
    host: str
    gpu_model: str | None
    simulated: bool
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    started_at: float
    finished_at: float
    outcome: str
    lost_gpu_s: float = 0.0   # preempted attempts: GPU-seconds since the last checkpoint (or start)
    placement: Mapping[str, Any] | None = None  # UsageRow.placement: devices and per-GPU share


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    object_kind: str
    object_id: str
    project_id: int | None
    org_id: int | None
    outcome: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    policy_hash: str = ""
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True)
class WorkloadPhaseState:
    """What recomputing a workload's phase needs, read in two small queries (no spec, no
    task conversion): the workload's generation, phase, cancel flag and phase times, the
    phases of its tasks, and the ids of its project and organisation (for audit entries)."""

    generation: int
    phase: str
    cancel_requested: bool
    admitted_at: float | None
    started_at: float | None
    task_phases: tuple[str, ...]
    project_id: int
    org_id: int


@dataclass(frozen=True)
class LockedWorkload:
    """A workload row as a batch writer locked it (``WorkloadRepo.lock``)."""

    pk: int
    uid: str
    generation: int
    phase: str
    cancel_requested: bool
    admitted_at: float | None
    started_at: float | None
    project_id: int
    org_id: int


@dataclass(frozen=True)
class LockedTask:
    """A task row as a batch writer locked it (``TaskRepo.lock``)."""

    id: int
    generation: int
    phase: str
    workload_pk: int
    index: int
    attempt: int


@dataclass(frozen=True)
class PolicyDocument:
    """A named governance policy's current version (``hash``: SHA-256 of its canonical JSON)."""

    name: str
    data: Mapping[str, Any]
    version: int
    hash: str
    updated_by: str
    updated_at: float


@dataclass(frozen=True)
class Checkpoint:
    """A signed audit checkpoint: the note text covers ``size`` entries with root ``root_hash``."""

    id: int
    size: int
    root_hash: str
    note: str
    reason: str
    timestamp_token: str | None
    created_at: float


@dataclass(frozen=True)
class AttestationResult:
    """One appraisal of a host's evidence (see governance/attestation)."""

    id: int
    host: str
    kind: str
    passed: bool
    status: str
    reasons: tuple[str, ...]
    claims: Mapping[str, Any]
    ear: Mapping[str, Any]
    appraised_at: float
    expires_at: float

    def valid_at(self, now: float) -> bool:
        return self.passed and now < self.expires_at
