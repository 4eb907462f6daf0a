"""Validated inputs of the use-cases (what a caller asks for). Unknown fields are rejected.

The REST API takes these as request bodies; ``gpuplane up`` builds them from YAML (the demo
fleet). Responses are shaped in ``api/schemas.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gpuplane.domain import validation
from gpuplane.domain.workloads import MIG_PROFILE_RE, NAME_RE, parse_memory_mib

#: Upper bound of every generation, id and cursor the API takes: it fits a signed 64-bit column
#: with room to spare (beyond it the database would overflow: a 500, not a 422).
MAX_GENERATION = 2**62
HOST_NAME_RE = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
JURISDICTION_RE = r"^[A-Z]{2}(/[A-Z]{2})?$"
Label = dict[Annotated[str, Field(min_length=1, max_length=128)],
             Annotated[str, Field(max_length=256)]]


class _Spec(BaseModel):
    """Unknown fields and control characters in any string are refused
    (``domain/validation.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: object, info: ValidationInfo) -> object:
        problems = validation.text_problems(value)
        if problems:
            raise ValueError("; ".join(problems[:3]))
        return value


class SiteSpec(_Spec):
    name: str = Field(pattern=NAME_RE)
    jurisdiction: str = Field("", description="ISO country (and region), e.g. EU/DE, CH.",
                              pattern=r"^$|^[A-Z]{2}(/[A-Z]{2})?$")
    region: str = Field("", max_length=63)
    provider: str = Field("", max_length=128)
    labels: Label = Field(default_factory=dict, max_length=64)


class MigInstanceSpec(_Spec):
    profile: str = Field(max_length=32)
    start: int = Field(0, ge=0, le=7)

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if not MIG_PROFILE_RE.match(v):
            raise ValueError(f"{v!r} is not a MIG profile name such as '3g.40gb'")
        return v


class GpuSpec(_Spec):
    index: int = Field(ge=0, le=63)
    model: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    memory_mib: int = Field(ge=1, le=1_048_576)
    numa: int = Field(0, ge=0, le=63)
    nvlink_domain: str | None = Field(None, max_length=64)
    mode: Literal["whole", "shared", "mig"] = "whole"
    mig_layout: list[MigInstanceSpec] | None = Field(None, max_length=7)
    uuid: str | None = Field(None, max_length=128)

    @model_validator(mode="after")
    def _mig(self) -> GpuSpec:
        if self.mig_layout is not None and self.mode != "mig":
            raise ValueError("mig_layout needs mode: mig")
        return self


class Taint(_Spec):
    key: str = Field(min_length=1, max_length=128)
    value: str | None = Field(None, max_length=256)
    effect: Literal["NoSchedule", "PreferNoSchedule"] = "NoSchedule"


class HostSpec(_Spec):
    name: str = Field(pattern=HOST_NAME_RE)
    site: str = Field(pattern=NAME_RE)
    cpu: float = Field(gt=0, le=4096, description="CPU cores.")
    memory: int | str = Field(description="MiB, or '512Gi'.")
    gpus: list[GpuSpec] = Field(default_factory=list, max_length=64)
    rack: str = Field("", max_length=63)
    labels: Label = Field(default_factory=dict, max_length=64)
    taints: list[Taint] = Field(default_factory=list, max_length=32)
    tee: Literal["sev-snp", "tdx"] | None = None
    driver: Literal["local", "sim", "agent"] = "sim"
    simulated: bool = Field(True, description="Tasks run on the simulator, not real hardware.")
    declared: bool = Field(False, description="GPUs declared in config, not discovered.")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: int | str) -> int | str:
        if parse_memory_mib(v) <= 0:
            raise ValueError("memory must be positive")
        return v

    @model_validator(mode="after")
    def _indices(self) -> HostSpec:
        idx = [g.index for g in self.gpus]
        if len(set(idx)) != len(idx):
            raise ValueError("GPU indices must be unique on a host")
        return self


class HostStateSpec(_Spec):
    state: Literal["ready", "cordoned", "draining", "down"]
    generation: int | None = Field(None, ge=1, le=MAX_GENERATION,
                                   description="Guard: fail if the host changed.")


class OrganisationSpec(_Spec):
    name: str = Field(pattern=NAME_RE)
    display_name: str = Field("", max_length=256)


class ProjectSpec(_Spec):
    name: str = Field(pattern=NAME_RE)
    organisation: str = Field(pattern=NAME_RE)
    display_name: str = Field("", max_length=256)
    weight: float = Field(1.0, gt=0, le=1000, description="Fair-share weight.")
    cohort: str | None = Field(None, pattern=NAME_RE,
                               description="Projects of one cohort lend and borrow quota.")
    classification: str | None = Field(
        None, pattern=NAME_RE, description="Data classification of the project's workloads "
        "(the residency policy says where each may run); a workload may name its own.")


class ProjectUpdate(_Spec):
    display_name: str | None = Field(None, max_length=256)
    weight: float | None = Field(None, gt=0, le=1000)
    cohort: str | None = Field(None, pattern=NAME_RE)
    classification: str | None = Field(None, pattern=NAME_RE)
    generation: int | None = Field(None, ge=1, le=MAX_GENERATION)


class UserSpec(_Spec):
    name: str = Field(pattern=NAME_RE)
    email: str = Field("", max_length=256)
    organisation: str | None = Field(None, pattern=NAME_RE)


class RoleBindingSpec(_Spec):
    user: str = Field(pattern=NAME_RE)
    role: Literal["admin", "operator", "member", "viewer", "auditor"]
    scope: Literal["global", "organisation", "project"]
    scope_name: str | None = Field(None, pattern=NAME_RE,
                                   description="Organisation or project name; none for global.")

    @model_validator(mode="after")
    def _scope(self) -> RoleBindingSpec:
        if (self.scope == "global") != (self.scope_name is None):
            raise ValueError("scope_name is required for organisation/project scope and "
                             "must be absent for global")
        return self


class TokenSpec(_Spec):
    name: str = Field("token", pattern=NAME_RE)
    user: str | None = Field(None, pattern=NAME_RE, description="Default: yourself.")
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86_400)


class QuotaSpec(_Spec):
    """Amounts in GPUs, CPU cores or MiB (3 decimals kept)."""

    project: str = Field(pattern=NAME_RE)
    resource: Literal["gpu", "cpu", "memory"]
    flavor: str = Field("*", max_length=64, pattern=r"^\*$|^[A-Za-z0-9][A-Za-z0-9._+-]*$",
                        description="GPU model, or * for any.")
    guaranteed: float = Field(ge=0, le=1e9)
    borrowing_limit: float | None = Field(None, ge=0, le=1e9,
                                          description="None: may borrow without limit.")
    lending_limit: float | None = Field(None, ge=0, le=1e9,
                                        description="None: may lend all unused guarantee.")
    generation: int | None = Field(None, ge=1, le=MAX_GENERATION,
                                   description="Guard: fail if the quota changed.")

    @model_validator(mode="after")
    def _lend(self) -> QuotaSpec:
        if self.lending_limit is not None and self.lending_limit > self.guaranteed:
            raise ValueError("lending_limit cannot exceed guaranteed")
        return self


class PriorityClassSpec(_Spec):
    name: str = Field(pattern=NAME_RE)
    value: int = Field(ge=0, le=1_000_000)
    preemptible: bool = False
    default: bool = False
    description: str = Field("", max_length=512)


def to_milli(value: float | None) -> int | None:
    return None if value is None else int(round(value * 1000))


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
