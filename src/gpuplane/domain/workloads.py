"""Workloads: what a user asks for (``WorkloadSpec``) and what is observed (phases, records).

A workload is a job, service, batch or agent of one project. Its ``tasks`` list groups of
identical tasks (``replicas`` each); every replica becomes one *task* that is placed on one host.
``WorkloadSpec`` validates shape and ranges only (pure, no inventory knowledge); checks that need
the inventory (is this GPU model known?) live in ``service/workloads.py``.

Phases (the same names for workloads and tasks)::

    Pending -> Admitted -> Running -> Succeeded | Failed
       |          |           |   \\-> Pending (retry with backoff, or preempted)
       |          |           \\-> Lost (its host or driver forgot it)
       \\---------+-----------+--> Cancelled

``check_task_transition`` is the single authority on which moves are legal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gpuplane.domain import validation
from gpuplane.domain.errors import Conflict

NAME_RE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MIG_PROFILE_RE = re.compile(r"^[1-7]g\.[1-9][0-9]{0,2}gb(\+me)?$")
_MEMORY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?i?B?$")
_MEMORY_UNITS_MIB = {None: 1.0, "Ki": 1 / 1024, "K": 1 / 1024, "Mi": 1.0, "M": 1.0, "Gi": 1024.0,
                     "G": 1024.0, "Ti": 1024.0 * 1024, "T": 1024.0 * 1024}

MAX_REPLICAS = 1024
MAX_TASKS = 4096
MAX_CPU_CORES = 1024
MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB
MAX_GPUS_PER_TASK = 64


class Phase(str, Enum):
    """Lifecycle phase of a task or a workload."""

    PENDING = "Pending"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    LOST = "Lost"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def holds_resources(self) -> bool:
        """Admitted and Running tasks own an allocation; no other phase does."""
        return self in (Phase.ADMITTED, Phase.RUNNING)


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED, Phase.LOST})

_TASK_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.ADMITTED, Phase.CANCELLED, Phase.FAILED}),
    Phase.ADMITTED: frozenset({Phase.RUNNING, Phase.PENDING, Phase.SUCCEEDED, Phase.FAILED,
                               Phase.CANCELLED, Phase.LOST}),
    Phase.RUNNING: frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED, Phase.LOST,
                              Phase.PENDING}),
    Phase.SUCCEEDED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.CANCELLED: frozenset(),
    Phase.LOST: frozenset(),
}


def can_transition(old: Phase, new: Phase) -> bool:
    """True if a task may move from ``old`` to ``new`` (staying put is always allowed)."""
    return old == new or new in _TASK_TRANSITIONS[old]


def check_task_transition(old: Phase, new: Phase) -> None:
    """Raise ``Conflict(gpuplane.task.invalid_transition)`` for an illegal move."""
    if not can_transition(old, new):
        raise Conflict(f"a task cannot go from {old.value} to {new.value}",
                       code="gpuplane.task.invalid_transition")


def aggregate_phase(task_phases: Iterable[Phase], cancel_requested: bool = False) -> Phase:
    """The workload phase implied by its tasks' phases.

    Rules, first match wins: no tasks -> Pending; all terminal -> Cancelled if a cancel was
    requested or any task was cancelled, else Failed if any failed, else Lost if any was lost,
    else Succeeded; any Running -> Running; any Admitted -> Admitted; otherwise Pending (a
    workload with some tasks finished and others waiting for a retry is still Running-like, but
    while nothing holds resources it is Pending).
    """
    phases = list(task_phases)
    if not phases:
        return Phase.PENDING
    if all(p.terminal for p in phases):
        if cancel_requested or Phase.CANCELLED in phases:
            return Phase.CANCELLED
        if Phase.FAILED in phases:
            return Phase.FAILED
        if Phase.LOST in phases:
            return Phase.LOST
        return Phase.SUCCEEDED
    if Phase.RUNNING in phases:
        return Phase.RUNNING
    if Phase.ADMITTED in phases:
        return Phase.ADMITTED
    return Phase.PENDING


def parse_memory_mib(value: int | float | str) -> int:
    """``512`` (MiB), ``"512Mi"``, ``"4Gi"``, ``"1.5G"`` -> MiB (rounded up). ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError("memory must be a number of MiB or a string such as '4Gi'")
    if isinstance(value, (int, float)):
        try:
            mib = float(value)
        except OverflowError:   # an integer beyond any float: out of range, not a crash
            mib = math.inf
    else:
        match = _MEMORY_RE.match(value.strip())
        if not match:
            raise ValueError(f"cannot read memory {value!r}; use MiB or a unit: '512Mi', '4Gi'")
        mib = float(match.group(1)) * _MEMORY_UNITS_MIB[match.group(2)]
    if not math.isfinite(mib) or mib < 0 or mib > MAX_MEMORY_MIB:
        raise ValueError(f"memory must be between 0 and {MAX_MEMORY_MIB} MiB")
    return int(-(-mib // 1))


class _Strict(BaseModel):
    """Base of request models: unknown fields and control characters are refused
    (``domain/validation.py``; fields named in ``tab_lf_fields`` may hold tab and newline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tab_lf_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: object, info: ValidationInfo) -> object:
        if validation.is_stored(info):
            return value
        problems = validation.text_problems(
            value, allow_tab_lf=info.field_name in cls.tab_lf_fields)
        if problems:
            raise ValueError("; ".join(problems[:3]))
        return value


class Resources(_Strict):
    """What one task needs. ``gpus`` whole GPUs; or ``gpus: 1`` with ``gpu_milli < 1000`` for a
    share of one GPU; or ``gpus: 1`` with ``mig_profile`` for one MIG instance."""

    cpu: float = Field(1.0, gt=0, le=MAX_CPU_CORES, description="CPU cores (0.5 = half a core).")
    memory: int | str = Field(1024, description="Memory: MiB as a number, or '512Mi', '4Gi'.")
    gpus: int = Field(0, ge=0, le=MAX_GPUS_PER_TASK, description="Number of GPUs.")
    gpu_milli: int = Field(1000, ge=1, le=1000, description="Share of each GPU in 1/1000.")
    mig_profile: str | None = Field(None, max_length=32, description="MIG profile, e.g. 3g.40gb.")
    gpu_models: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32, description="Acceptable GPU models; empty = any.")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str) -> int | str:
        parse_memory_mib(value)
        return value

    @field_validator("mig_profile")
    @classmethod
    def _mig(cls, value: str | None) -> str | None:
        if value is not None and not MIG_PROFILE_RE.match(value):
            raise ValueError(f"{value!r} is not a MIG profile name such as '1g.10gb' or '3g.40gb'")
        return value

    @model_validator(mode="after")
    def _shape(self) -> Resources:
        if self.gpu_milli < 1000 and self.gpus != 1:
            raise ValueError("gpu_milli below 1000 (a GPU share) needs gpus: 1")
        if self.mig_profile is not None and (self.gpus != 1 or self.gpu_milli != 1000):
            raise ValueError("mig_profile needs gpus: 1 and no gpu_milli")
        return self

    @property
    def cpu_milli(self) -> int:
        return int(round(self.cpu * 1000))

    @property
    def memory_mib(self) -> int:
        return parse_memory_mib(self.memory)

    @property
    def gpu_milli_total(self) -> int:
        """GPU amount in milli-GPUs (whole GPUs x 1000, or the share); MIG counts as 1000."""
        return self.gpus * self.gpu_milli


class Toleration(_Strict):
    """Lets a task land on hosts with the taint ``key`` (and ``value``, when given)."""

    key: str = Field(min_length=1, max_length=128)
    value: str | None = Field(None, max_length=256)

    @field_validator("key")
    @classmethod
    def _not_reserved(cls, key: str, info: ValidationInfo) -> str:
        if validation.is_reserved_label(key) and not validation.is_stored(info):
            raise ValueError(f"taints under {validation.RESERVED_LABEL_PREFIX!r} are set by "
                             "gpuplane (cordoned, draining and down hosts); they cannot be "
                             "tolerated")
        return key


class TaskGroup(_Strict):
    """``replicas`` identical tasks: the workers of a job, replicas of a service, batch items."""

    name: str = Field("main", pattern=NAME_RE)
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    resources: Resources = Field(default_factory=Resources)
    command: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list,
                                                                  max_length=256)
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list,
                                                               max_length=256)
    env: dict[Annotated[str, Field(min_length=1, max_length=128, json_schema_extra={
                  "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"})],
              Annotated[str, Field(max_length=8192)]] = Field(default_factory=dict, max_length=128)
    selector: dict[Annotated[str, Field(min_length=1, max_length=128)],
                   Annotated[str, Field(max_length=256)]] = Field(default_factory=dict,
                                                                   max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)

    tab_lf_fields: ClassVar[frozenset[str]] = frozenset({"command", "args", "env"})

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        problems = [] if validation.is_stored(info) else \
            [p for p in map(validation.env_name_problem, env) if p]
        if problems:
            raise ValueError("; ".join(problems[:3]))
        return env


class Topology(_Strict):
    """Where a gang's tasks must (``required``) or should (``preferred``) be together: one
    host, one NVLink domain, or one rack."""

    level: Literal["host", "nvlink", "rack"]
    mode: Literal["required", "preferred"] = "required"


class RetryPolicy(_Strict):
    """``limit`` retries per task; the n-th retry waits ``backoff_s * 2**(n-1)`` up to the max."""

    limit: int = Field(0, ge=0, le=100)
    backoff_s: float = Field(10.0, ge=0, le=86_400)
    backoff_max_s: float = Field(600.0, ge=0, le=86_400)

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1 = the first retry)."""
        if attempt <= 0:
            return 0.0
        return min(self.backoff_max_s, self.backoff_s * (2 ** min(attempt - 1, 30)))


class Residency(_Strict):
    """Where the workload may run: allowed jurisdictions (``EU/DE``, ``CH``); empty = anywhere."""

    jurisdictions: list[Annotated[str, Field(pattern=r"^[A-Z]{2}(/[A-Z]{2})?$")]] = Field(
        default_factory=list, max_length=64)
    classification: str | None = Field(
        None, pattern=NAME_RE, description="Data classification; the residency policy maps it "
        "to allowed jurisdictions. Default: the project's classification.")


class WorkloadSpec(_Strict):
    """What a user asks for. Unknown fields are rejected; every range is checked here."""

    name: str = Field(pattern=NAME_RE, description="Unique inside the project.")
    project: str = Field("default", pattern=NAME_RE)
    kind: Literal["job", "service", "batch", "agent"] = "job"
    tasks: list[TaskGroup] = Field(min_length=1, max_length=64)
    gang: bool = Field(False, description="Place all tasks together or none.")
    topology: Topology | None = None
    priority_class: str | None = Field(None, pattern=NAME_RE,
                                       description="Name of a priority class; default if absent.")
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    max_runtime_s: float | None = Field(None, gt=0, le=365 * 86_400)
    residency: Residency = Field(default_factory=Residency)
    confidential: bool = Field(False, description="Needs a TEE host and an attested GPU.")
    preemptible: bool | None = Field(None, description="Overrides the priority class default.")
    labels: dict[Annotated[str, Field(min_length=1, max_length=128)],
                 Annotated[str, Field(max_length=256)]] = Field(default_factory=dict, max_length=64)

    @field_validator("labels")
    @classmethod
    def _labels_not_reserved(cls, labels: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        bad = [] if validation.is_stored(info) else \
            validation.reserved_labels(labels, validation.USER_LABELS)
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))}: labels under "
                             f"{validation.RESERVED_LABEL_PREFIX!r} are set by gpuplane; a "
                             f"workload may carry only {', '.join(sorted(validation.USER_LABELS))}")
        return labels

    @model_validator(mode="after")
    def _shape(self) -> WorkloadSpec:
        total = sum(g.replicas for g in self.tasks)
        if total > MAX_TASKS:
            raise ValueError(f"{total} tasks in all; at most {MAX_TASKS}")
        names = [g.name for g in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError("task group names must be unique")
        if self.topology is not None and not self.gang:
            raise ValueError("topology needs gang: true")
        return self

    def task_slots(self) -> list[tuple[int, TaskGroup, int]]:
        """(task index, group, replica number) for every task, in a stable order."""
        out, index = [], 0
        for group in self.tasks:
            for replica in range(group.replicas):
                out.append((index, group, replica))
                index += 1
        return out


@dataclass(frozen=True)
class PendingReason:
    """Why a workload waits: a stable ``code``, a human ``message``, machine ``detail``."""

    code: str
    message: str
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskPlacement:
    """Where one task runs (the store's copy of a scheduling ``Placement``)."""

    host: str
    gpu_indices: tuple[int, ...] = ()
    gpu_milli: int = 1000
    mig: tuple[Mapping[str, object], ...] = ()
    #: Admitted above its project's guarantee, on capacity lent by the cohort: reclaimable, and
    #: placed apart from guaranteed work (``CycleCapacity.lane``).
    borrowed: bool = False

    def share_milli(self) -> dict[int, int]:
        """Milli-GPU taken from each GPU index: a MIG instance counts its compute slices / 7
        (``3g.40gb`` -> 428), otherwise ``gpu_milli`` on every index in ``gpu_indices``."""
        if self.mig:
            out: dict[int, int] = {}
            for m in self.mig:
                slices = int(str(m.get("profile", "1g")).split("g", 1)[0] or 1)
                index = int(m.get("gpu_index", self.gpu_indices[0] if self.gpu_indices else 0))
                out[index] = min(1000, out.get(index, 0) + slices * 1000 // 7)
            return out
        return {i: self.gpu_milli for i in self.gpu_indices}

    @property
    def total_milli(self) -> int:
        """Milli-GPU taken in all (accounting, allocation views)."""
        return sum(self.share_milli().values())


@dataclass(frozen=True)
class Task:
    """One task of a workload, as stored."""

    id: int
    workload_id: str
    index: int
    group: str
    replica: int
    phase: Phase
    generation: int
    attempt: int
    cpu_milli: int
    memory_mib: int
    gpus: int
    gpu_milli: int
    mig_profile: str | None
    gpu_models: tuple[str, ...]
    placement: TaskPlacement | None
    simulated: bool
    handle: Mapping[str, object] | None
    exit_code: int | None
    reason: str | None
    message: str | None
    not_before: float | None
    started_at: float | None
    finished_at: float | None
    #: The task's last preemption: beneficiary, grace_s, outcome ("acknowledged" / "timeout" /
    #: "not_started"), lost_gpu_s, signalled/ended times (``None``: never preempted).
    preemption: Mapping[str, object] | None = None
    #: Wall-clock time of the last checkpoint the running task reported (``None``: none).
    checkpointed_at: float | None = None


@dataclass(frozen=True)
class Workload:
    """A workload as stored: its spec plus observed status."""

    id: str
    project: str
    org: str
    name: str
    kind: str
    spec: WorkloadSpec
    phase: Phase
    priority: int
    priority_class: str
    preemptible: bool
    generation: int
    cancel_requested: bool
    pending_reason: PendingReason | None
    message: str | None
    submitted_by: str
    submitted_at: float
    admitted_at: float | None
    started_at: float | None
    finished_at: float | None
    tasks: tuple[Task, ...] = ()
    project_id: int = 0


@dataclass(frozen=True)
class Event:
    """Something that happened to a workload or host (``Normal`` or ``Warning``)."""

    id: int
    at: float
    type: str
    reason: str
    message: str
    project: str | None = None
    workload_id: str | None = None
    host: str | None = None
    task_index: int | None = None
