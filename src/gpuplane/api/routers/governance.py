"""/v1/policies and /v1/hosts/{host}/attestation: governance policies and host attestation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, RootModel

from gpuplane.api.deps import Svc, Who
from gpuplane.api.problems import responses
from gpuplane.api.routers.inventory import HostName
from gpuplane.domain.workloads import NAME_RE
from gpuplane.store import records as r

router = APIRouter(prefix="/v1", tags=["governance"], responses=responses(401, 403, 422))

PolicyName = Annotated[str, Path(pattern=NAME_RE, max_length=63)]


class PolicyOut(BaseModel):
    name: str
    data: dict[str, Any]
    version: int = Field(description="0: not set; the defaults shown are in force.")
    hash: str = Field(description="SHA-256 of the canonical JSON of data.")
    updated_by: str
    updated_at: float

    @classmethod
    def of(cls, d: r.PolicyDocument) -> PolicyOut:
        return cls(name=d.name, data=dict(d.data), version=d.version, hash=d.hash,
                   updated_by=d.updated_by, updated_at=d.updated_at)


class PolicyDocumentIn(RootModel[dict[str, Any]]):
    """A policy document; its shape depends on the policy (docs/governance.md)."""


class ChallengeOut(BaseModel):
    nonce: str = Field(description="Hex; bind it into the evidence (REPORT_DATA, SPDM nonce).")
    expires_at: float


class EvidenceIn(BaseModel):
    model_config = {"extra": "forbid"}
    kind: Literal["sev-snp", "tdx", "nvidia-cc", "software"]
    nonce: str = Field(pattern=r"^([0-9a-f]{2}){1,64}$", description="From the challenge (hex).")
    evidence: str = Field(max_length=700_000, description="Base64 of the raw evidence.")
    certificates: list[Annotated[str, Field(max_length=64_000)]] = Field(
        default_factory=list, max_length=16,
        description="Base64 of PEM or DER certificates (SNP: VCEK; NVIDIA: the chain).")
    collateral: str | None = Field(None, max_length=400_000,
                                   description="TDX: the quote collateral JSON.")


class AttestationOut(BaseModel):
    host: str
    kind: str
    passed: bool
    status: str
    reasons: list[str]
    claims: dict[str, Any]
    ear: dict[str, Any]
    appraised_at: float
    expires_at: float

    @classmethod
    def of(cls, a: r.AttestationResult) -> AttestationOut:
        return cls(host=a.host, kind=a.kind, passed=a.passed, status=a.status,
                   reasons=list(a.reasons), claims=dict(a.claims), ear=dict(a.ear),
                   appraised_at=a.appraised_at, expires_at=a.expires_at)


@router.get("/policies", response_model=list[PolicyOut])
def list_policies(svc: Svc, who: Who) -> list[PolicyOut]:
    """The governance policies that are set (residency, attestation, cost-model)."""
    return [PolicyOut.of(d) for d in svc.governance.list_policies(who)]


@router.get("/policies/{name}", response_model=PolicyOut, responses=responses(404))
def get_policy(name: PolicyName, svc: Svc, who: Who) -> PolicyOut:
    return PolicyOut.of(svc.governance.get_policy(who, name))


@router.put("/policies/{name}", response_model=PolicyOut, responses=responses(404))
def set_policy(name: PolicyName, body: PolicyDocumentIn, svc: Svc, who: Who) -> PolicyOut:
    """Replace a policy (global admin). Audit entries from now on carry the new policy
    set's hash."""
    return PolicyOut.of(svc.governance.set_policy(who, name, body.root))


@router.post("/hosts/{host}/attestation/challenge", response_model=ChallengeOut,
             responses=responses(404))
def challenge(host: HostName, svc: Svc, who: Who) -> ChallengeOut:
    """A nonce for the host's next evidence (global operator or admin; a host agent's role)."""
    nonce, expires_at = svc.governance.challenge(who, host)
    return ChallengeOut(nonce=nonce, expires_at=expires_at)


@router.post("/hosts/{host}/attestation", response_model=AttestationOut,
             responses=responses(404))
def submit_evidence(host: HostName, body: EvidenceIn, svc: Svc, who: Who) -> AttestationOut:
    """Appraise evidence bound to a nonce from the challenge; the result (passing or not,
    with reasons and an EAR claims set) is stored and audited."""
    return AttestationOut.of(svc.governance.submit_evidence(
        who, host, body.kind, body.nonce, body.evidence, body.certificates, body.collateral))


@router.get("/hosts/{host}/attestation", response_model=list[AttestationOut],
            responses=responses(404))
def attestation_history(host: HostName, svc: Svc, who: Who) -> list[AttestationOut]:
    """The host's latest appraisals, newest first."""
    return [AttestationOut.of(a) for a in svc.governance.attestation_results(who, host)]
