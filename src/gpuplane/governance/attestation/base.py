"""The vocabulary of attestation appraisal, without I/O (RFC 9334 roles).

A host is the Attester: it hands gpuplane *Evidence* (a signed report plus the
certificates and collateral needed to check it). gpuplane is the Verifier: a
`Verifier` appraises the evidence against the operator's `AppraisalPolicy` and
returns an `Appraisal`, the Attestation Result. gpuplane is also the Relying
Party: scheduling only trusts a host while a passed appraisal has not expired.
`Appraisal.to_ear` renders the result as an EAR claims set
(draft-ietf-rats-ear) so it can be exported and read by other tools.

Reasons are stable, machine-readable codes (``snp.signature_invalid``,
``nonce.mismatch`` ...); the human sentence for each lives in ``details``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from gpuplane.governance.attestation.certs import load_certificates

Status = Literal["affirming", "warning", "contraindicated"]

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
SNP_TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode")

# AR4SI trustworthiness claim values (draft-ietf-rats-ar4si), as EAR carries them.
TV_UNEXPECTED_EVIDENCE = 1
TV_AFFIRMING = 2
TV_UNSAFE = 32  # hardware: genuine but known vulnerabilities (TCB not up to date)
TV_UNRECOGNIZED_RUNTIME = 33
TV_CONTRAINDICATED = 96
TV_UNRECOGNIZED = 97
TV_CRYPTO_FAILED = 99


@dataclass(frozen=True)
class Evidence:
    """What an Attester sent, as bytes, plus the nonce gpuplane chose for it.

    ``certificates`` are the Attester's certificates (DER, or PEM with one or more
    certificates each), leaf first where order matters; they are untrusted until
    they chain to a root of the policy. ``collateral`` is kind specific (for TDX:
    Intel's collateral JSON). ``nonce`` is None (or empty) when no nonce was
    chosen, which no verifier accepts (freshness unknown).
    """

    kind: str
    raw: bytes
    certificates: tuple[bytes, ...] = ()
    collateral: str | bytes | None = None
    nonce: bytes | None = None


@dataclass(frozen=True)
class AppraisalPolicy:
    """The operator's appraisal policy: what a host must show to be trusted.

    ``allowed_measurements``: hex launch measurements accepted (SNP MEASUREMENT,
    TDX MRTD); empty means any. ``snp_min_tcb``: per component minimum of the
    SNP reported TCB (keys from ``SNP_TCB_COMPONENTS``). ``tdx_accepted_statuses``:
    the Intel TCB statuses accepted. ``trusted_roots``: kind -> root certificates
    (DER or PEM bundles); only self-signed certificates become trust anchors, the
    others in a bundle (AMD's ASK and ASVK) only help to build chains. For ``tdx``
    an empty list means Intel's SGX Root CA built into dcap-qvl.
    ``result_lifetime_s``: how long a passed appraisal may be relied upon.
    ``allow_software``: accept the insecure development verifier.
    Raises ValueError naming the field when a value cannot be used.
    """

    name: str = "default"
    allowed_measurements: tuple[str, ...] = ()
    snp_min_tcb: Mapping[str, int] = field(default_factory=dict)
    tdx_accepted_statuses: tuple[str, ...] = ("UpToDate",)
    debug_allowed: bool = False
    result_lifetime_s: int = 3600
    allow_software: bool = False
    trusted_roots: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, m in enumerate(self.allowed_measurements):
            try:
                bytes.fromhex(m)
            except ValueError:
                raise ValueError(f"allowed_measurements[{i}]: {m!r} is not hex") from None
        for key, value in self.snp_min_tcb.items():
            if key not in SNP_TCB_COMPONENTS:
                raise ValueError(f"snp_min_tcb.{key}: unknown component; "
                                 f"valid: {', '.join(SNP_TCB_COMPONENTS)}")
            if not 0 <= value <= 255:
                raise ValueError(f"snp_min_tcb.{key}: {value} is outside 0..255")
        if self.result_lifetime_s <= 0:
            raise ValueError(f"result_lifetime_s: {self.result_lifetime_s} must be positive")
        for kind, blobs in self.trusted_roots.items():
            try:
                load_certificates(blobs)
            except ValueError as exc:
                raise ValueError(f"trusted_roots.{kind}: {exc}") from None

    def roots_for(self, kind: str) -> tuple[bytes, ...]:
        return tuple(self.trusted_roots.get(kind, ()))

    def measurement_allowed(self, measurement: bytes) -> bool:
        return not self.allowed_measurements or measurement.hex() in {
            m.lower() for m in self.allowed_measurements}

    @property
    def policy_id(self) -> str:
        """``policy:gpuplane/<name>@<digest>``: names the exact policy an appraisal used."""
        doc = {
            "allowed_measurements": sorted(m.lower() for m in self.allowed_measurements),
            "snp_min_tcb": dict(sorted(self.snp_min_tcb.items())),
            "tdx_accepted_statuses": sorted(self.tdx_accepted_statuses),
            "debug_allowed": self.debug_allowed,
            "result_lifetime_s": self.result_lifetime_s,
            "allow_software": self.allow_software,
            "trusted_roots": {k: sorted(hashlib.sha256(b).hexdigest() for b in v)
                              for k, v in sorted(self.trusted_roots.items())},
        }
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        return f"policy:gpuplane/{self.name}@{digest[:16]}"


@dataclass(frozen=True)
class Finding:
    """One reason an appraisal did not affirm: a stable ``code`` and a human ``detail``."""

    code: str
    detail: str


@dataclass(frozen=True)
class VerifierId:
    """Who appraised: EAR's ``ear.verifier-id``."""

    build: str
    developer: str


@dataclass(frozen=True)
class Appraisal:
    """The Attestation Result for one piece of evidence.

    ``passed`` is what a Relying Party acts on: True for "affirming", and for a
    "warning" the policy explicitly accepted (the software verifier). ``reasons``
    lists every finding's code, failed or warned; ``details`` maps a code to the
    human explanation. A passed appraisal may be relied upon until ``expires_at``.
    """

    kind: str
    status: Status
    passed: bool
    reasons: tuple[str, ...]
    claims: dict[str, Any]
    appraised_at: datetime
    expires_at: datetime
    policy_id: str
    trust_vector: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "status": self.status, "passed": self.passed,
            "reasons": list(self.reasons), "details": dict(self.details),
            "claims": self.claims, "trust_vector": dict(self.trust_vector),
            "appraised_at": self.appraised_at.isoformat(),
            "expires_at": self.expires_at.isoformat(), "policy_id": self.policy_id,
        }

    def to_ear(self, verifier_id: VerifierId) -> dict[str, Any]:
        """The EAR claims set (JSON form, unsigned) with this appraisal as one submodule."""
        submod: dict[str, Any] = {"ear.status": self.status,
                                  "ear.appraisal-policy-id": self.policy_id}
        if self.trust_vector:
            submod["ear.trustworthiness-vector"] = dict(self.trust_vector)
        submod["ear.veraison.annotated-evidence"] = self.claims
        if self.reasons:
            submod["gpuplane.reasons"] = list(self.reasons)
        return {
            "eat_profile": EAR_PROFILE,
            "iat": int(self.appraised_at.timestamp()),
            "exp": int(self.expires_at.timestamp()),
            "ear.verifier-id": {"build": verifier_id.build,
                                "developer": verifier_id.developer},
            "submods": {self.kind: submod},
        }


class Verifier(Protocol):
    """Appraises one kind of evidence.

    ``appraise`` never raises for bad evidence, certificates or collateral: those
    give a failed Appraisal with reasons. It raises only for programming errors
    (a naive ``now``, evidence of another kind).
    """

    kind: str

    def appraise(self, evidence: Evidence, policy: AppraisalPolicy,
                 now: datetime) -> Appraisal: ...


def check_call(verifier_kind: str, evidence: Evidence, now: datetime) -> None:
    """Reject programming errors up front: naive clocks and evidence of another kind."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now: must be timezone-aware")
    if evidence.kind != verifier_kind:
        raise ValueError(f"evidence.kind: {evidence.kind!r} given to the "
                         f"{verifier_kind!r} verifier")


def nonce_finding(slot: bytes, nonce: bytes | None) -> tuple[Finding | None, str | None]:
    """Check that a 64-byte REPORT_DATA slot binds the nonce.

    Accepted bindings: the nonce itself, zero-padded to the slot size (needs a nonce
    of at most 64 bytes), or SHA-512 of the nonce (any length). Returns the finding
    (None when bound) and the binding that matched ("padded" or "sha512").
    """
    if not nonce:
        return Finding("nonce.missing", "no nonce was given; freshness cannot be shown"), None
    if len(nonce) <= len(slot) and slot == nonce.ljust(len(slot), b"\0"):
        return None, "padded"
    if slot == hashlib.sha512(nonce).digest()[: len(slot)]:
        return None, "sha512"
    return Finding("nonce.mismatch", f"report data {slot.hex()} binds neither the nonce "
                   "(zero-padded) nor its SHA-512"), None


# Finding codes (by suffix or prefix) that leave the Attester unrecognized: its key,
# chain, firmware identity or collateral could not be tied to the vendor.
_UNRECOGNIZED_SUFFIXES = ("chain_invalid", "chain_too_short", "root_untrusted", "key_missing",
                          "fwid_missing", "fwid_mismatch", "chip_id_mismatch", "tcb_mismatch",
                          "collateral_invalid", "collateral_mismatch", "tcb_not_supported",
                          "verification_failed")


def trust_vector(codes: Iterable[str], *, measured: bool, encrypted: bool,
                 hardware_unsafe: bool = False) -> dict[str, int]:
    """AR4SI trustworthiness vector from the finding codes.

    ``measured``: a measurement allow-list was applied; ``encrypted``: the TEE keeps
    guest memory encrypted (SNP, TDX); ``hardware_unsafe``: genuine but its TCB is
    below the best known. Nonce findings do not change the vector (they make the
    whole result contraindicated).
    """
    codes = set(codes)
    if any(c.endswith(("malformed", "unsupported")) for c in codes):
        return {"instance-identity": TV_UNEXPECTED_EVIDENCE}
    if any(c.endswith("signature_invalid") for c in codes):
        return {"instance-identity": TV_CRYPTO_FAILED, "hardware": TV_CRYPTO_FAILED}
    if any(c.endswith(_UNRECOGNIZED_SUFFIXES) or c.startswith(("cert.", "collateral."))
           for c in codes):
        return {"instance-identity": TV_UNRECOGNIZED, "hardware": TV_UNRECOGNIZED}
    vector = {"instance-identity": TV_AFFIRMING,
              "hardware": TV_UNSAFE if hardware_unsafe or "tcb.below_minimum" in codes
              else TV_AFFIRMING,
              "configuration": TV_CONTRAINDICATED if "debug.enabled" in codes else TV_AFFIRMING}
    if "measurement.not_allowed" in codes:
        vector["executables"] = TV_UNRECOGNIZED_RUNTIME
    elif measured:
        vector["executables"] = TV_AFFIRMING
    if encrypted:
        vector["runtime-opaque"] = TV_AFFIRMING
    return vector


def conclude(kind: str, policy: AppraisalPolicy, now: datetime, failures: Sequence[Finding],
             claims: dict[str, Any], *, vector: dict[str, int],
             warnings: Sequence[Finding] = (), not_after: Iterable[datetime] = ()) -> Appraisal:
    """Build the Appraisal: contraindicated on any failure, warning on warnings only.

    The result expires after the policy's lifetime, or earlier when a certificate
    or collateral it rests on (``not_after``) stops being valid.
    """
    findings = [*failures, *warnings]
    details: dict[str, str] = {}
    for f in findings:
        details[f.code] = f"{details[f.code]}; {f.detail}" if f.code in details else f.detail
    status: Status = ("contraindicated" if failures else "warning" if warnings
                      else "affirming")
    expires = min([now + timedelta(seconds=policy.result_lifetime_s), *not_after])
    return Appraisal(kind=kind, status=status, passed=not failures,
                     reasons=tuple(dict.fromkeys(f.code for f in findings)), claims=claims,
                     appraised_at=now, expires_at=max(expires, now), policy_id=policy.policy_id,
                     trust_vector=vector, details=details)
