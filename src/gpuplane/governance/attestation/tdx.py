"""Intel TDX: appraise a DCAP quote offline against Intel collateral, with dcap-qvl.

dcap-qvl checks the quote signature, the QE report, the PCK chain to Intel's SGX
Root CA, the CRLs and the signed TCB info / QE identity, all at the ``now`` given,
and returns the platform's TCB status. This module adds the operator's policy: the
accepted statuses, the MRTD allow-list, the TD debug attribute and the nonce in
REPORTDATA. dcap-qvl reports every failure as a ValueError with a message; those
messages are mapped to stable reason codes below (unknown ones to
``tdx.verification_failed``, with the message as detail).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from gpuplane.governance.attestation.base import (
    Appraisal,
    AppraisalPolicy,
    Evidence,
    Finding,
    check_call,
    conclude,
    nonce_finding,
    trust_vector,
)
from gpuplane.governance.attestation.certs import anchors_of, load_certificates

TD_ATTRIBUTES_DEBUG_BIT = 0

# dcap-qvl error message fragment (lower case) -> reason code; first match wins.
_ERRORS = (
    ("isv enclave report signature", "tdx.signature_invalid"),
    ("signature is invalid for", "tdx.collateral_invalid"),
    ("failed to decode tcbinfo", "tdx.collateral_malformed"),
    ("failed to decode qeidentity", "tdx.collateral_malformed"),
    ("failed to decode", "tdx.malformed"),
    ("expired", "collateral.expired"),
    ("in the future", "collateral.not_yet_valid"),
    ("no matching tcb level", "tdx.tcb_not_supported"),
    ("fmspc mismatch", "tdx.collateral_mismatch"),
    ("signature", "tdx.signature_invalid"),
    ("root ca", "tdx.chain_invalid"),
    ("crl", "tdx.chain_invalid"),
    ("cert", "tdx.chain_invalid"),
)


def error_code(message: str) -> str:
    """The reason code for a dcap-qvl failure message."""
    lowered = message.lower()
    return next((code for fragment, code in _ERRORS if fragment in lowered),
                "tdx.verification_failed")


def td_claims(report: Any) -> dict[str, Any]:
    """The TD report fields as hex, from dcap-qvl's parsed TDREPORT (1.0 or 1.5)."""
    names = ("mr_td", "rt_mr0", "rt_mr1", "rt_mr2", "rt_mr3", "report_data", "td_attributes",
             "xfam", "mr_seam", "mr_signer_seam", "seam_attributes", "mr_config_id",
             "mr_owner", "mr_owner_config", "tee_tcb_svn", "tee_tcb_svn2", "mr_service_td")
    return {n: bytes(getattr(report, n)).hex() for n in names if hasattr(report, n)}


def check_policy(claims: dict[str, Any], policy: AppraisalPolicy) -> list[Finding]:
    """The operator's rules on a verified quote's claims: status, debug, MRTD."""
    findings = []
    status = claims.get("status")
    if status not in policy.tdx_accepted_statuses:
        advisories = ", ".join(claims.get("advisory_ids", [])) or "none"
        findings.append(Finding(f"tdx.status.{status}", f"TCB status {status} is not "
                                f"accepted (advisories: {advisories})"))
    attributes = bytes.fromhex(claims["td_attributes"])
    if attributes[0] >> TD_ATTRIBUTES_DEBUG_BIT & 1 and not policy.debug_allowed:
        findings.append(Finding("debug.enabled", f"TD attributes {claims['td_attributes']} "
                                "have DEBUG set: the host can read the TD"))
    if not policy.measurement_allowed(bytes.fromhex(claims["mr_td"])):
        findings.append(Finding("measurement.not_allowed",
                                f"MRTD {claims['mr_td']} is not allowed"))
    return findings


def _next_updates(collateral: Any) -> list[datetime]:
    """When the TCB info and QE identity in the collateral must be refreshed."""
    out = []
    for text in (collateral.tcb_info, collateral.qe_identity):
        try:
            out.append(datetime.fromisoformat(json.loads(text)["nextUpdate"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


class TdxVerifier:
    """Verifier for ``tdx`` evidence: the raw quote, with Intel collateral JSON.

    ``evidence.collateral`` is dcap-qvl's QuoteCollateralV3 JSON (as PCCS serves it).
    Roots: ``policy.trusted_roots["tdx"]`` pins Intel's root (its self-signed
    certificates are tried in turn); empty means the root built into dcap-qvl.
    Nonce: padded or SHA-512 in REPORTDATA (``base.nonce_finding``).
    """

    kind = "tdx"

    def appraise(self, evidence: Evidence, policy: AppraisalPolicy, now: datetime) -> Appraisal:
        import dcap_qvl

        check_call(self.kind, evidence, now)
        try:
            quote = dcap_qvl.parse_quote(evidence.raw)
        except ValueError as exc:
            return self._fail(policy, now, Finding("tdx.malformed", _first_line(exc)))
        if not quote.is_tdx():
            return self._fail(policy, now, Finding("tdx.malformed", "an SGX quote, not TDX"))
        if evidence.collateral is None:
            return self._fail(policy, now, Finding("tdx.collateral_malformed",
                                                   "no collateral was given"))
        text = evidence.collateral
        try:
            collateral = dcap_qvl.QuoteCollateralV3.from_json(
                text.decode() if isinstance(text, bytes) else text)
            roots = [c.public_bytes(Encoding.DER) for c in
                     anchors_of(load_certificates(policy.roots_for(self.kind)))]
        except (ValueError, UnicodeDecodeError) as exc:
            return self._fail(policy, now, Finding("tdx.collateral_malformed", _first_line(exc)))
        claims: dict[str, Any] = {"fmspc": _fmspc(quote), "quote_version": quote.header.version,
                                  **td_claims(quote.report)}
        when = int(now.timestamp())
        result, error = None, "no trusted root is configured"
        for root in roots or [None]:
            try:
                result = (dcap_qvl.verify(evidence.raw, collateral, when) if root is None else
                          dcap_qvl.verify_with_root_ca(evidence.raw, collateral, root, when))
                break
            except ValueError as exc:
                error = _first_line(exc)
        if result is None:
            finding = Finding(error_code(error), error)
            return conclude(self.kind, policy, now, [finding], claims,
                            vector=trust_vector([finding.code], measured=False, encrypted=True))
        verified = json.loads(result.to_json())
        claims.update(status=result.status, advisory_ids=list(result.advisory_ids),
                      ppid=bytes(result.ppid).hex(),
                      platform_status=verified.get("platform_status", {}).get("status"),
                      qe_status=verified.get("qe_status", {}).get("status"))
        failures = check_policy(claims, policy)
        finding, binding = nonce_finding(bytes.fromhex(claims["report_data"]), evidence.nonce)
        failures += [finding] if finding else []
        claims["nonce_binding"] = binding
        vector = trust_vector((f.code for f in failures),
                              measured=bool(policy.allowed_measurements), encrypted=True,
                              hardware_unsafe=result.status != "UpToDate")
        return conclude(self.kind, policy, now, failures, claims, vector=vector,
                        not_after=_next_updates(collateral))

    def _fail(self, policy: AppraisalPolicy, now: datetime, finding: Finding) -> Appraisal:
        return conclude(self.kind, policy, now, [finding], {},
                        vector=trust_vector([finding.code], measured=False, encrypted=False))


def _fmspc(quote: Any) -> str | None:
    """The platform's FMSPC, when the quote embeds its PCK certificate."""
    try:
        return quote.fmspc()
    except ValueError:
        return None


def _first_line(exc: Exception) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line.removeprefix("Verification failed: ")
