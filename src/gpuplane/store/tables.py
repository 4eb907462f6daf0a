"""SQLAlchemy 2 tables (``*Row``). Only ``store/`` sees these; repositories return domain objects.

Times are float seconds since the epoch (UTC), the same number the clock passed to services
gives, so SQLite and PostgreSQL behave identically. Amounts are integers in base units
(milli-CPU, MiB, milli-GPU). Rows that race carry a ``generation`` (STYLE habit 7).
The schema is created by Alembic migrations (``store/alembic``), never by ``create_all`` outside
tests that compare the two.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, Float, ForeignKey, Integer, MetaData, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class SiteRow(Base):
    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    jurisdiction: Mapped[str] = mapped_column(String(16), default="")
    region: Mapped[str] = mapped_column(String(63), default="")
    provider: Mapped[str] = mapped_column(String(128), default="")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float)


class HostRow(Base):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"), index=True)
    cpu_milli: Mapped[int] = mapped_column(BigInteger)
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    rack: Mapped[str] = mapped_column(String(63), default="")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    taints: Mapped[list[Any]] = mapped_column(default=list)
    tee: Mapped[str | None] = mapped_column(String(32), nullable=True)
    driver: Mapped[str] = mapped_column(String(32), default="sim")
    simulated: Mapped[bool] = mapped_column(Boolean, default=True)
    declared: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="ready")
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float)


class GpuRow(Base):
    __tablename__ = "gpus"
    __table_args__ = (UniqueConstraint("host_id", "idx"),)
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(64), index=True)
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    numa: Mapped[int] = mapped_column(Integer, default=0)
    nvlink_domain: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mode: Mapped[str] = mapped_column(String(16), default="whole")
    mig_layout: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    uuid: Mapped[str | None] = mapped_column(String(128), nullable=True)


class OrganisationRow(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float)


class ProjectRow(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"),
                                        index=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    cohort: Mapped[str | None] = mapped_column(String(63), nullable=True)
    classification: Mapped[str | None] = mapped_column(String(63), nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(Float)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    email: Mapped[str] = mapped_column(String(256), default="")
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"),
                                               nullable=True, index=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class IdentityLinkRow(Base):
    """A gpuplane organisation, project or user created for (or adopted by) an external
    identity provider's domain, project or user. Written only by that provider's mapping
    (service/keystone.py), never by a tenant: the link is what a token is mapped by."""

    __tablename__ = "identity_links"
    __table_args__ = (UniqueConstraint("provider", "kind", "external_id"),)
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))  # keystone
    kind: Mapped[str] = mapped_column(String(16))  # organisation | project | user
    external_id: Mapped[str] = mapped_column(String(255))
    object_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[float] = mapped_column(Float)


class RoleBindingRow(Base):
    __tablename__ = "role_bindings"
    __table_args__ = (UniqueConstraint("user_id", "role", "scope_kind", "scope_id"),)
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    scope_kind: Mapped[str] = mapped_column(String(16))  # global | organisation | project
    scope_id: Mapped[int] = mapped_column(BigInteger, default=0)  # 0 for global
    created_at: Mapped[float] = mapped_column(Float)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class QuotaRow(Base):
    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("project_id", "resource", "flavor"),)
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    resource: Mapped[str] = mapped_column(String(16))  # gpu | cpu | memory
    flavor: Mapped[str] = mapped_column(String(64), default="*")  # GPU model or *
    guaranteed_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    borrowing_limit_milli: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lending_limit_milli: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[float] = mapped_column(Float)


class PriorityClassRow(Base):
    __tablename__ = "priority_classes"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    value: Mapped[int] = mapped_column(Integer)
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[float] = mapped_column(Float)


class WorkloadRow(Base):
    __tablename__ = "workloads"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(40), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column()
    phase: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer)
    priority_class: Mapped[str] = mapped_column(String(63))
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pending_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_by: Mapped[str] = mapped_column(String(63))
    submitted_at: Mapped[float] = mapped_column(Float)
    admitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("workload_pk", "idx"),)
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    workload_pk: Mapped[int] = mapped_column(ForeignKey("workloads.pk", ondelete="CASCADE"),
                                             index=True)
    idx: Mapped[int] = mapped_column(Integer)
    group_name: Mapped[str] = mapped_column(String(63))
    replica: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cpu_milli: Mapped[int] = mapped_column(BigInteger)
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    gpus: Mapped[int] = mapped_column(Integer)
    gpu_milli: Mapped[int] = mapped_column(Integer)
    mig_profile: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gpu_models: Mapped[list[Any]] = mapped_column(default=list)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"),
                                                nullable=True, index=True)
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    preemption: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    checkpointed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    not_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    type: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    project_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    workload_pk: Mapped[int | None] = mapped_column(
        ForeignKey("workloads.pk", ondelete="CASCADE"), nullable=True, index=True)
    host_name: Mapped[str | None] = mapped_column(String(253), nullable=True)
    task_idx: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UsageRow(Base):
    """One finished task attempt (accounting): who used what, where, from when to when."""

    __tablename__ = "usage_records"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(BigInteger, index=True)
    workload_uid: Mapped[str] = mapped_column(String(40))
    task_idx: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    host_name: Mapped[str] = mapped_column(String(253))
    gpu_model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    gpu_milli: Mapped[int] = mapped_column(BigInteger)
    cpu_milli: Mapped[int] = mapped_column(BigInteger)
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float] = mapped_column(Float, index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    lost_gpu_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # which devices, and how much of each: {"gpus": [...], "gpu_milli": per-GPU milli,
    # "mig": [{"gpu": i, "profile": "1g.10gb", "slices": n}]} (chargeback by fraction)
    placement: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)


class AuditRow(Base):
    """Append-only; each entry's ``hash`` covers its content and the previous entry's hash."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_kind: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(253))
    project_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    org_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column()
    policy_hash: Mapped[str] = mapped_column(String(64), default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """One row (id=1): the chain head; appenders lock it by updating it first. ``origin``: the
    log's name in its signed checkpoints (kept across an export/import); ``public_keys``: the
    keys that signed them (a server-side convenience: an auditor verifies with the key they
    kept, ``gpuplane audit key``)."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(253), default="")
    policy_hash: Mapped[str] = mapped_column(String(64), default="")  # of the policies in force
    public_keys: Mapped[list[Any]] = mapped_column(default=list)  # PEMs that signed, oldest first


class AuditCheckpointRow(Base):
    """A signed checkpoint of the audit log (C2SP tlog-checkpoint as a signed note), with the
    witnesses' cosignatures and an RFC 3161 timestamp token when anchoring is configured."""

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(16))
    timestamp_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class PolicyDocumentRow(Base):
    """A named governance policy (residency, attestation, cost model): the current version.
    ``hash`` is the SHA-256 of its canonical JSON; audit entries carry the hash of the policy
    set that allowed them."""

    __tablename__ = "policy_documents"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1)
    hash: Mapped[str] = mapped_column(String(64))
    updated_by: Mapped[str] = mapped_column(String(63))
    updated_at: Mapped[float] = mapped_column(Float)


class AttestationChallengeRow(Base):
    """A nonce gpuplane chose for one host's next evidence; used once, expires."""

    __tablename__ = "attestation_challenges"
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    host_name: Mapped[str] = mapped_column(String(253), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class AttestationResultRow(Base):
    """One appraisal of one host's evidence (RFC 9334 attestation result; ``ear`` is the EAR
    claims set). The newest row per (host, kind) is the one placement looks at."""

    __tablename__ = "attestation_results"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    host_name: Mapped[str] = mapped_column(String(253), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    passed: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    claims: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ear: Mapped[dict[str, Any]] = mapped_column(default=dict)
    appraised_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class LeaseRow(Base):
    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(253), nullable=True)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)


class SchedulerStateRow(Base):
    """A named JSON document of the scheduler's memory (fair-share usage history, a placement
    workload model ...), written by the lease holder inside its fenced transactions, read by
    the next one when it takes the lease. ``epoch``: the lease epoch that wrote it."""

    __tablename__ = "scheduler_state"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column()
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[float] = mapped_column(Float)
