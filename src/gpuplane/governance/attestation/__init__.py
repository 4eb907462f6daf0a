"""Attestation verifiers: appraise evidence from confidential-computing hardware.

``VERIFIERS`` maps each evidence kind to its verifier; ``get_verifier`` looks one
up. The vocabulary (Evidence, AppraisalPolicy, Appraisal, EAR) is in ``base``.
"""

from __future__ import annotations

from gpuplane.domain.errors import FieldError, GpuplaneError
from gpuplane.governance.attestation.base import (
    Appraisal,
    AppraisalPolicy,
    Evidence,
    Verifier,
    VerifierId,
)
from gpuplane.governance.attestation.nvidia import NvidiaVerifier
from gpuplane.governance.attestation.snp import SnpVerifier
from gpuplane.governance.attestation.software import SoftwareVerifier
from gpuplane.governance.attestation.tdx import TdxVerifier

VERIFIERS: dict[str, Verifier] = {
    "sev-snp": SnpVerifier(),
    "tdx": TdxVerifier(),
    "nvidia-cc": NvidiaVerifier(),
    "software": SoftwareVerifier(),
}


def get_verifier(kind: str) -> Verifier:
    """The verifier for ``kind``; GpuplaneError listing the valid kinds otherwise."""
    try:
        return VERIFIERS[kind]
    except KeyError:
        valid = ", ".join(VERIFIERS)
        raise GpuplaneError(
            code="gpuplane.attestation.unknown_kind",
            detail=f"no verifier for evidence kind {kind!r}; valid kinds: {valid}",
            errors=[FieldError(loc="kind", msg=f"{kind!r} is not one of {valid}")],
        ) from None


__all__ = ["VERIFIERS", "Appraisal", "AppraisalPolicy", "Evidence", "Verifier", "VerifierId",
           "get_verifier"]
