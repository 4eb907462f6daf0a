"""Response bodies (``*Out``) of the REST API, built from service results.

Request bodies are the service specs (``service/specs.py``) and ``WorkloadSpec``; they reject
unknown fields. Lists are pages: ``{"items": [...], "next_cursor": "..." | null}``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Generic, TypeVar, get_type_hints

from pydantic import BaseModel, Field, create_model

from gpuplane.domain.workloads import Event, Task, Workload, WorkloadSpec
from gpuplane.store import records as r

T = TypeVar("T")


def fields_at(model: Any, path: Sequence[str | int]) -> list[str] | None:
    """The fields (as a request spells them) of the object at ``path`` (``["tasks", 0,
    "resources"]``) inside the request body ``model``; None where the path leads to no model
    (a free-form mapping such as ``labels``). For "did you mean" on an unknown field."""
    cur: Any = model
    for part in path:
        cur = _bare(cur)
        if isinstance(part, int):
            args = typing.get_args(cur)
            cur = args[0] if typing.get_origin(cur) in (list, tuple, Sequence) and args else None
        elif isinstance(cur, type) and issubclass(cur, BaseModel):
            f = next((f for n, f in cur.model_fields.items() if part in (n, f.alias)), None)
            cur = None if f is None else f.annotation
        elif typing.get_origin(cur) is dict and len(typing.get_args(cur)) == 2:
            cur = typing.get_args(cur)[1]
        else:
            return None
        if cur is None:
            return None
    cur = _bare(cur)
    if not (isinstance(cur, type) and issubclass(cur, BaseModel)):
        return None
    return [f.alias or n for n, f in cur.model_fields.items()]


def _bare(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X`` (the first non-None member of a union)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = next((a for a in members if isinstance(a, type) and issubclass(a, BaseModel)),
                      members[0] if members else None)
        else:
            return tp


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page.")


class SiteOut(BaseModel):
    name: str
    jurisdiction: str
    region: str
    provider: str
    labels: dict[str, str]
    generation: int
    created_at: float

    @classmethod
    def of(cls, s: r.Site) -> SiteOut:
        return cls(name=s.name, jurisdiction=s.jurisdiction, region=s.region,
                   provider=s.provider, labels=dict(s.labels), generation=s.generation,
                   created_at=s.created_at)


class GpuOut(BaseModel):
    index: int
    model: str
    memory_mib: int
    numa: int
    nvlink_domain: str | None
    mode: str
    mig_layout: list[dict[str, Any]] | None
    uuid: str | None


class GpuListItemOut(GpuOut):
    host: str
    site: str
    jurisdiction: str
    host_state: str
    simulated: bool
    allocated: float = Field(description="GPUs' worth in use by tasks here (0..1).")

    @classmethod
    def of(cls, item: tuple[r.HostRecord, r.Gpu, int]) -> GpuListItemOut:
        h, g, used = item
        return cls(index=g.index, model=g.model, memory_mib=g.memory_mib, numa=g.numa,
                   nvlink_domain=g.nvlink_domain, mode=g.mode,
                   mig_layout=[dict(m) for m in g.mig_layout] if g.mig_layout is not None
                   else None, uuid=g.uuid, host=h.name, site=h.site,
                   jurisdiction=h.jurisdiction, host_state=h.state, simulated=h.simulated,
                   allocated=used / 1000)


class HostOut(BaseModel):
    name: str
    site: str
    jurisdiction: str
    cpu: float
    memory_mib: int
    rack: str
    labels: dict[str, str]
    taints: list[dict[str, Any]]
    tee: str | None
    driver: str
    simulated: bool = Field(description="Tasks on this host run on the simulator.")
    declared: bool = Field(description="GPUs declared in configuration, not discovered.")
    state: str
    heartbeat_at: float | None
    generation: int
    gpus: list[GpuOut]

    @classmethod
    def of(cls, h: r.HostRecord) -> HostOut:
        return cls(name=h.name, site=h.site, jurisdiction=h.jurisdiction, cpu=h.cpu_milli / 1000,
                   memory_mib=h.memory_mib, rack=h.rack, labels=dict(h.labels),
                   taints=[dict(t) for t in h.taints], tee=h.tee, driver=h.driver,
                   simulated=h.simulated, declared=h.declared, state=h.state,
                   heartbeat_at=h.heartbeat_at, generation=h.generation,
                   gpus=[GpuOut(index=g.index, model=g.model, memory_mib=g.memory_mib,
                                numa=g.numa, nvlink_domain=g.nvlink_domain, mode=g.mode,
                                mig_layout=[dict(m) for m in g.mig_layout]
                                if g.mig_layout is not None else None, uuid=g.uuid)
                         for g in h.gpus])


class OrganisationOut(BaseModel):
    name: str
    display_name: str
    generation: int
    created_at: float

    @classmethod
    def of(cls, o: r.Organisation) -> OrganisationOut:
        return cls(name=o.name, display_name=o.display_name, generation=o.generation,
                   created_at=o.created_at)


class ProjectOut(BaseModel):
    name: str
    organisation: str
    display_name: str
    weight: float
    cohort: str | None
    classification: str | None
    generation: int
    created_at: float

    @classmethod
    def of(cls, p: r.Project) -> ProjectOut:
        return cls(name=p.name, organisation=p.org, display_name=p.display_name, weight=p.weight,
                   cohort=p.cohort, classification=p.classification, generation=p.generation,
                   created_at=p.created_at)


class RoleBindingOut(BaseModel):
    id: int
    user: str
    role: str
    scope: str
    scope_name: str | None

    @classmethod
    def of(cls, b: r.RoleBinding) -> RoleBindingOut:
        return cls(id=b.id, user=b.user, role=b.role, scope=b.scope_kind,
                   scope_name=b.scope_name or None)


class UserOut(BaseModel):
    name: str
    email: str
    organisation: str | None
    disabled: bool
    created_at: float
    roles: list[RoleBindingOut]

    @classmethod
    def of(cls, u: r.User) -> UserOut:
        return cls(name=u.name, email=u.email, organisation=u.org, disabled=u.disabled,
                   created_at=u.created_at, roles=[RoleBindingOut.of(b) for b in u.roles])


class TokenOut(BaseModel):
    id: int
    user: str
    name: str
    prefix: str = Field(description="First characters of the token, to recognise it.")
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    @classmethod
    def of(cls, t: r.ApiToken) -> TokenOut:
        return cls(id=t.id, user=t.user, name=t.name, prefix=t.prefix, created_at=t.created_at,
                   expires_at=t.expires_at, revoked_at=t.revoked_at, last_used_at=t.last_used_at)


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The bearer token. Shown once; only its hash is stored.")


class QuotaOut(BaseModel):
    id: int
    project: str
    resource: str
    flavor: str
    guaranteed: float
    borrowing_limit: float | None
    lending_limit: float | None
    generation: int
    updated_at: float

    @classmethod
    def of(cls, q: r.Quota) -> QuotaOut:
        def f(v: int | None) -> float | None:
            return None if v is None else v / 1000
        return cls(id=q.id, project=q.project, resource=q.resource, flavor=q.flavor,
                   guaranteed=q.guaranteed_milli / 1000, borrowing_limit=f(q.borrowing_limit_milli),
                   lending_limit=f(q.lending_limit_milli), generation=q.generation,
                   updated_at=q.updated_at)


class PriorityClassOut(BaseModel):
    name: str
    value: int
    preemptible: bool
    default: bool
    description: str

    @classmethod
    def of(cls, p: r.PriorityClass) -> PriorityClassOut:
        return cls(name=p.name, value=p.value, preemptible=p.preemptible, default=p.is_default,
                   description=p.description)


class PlacementOut(BaseModel):
    host: str
    gpu_indices: list[int]
    gpu_milli: int
    mig: list[dict[str, Any]]
    borrowed: bool = Field(False, description=(
        "admitted above its project's guarantee on capacity lent by the cohort: it may be "
        "reclaimed (preempted) when a lender needs its guarantee back"))


class TaskOut(BaseModel):
    index: int
    group: str
    replica: int
    phase: str
    attempt: int
    placement: PlacementOut | None
    simulated: bool
    exit_code: int | None
    reason: str | None
    message: str | None
    not_before: float | None
    started_at: float | None
    finished_at: float | None
    preemption: dict[str, Any] | None = None
    checkpointed_at: float | None = None

    @classmethod
    def of(cls, t: Task) -> TaskOut:
        p = t.placement
        return cls(index=t.index, group=t.group, replica=t.replica, phase=t.phase.value,
                   attempt=t.attempt,
                   placement=None if p is None else PlacementOut(
                       host=p.host, gpu_indices=list(p.gpu_indices), gpu_milli=p.gpu_milli,
                       mig=[dict(m) for m in p.mig], borrowed=p.borrowed),
                   simulated=t.simulated, exit_code=t.exit_code, reason=t.reason,
                   message=t.message, not_before=t.not_before, started_at=t.started_at,
                   finished_at=t.finished_at,
                   preemption=dict(t.preemption) if t.preemption else None,
                   checkpointed_at=t.checkpointed_at)


class PendingReasonOut(BaseModel):
    code: str
    message: str
    detail: dict[str, Any]


class WorkloadStatusOut(BaseModel):
    phase: str
    cancel_requested: bool
    pending_reason: PendingReasonOut | None
    message: str | None
    submitted_at: float
    admitted_at: float | None
    started_at: float | None
    finished_at: float | None
    tasks: list[TaskOut]


class WorkloadOut(BaseModel):
    id: str
    name: str
    project: str
    organisation: str
    kind: str
    priority_class: str
    priority: int
    preemptible: bool
    submitted_by: str
    generation: int
    spec: WorkloadSpec
    status: WorkloadStatusOut

    @classmethod
    def of(cls, w: Workload) -> WorkloadOut:
        pr = w.pending_reason
        return cls(
            id=w.id, name=w.name, project=w.project, organisation=w.org, kind=w.kind,
            priority_class=w.priority_class, priority=w.priority, preemptible=w.preemptible,
            submitted_by=w.submitted_by, generation=w.generation, spec=w.spec,
            status=WorkloadStatusOut(
                phase=w.phase.value, cancel_requested=w.cancel_requested,
                pending_reason=None if pr is None else PendingReasonOut(
                    code=pr.code, message=pr.message, detail=dict(pr.detail)),
                message=w.message, submitted_at=w.submitted_at, admitted_at=w.admitted_at,
                started_at=w.started_at, finished_at=w.finished_at,
                tasks=[TaskOut.of(t) for t in w.tasks]))


class PendingOut(BaseModel):
    workload: str
    phase: str
    pending_tasks: int
    queue_position: int | None = Field(description="1 = next in line; null if not queued.")
    reason: PendingReasonOut | None
    retry_after_s: float | None


class EventOut(BaseModel):
    id: int
    at: float
    type: str
    reason: str
    message: str
    project: str | None
    workload: str | None
    host: str | None
    task_index: int | None

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(id=e.id, at=e.at, type=e.type, reason=e.reason, message=e.message,
                   project=e.project, workload=e.workload_id, host=e.host,
                   task_index=e.task_index)


class UsageBlockOut(BaseModel):
    gpu_hours: float
    cpu_core_hours: float
    memory_gib_hours: float
    gpu_hours_by_model: dict[str, float]
    lost_gpu_hours: float = 0.0   # preempted attempts: GPU-time since their last checkpoint


class UsageNowOut(BaseModel):
    tasks: int
    gpus: float
    cpu_cores: float
    memory_mib: int


class UsageOut(BaseModel):
    project: str
    real: UsageBlockOut
    simulated: UsageBlockOut
    now: UsageNowOut


class _RecordOut(BaseModel):
    """A response body with exactly the fields of a store record; ``of`` copies them."""

    @classmethod
    def of(cls, rec: Any) -> Any:
        return cls(**{name: getattr(rec, name) for name in cls.model_fields})


#: One audit chain entry: the fields of ``store.records.AuditEntry`` (what ``audit verify``
#: hashes), so the API can never drop or add one the chain has.
AuditEntryOut = create_model(
    "AuditEntryOut", __base__=_RecordOut, __module__=__name__,
    **{f.name: (get_type_hints(r.AuditEntry)[f.name], ...) for f in fields(r.AuditEntry)})


class AuditVerifyOut(BaseModel):
    intact: bool
    problems: list[str]


class HealthOut(BaseModel):
    status: str
    database: bool
    version: str
    leader: str | None = None
