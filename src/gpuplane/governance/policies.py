"""Governance policies (no I/O): residency by data classification, attestation gating.

Policies are named JSON documents (``residency``, ``attestation``, ``cost-model``) that a
global admin sets (``PUT /v1/policies/{name}``); each version has a hash, and every audit
entry carries ``policy_set_hash`` of the documents in force when it was written, so an
auditor can tell which rules allowed a decision.

Residency: a site's jurisdiction (``EU/DE``) is set by a global admin, never by a host. A
workload carries a data classification (``spec.residency.classification``, else its project's);
the ``residency`` policy maps each classification to the jurisdictions it may be processed in
(a prefix allows its parts: ``EU`` allows ``EU/DE``). The workload's own
``residency.jurisdictions`` narrow that further. Placement is filtered to what both allow.

Attestation: a ``confidential`` workload goes only to a host whose CPU evidence (``sev-snp``
or ``tdx``) and, when the host has GPUs, GPU evidence (``nvidia-cc``) were appraised as
passing and have not expired; it starts only if that appraisal is younger than ``fresh_s``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.governance.accounting import CostModel

JURISDICTION = r"^[A-Z]{2}(/[A-Z]{2})?$"
CPU_KINDS = ("sev-snp", "tdx")
GPU_KINDS = ("nvidia-cc",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassificationRule(_Strict):
    jurisdictions: list[Annotated[str, Field(pattern=JURISDICTION)]] = Field(
        min_length=1, max_length=64)
    description: str = Field("", max_length=512)


class ResidencyPolicy(_Strict):
    """``classifications``: name -> where data of that class may be processed."""

    classifications: dict[str, ClassificationRule] = Field(default_factory=dict, max_length=256)


class AttestationPolicy(_Strict):
    """How evidence is appraised and what a confidential workload needs.

    ``roots``: trusted vendor roots per kind as PEM (AMD ARK(s) for ``sev-snp``, NVIDIA's device
    root for ``nvidia-cc``; for ``tdx`` none = Intel's SGX root built into dcap-qvl). ``measurements``: allowed
    launch measurements (hex) per kind, empty = any. ``min_tcb``: minimum SNP TCB components
    (``bootloader``, ``tee``, ``snp``, ``microcode``). ``tdx_statuses``: accepted TCB statuses.
    ``lifetime_s``: how long a passing result stays valid. ``fresh_s``: a confidential task
    starts only on an appraisal younger than this. ``on_expiry``: what happens to running
    confidential work whose host's result expires or fails: ``evict`` (stopped and requeued)
    or ``flag`` (an event and an audit entry, it keeps running). ``allow_software``: accept the
    development-only ``software`` verifier (insecure; never in production)."""

    roots: dict[Literal["sev-snp", "tdx", "nvidia-cc"], list[str]] = Field(default_factory=dict)
    measurements: dict[Literal["sev-snp", "tdx", "nvidia-cc"], list[str]] = Field(
        default_factory=dict)
    min_tcb: dict[Literal["bootloader", "tee", "snp", "microcode"], int] = Field(
        default_factory=dict)
    tdx_statuses: list[str] = Field(default_factory=lambda: ["UpToDate"], min_length=1)
    debug_allowed: bool = False
    lifetime_s: float = Field(3600.0, gt=0, le=30 * 86_400)
    fresh_s: float = Field(900.0, gt=0, le=30 * 86_400)
    nonce_ttl_s: float = Field(300.0, gt=0, le=86_400)
    on_expiry: Literal["evict", "flag"] = "flag"
    allow_software: bool = False


class WitnessedLog(_Strict):
    origin: str = Field(min_length=1, max_length=253)
    keys: list[str] = Field(min_length=1, max_length=8,
                            description="The log's verifier keys (name+keyid+base64).")


class WitnessPolicy(_Strict):
    """The logs this installation witnesses (``POST /witness/add-checkpoint``)."""

    logs: list[WitnessedLog] = Field(default_factory=list, max_length=256)


POLICY_MODELS: dict[str, type[BaseModel]] = {
    "residency": ResidencyPolicy,
    "attestation": AttestationPolicy,
    "witness": WitnessPolicy,
    "cost-model": CostModel,
}


def parse_policy(name: str, data: Mapping[str, Any]) -> BaseModel:
    """Validate a policy document; InvalidInput naming each bad field."""
    model = POLICY_MODELS.get(name)
    if model is None:
        raise InvalidInput(f"unknown policy {name!r}", [FieldError(
            "name", f"must be one of {', '.join(sorted(POLICY_MODELS))}")],
            code="gpuplane.policy.unknown")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidInput(f"the {name} policy is not valid", [
            FieldError(".".join(str(p) for p in e["loc"]) or name, e["msg"])
            for e in exc.errors()]) from None


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_hash(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(dict(data))).hexdigest()


def policy_set_hash(hashes: Mapping[str, str]) -> str:
    """The hash of the policies in force (name -> document hash); "" when none is set."""
    return hashlib.sha256(canonical(dict(hashes))).hexdigest() if hashes else ""


# -- residency ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResidencyDecision:
    """Where a workload may run: ``jurisdictions`` (``None`` = anywhere), or ``denied`` with a
    pending reason ``code`` and ``message`` naming the rule."""

    jurisdictions: tuple[str, ...] | None
    rule: str = ""
    code: str = ""
    message: str = ""

    @property
    def denied(self) -> bool:
        return bool(self.code)


def _within(j: str, allowed: str) -> bool:
    return j == allowed or j.startswith(allowed + "/")


def intersect(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    """Jurisdictions allowed by both lists (the narrower of each related pair)."""
    out: list[str] = []
    for x in a:
        for y in b:
            j = x if _within(x, y) else y if _within(y, x) else None
            if j is not None and j not in out:
                out.append(j)
    return tuple(out)


def residency(spec_jurisdictions: Sequence[str], classification: str | None,
              policy: ResidencyPolicy | None) -> ResidencyDecision:
    """Combine a workload's own jurisdictions with its classification's rule."""
    own = tuple(spec_jurisdictions)
    if not classification:
        return ResidencyDecision(own or None, "workload residency" if own else "")
    rule = (policy.classifications.get(classification) if policy is not None else None)
    if rule is None:
        return ResidencyDecision(None, code="residency.unknown_classification", message=(
            f"data classification {classification!r} has no rule in the residency policy; "
            "it runs nowhere until a global admin adds one"))
    allowed = tuple(rule.jurisdictions)
    both = intersect(own, allowed) if own else allowed
    name = f"classification {classification!r} -> {', '.join(allowed)}"
    if not both:
        return ResidencyDecision(None, name, "residency.no_allowed_jurisdiction", (
            f"the workload asks for {', '.join(own)} but {name} allows none of them"))
    return ResidencyDecision(both, name)


# -- attestation gating ---------------------------------------------------------------------------
def attested_hosts(results: Mapping[tuple[str, str], Any], gpu_hosts: Iterable[str],
                   hosts: Iterable[str], policy: AttestationPolicy | None, now: float,
                   max_age_s: float | None = None) -> set[str]:
    """Hosts a confidential workload may use at ``now``: a valid CPU result and, for hosts with
    GPUs, a valid GPU result (``results``: (host, kind) -> newest ``AttestationResult``).
    ``max_age_s``: also require the results to be at most that old (a start's freshness).
    The ``software`` kind counts only where the policy allows it."""
    allow_sw = policy is not None and policy.allow_software
    gpu_hosts = set(gpu_hosts)

    def ok(host: str, kinds: Sequence[str]) -> bool:
        for kind in (*kinds, *(("software",) if allow_sw else ())):
            r = results.get((host, kind))
            if r is not None and r.valid_at(now) and (
                    max_age_s is None or now - r.appraised_at <= max_age_s):
                return True
        return False

    return {h for h in hosts if ok(h, CPU_KINDS) and (h not in gpu_hosts or ok(h, GPU_KINDS))}
