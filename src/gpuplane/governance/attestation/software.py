"""A development-only verifier: unsigned JSON evidence, for hosts without a TEE.

Evidence is ``{"nonce": hex, "measurement": hex}`` signed by nothing, so it proves
nothing: any process can write it. It exists so that a laptop or CI run can go
through the same attestation path as real hardware. A policy must opt in
(``allow_software``); even then the result is a "warning", never "affirming", and
its claims say ``insecure``.
"""

from __future__ import annotations

import json
from datetime import datetime

from gpuplane.governance.attestation.base import (
    Appraisal,
    AppraisalPolicy,
    Evidence,
    Finding,
    check_call,
    conclude,
)


class SoftwareVerifier:
    """Verifier for ``software`` evidence (insecure; refused unless the policy allows it)."""

    kind = "software"

    def appraise(self, evidence: Evidence, policy: AppraisalPolicy, now: datetime) -> Appraisal:
        check_call(self.kind, evidence, now)
        if not policy.allow_software:
            return conclude(self.kind, policy, now, [Finding(
                "software.not_allowed", "software evidence proves nothing and the policy "
                "does not allow it (allow_software)")], {}, vector={})
        try:
            doc = json.loads(evidence.raw)
            nonce = bytes.fromhex(doc["nonce"])
            measurement = bytes.fromhex(doc["measurement"])
        except (ValueError, KeyError, TypeError) as exc:
            return conclude(self.kind, policy, now, [Finding(
                "software.malformed", f"expected JSON {{\"nonce\": hex, \"measurement\": hex}} "
                f"({type(exc).__name__}: {exc})")], {}, vector={})
        failures = []
        if not evidence.nonce:
            failures.append(Finding("nonce.missing", "no nonce was given"))
        elif nonce != evidence.nonce:
            failures.append(Finding("nonce.mismatch", f"evidence carries nonce {nonce.hex()}"))
        if not policy.measurement_allowed(measurement):
            failures.append(Finding("measurement.not_allowed",
                                    f"measurement {measurement.hex()} is not allowed"))
        claims = {"insecure": True, "measurement": measurement.hex(), "nonce": nonce.hex()}
        return conclude(self.kind, policy, now, failures, claims, vector={}, warnings=[Finding(
            "software.insecure", "unsigned development evidence, accepted by policy")])
