"""Appraising a registered host's evidence under the operator's attestation policy.

The policy document (``governance/policies.AttestationPolicy``, set through
``PUT /v1/policies/attestation``) is turned into the verifiers' ``AppraisalPolicy`` for the
evidence's kind; the nonce must be one gpuplane issued to this host and not used before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpuplane import __version__
from gpuplane.governance.attestation import AppraisalPolicy, Evidence, VerifierId, get_verifier
from gpuplane.governance.policies import AttestationPolicy

VERIFIER_ID = VerifierId(build=f"gpuplane {__version__}", developer="https://gpuplane.dev")


@dataclass(frozen=True)
class HostAppraisal:
    """What is stored and audited of one appraisal (times are unix seconds)."""

    passed: bool
    status: str
    reasons: tuple[str, ...]
    claims: dict[str, Any] = field(default_factory=dict)
    ear: dict[str, Any] = field(default_factory=dict)
    expires_at: float = 0.0


def appraisal_policy(policy: AttestationPolicy, kind: str) -> AppraisalPolicy:
    """The verifiers' policy for ``kind`` (ValueError naming the field if unusable)."""
    return AppraisalPolicy(
        name="attestation", allowed_measurements=tuple(policy.measurements.get(kind, ())),
        snp_min_tcb=dict(policy.min_tcb), tdx_accepted_statuses=tuple(policy.tdx_statuses),
        debug_allowed=policy.debug_allowed, result_lifetime_s=int(policy.lifetime_s),
        allow_software=policy.allow_software,
        trusted_roots={k: tuple(p.encode() for p in pems) for k, pems in policy.roots.items()})


def appraise_for_host(kind: str, evidence: bytes, certificates: list[bytes],
                      collateral: str | None, nonce_hex: str, policy: AttestationPolicy,
                      now: datetime, nonce_issued: bool) -> HostAppraisal:
    """Appraise; a nonce gpuplane did not issue to this host (or that expired, or was used)
    fails without looking further: the evidence could be a replay."""
    if not nonce_issued:
        return HostAppraisal(False, "contraindicated", ("nonce.unknown",),
                             expires_at=now.timestamp())
    appraisal = get_verifier(kind).appraise(
        Evidence(kind, evidence, tuple(certificates), collateral, bytes.fromhex(nonce_hex)),
        appraisal_policy(policy, kind), now)
    return HostAppraisal(appraisal.passed, appraisal.status, tuple(appraisal.reasons),
                         appraisal.claims, appraisal.to_ear(VERIFIER_ID),
                         appraisal.expires_at.timestamp())
