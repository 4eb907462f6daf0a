"""AMD SEV-SNP: appraise an ATTESTATION_REPORT signed by a VCEK or VLEK.

Layout: AMD "SEV Secure Nested Paging Firmware ABI Specification", table
"ATTESTATION_REPORT Structure" (report versions 2 and later; fields added by later
versions live in space that version 2 reserves, so they are read only when present).
TCB_VERSION is read in the Milan/Genoa layout (bootloader, tee, snp, microcode in
bytes 0, 1, 6, 7); Turin (CPUID family 0x1A) reorders it and is refused rather than
misread (``snp.unsupported``).

The signature is ECDSA P-384 with SHA-384 over bytes 0x000-0x29F; r and s are
72-byte little-endian fields. The key's certificate chains VCEK -> ASK -> ARK (or
VLEK -> ASVK -> ARK), RSA-PSS SHA-384, to an ARK the operator trusts. The VCEK
carries the TCB it was derived for and the chip's hardware id; both must match the
report, or a key for another chip or TCB is vouching for this report.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpuplane.governance.attestation.base import (
    SNP_TCB_COMPONENTS,
    Appraisal,
    AppraisalPolicy,
    Evidence,
    Finding,
    check_call,
    conclude,
    nonce_finding,
    trust_vector,
)
from gpuplane.governance.attestation.certs import (
    anchors_of,
    build_chain,
    common_name,
    der_integer,
    der_tlv,
    extension_value,
    load_certificates,
    validity_problems,
    verify_p384,
)

REPORT_SIZE = 0x4A0
SIGNED_END = 0x2A0
POLICY_DEBUG_BIT = 19
SIG_ALGO_ECDSA_P384_SHA384 = 1
TURIN_FAMILY = 0x1A
SIGNING_KEYS = {0: "vcek", 1: "vlek", 7: "none"}
LEAF_NAMES = {"vcek": "SEV-VCEK", "vlek": "SEV-VLEK"}

# AMD's VCEK/VLEK extensions (AMD "Versioned Chip Endorsement Key" specification).
OID_PRODUCT_NAME = "1.3.6.1.4.1.3704.1.2"
OID_HW_ID = "1.3.6.1.4.1.3704.1.4"
OID_SPL = {"bootloader": "1.3.6.1.4.1.3704.1.3.1", "tee": "1.3.6.1.4.1.3704.1.3.2",
           "snp": "1.3.6.1.4.1.3704.1.3.3", "microcode": "1.3.6.1.4.1.3704.1.3.8"}


@dataclass(frozen=True)
class TcbVersion:
    """Security patch levels of the firmware components (Milan/Genoa layout)."""

    bootloader: int
    tee: int
    snp: int
    microcode: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> TcbVersion:
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def as_dict(self) -> dict[str, int]:
        return {c: getattr(self, c) for c in SNP_TCB_COMPONENTS}


@dataclass(frozen=True)
class SnpReport:
    """The fields of an ATTESTATION_REPORT that appraisal reads or reports."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    author_key_en: bool
    mask_chip_id: bool
    signing_key: str
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    reported_tcb: TcbVersion
    cpuid: tuple[int, int, int] | None
    chip_id: bytes
    committed_tcb: TcbVersion
    launch_tcb: TcbVersion
    signature_r: int
    signature_s: int
    signed_bytes: bytes

    @property
    def debug(self) -> bool:
        return bool(self.policy >> POLICY_DEBUG_BIT & 1)

    def claims(self) -> dict[str, Any]:
        return {
            "version": self.version, "guest_svn": self.guest_svn,
            "policy": f"{self.policy:#x}", "debug": self.debug, "vmpl": self.vmpl,
            "family_id": self.family_id.hex(), "image_id": self.image_id.hex(),
            "measurement": self.measurement.hex(), "report_data": self.report_data.hex(),
            "host_data": self.host_data.hex(), "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(), "report_id": self.report_id.hex(),
            "chip_id": self.chip_id.hex(), "signing_key": self.signing_key,
            "platform_info": f"{self.platform_info:#x}",
            "current_tcb": self.current_tcb.as_dict(), "reported_tcb": self.reported_tcb.as_dict(),
            "committed_tcb": self.committed_tcb.as_dict(), "launch_tcb": self.launch_tcb.as_dict(),
            **({"cpuid": {"family": self.cpuid[0], "model": self.cpuid[1],
                          "stepping": self.cpuid[2]}} if self.cpuid else {}),
        }


def parse_report(raw: bytes) -> SnpReport:
    """Decode a report; ValueError when it is not one (size, version)."""
    if len(raw) != REPORT_SIZE:
        raise ValueError(f"report is {len(raw)} bytes, an ATTESTATION_REPORT is {REPORT_SIZE}")
    version, guest_svn, policy = struct.unpack_from("<IIQ", raw, 0x00)
    if version < 2:
        raise ValueError(f"report version {version} is not supported (2 or later)")
    vmpl, sig_algo = struct.unpack_from("<II", raw, 0x30)
    (platform_info,) = struct.unpack_from("<Q", raw, 0x40)
    (key_info,) = struct.unpack_from("<I", raw, 0x48)
    return SnpReport(
        version=version, guest_svn=guest_svn, policy=policy,
        family_id=raw[0x10:0x20], image_id=raw[0x20:0x30], vmpl=vmpl, signature_algo=sig_algo,
        current_tcb=TcbVersion.from_bytes(raw[0x38:0x40]), platform_info=platform_info,
        author_key_en=bool(key_info & 1), mask_chip_id=bool(key_info >> 1 & 1),
        signing_key=SIGNING_KEYS.get(key_info >> 2 & 7, f"reserved-{key_info >> 2 & 7}"),
        report_data=raw[0x50:0x90], measurement=raw[0x90:0xC0], host_data=raw[0xC0:0xE0],
        id_key_digest=raw[0xE0:0x110], author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160], reported_tcb=TcbVersion.from_bytes(raw[0x180:0x188]),
        cpuid=(raw[0x188], raw[0x189], raw[0x18A]) if version >= 3 else None,
        chip_id=raw[0x1A0:0x1E0], committed_tcb=TcbVersion.from_bytes(raw[0x1E0:0x1E8]),
        launch_tcb=TcbVersion.from_bytes(raw[0x1F0:0x1F8]),
        signature_r=int.from_bytes(raw[0x2A0:0x2E8], "little"),
        signature_s=int.from_bytes(raw[0x2E8:0x330], "little"),
        signed_bytes=raw[:SIGNED_END],
    )


def check_policy(report: SnpReport, policy: AppraisalPolicy) -> list[Finding]:
    """The operator's rules on a report already known to be genuine: debug, measurement, TCB."""
    findings = []
    if report.debug and not policy.debug_allowed:
        findings.append(Finding("debug.enabled", f"guest policy {report.policy:#x} allows "
                                "debugging (bit 19): the host can read guest memory"))
    if not policy.measurement_allowed(report.measurement):
        findings.append(Finding("measurement.not_allowed",
                                f"measurement {report.measurement.hex()} is not allowed"))
    tcb = report.reported_tcb.as_dict()
    low = [f"{c} {tcb[c]} < {m}" for c, m in sorted(policy.snp_min_tcb.items()) if tcb[c] < m]
    if low:
        findings.append(Finding("tcb.below_minimum", "reported TCB " + ", ".join(low)))
    return findings


def _verify_signature(report: SnpReport, leaf: Any) -> Finding | None:
    if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        return Finding("snp.signature_invalid",
                       f"signature algorithm {report.signature_algo} is not ECDSA P-384")
    why = verify_p384(leaf, report.signature_r, report.signature_s, report.signed_bytes)
    if why is not None:
        return Finding("snp.signature_invalid", f"report signature: the signing key {why}")
    return None


def _key_findings(report: SnpReport, leaf: Any) -> list[Finding]:
    """The VCEK/VLEK must be for this report's TCB and, for a VCEK, this chip."""
    findings = []
    try:
        cert_tcb = {c: der_integer(extension_value(leaf, oid) or b"")
                    for c, oid in OID_SPL.items()}
    except ValueError:
        return [Finding("snp.tcb_mismatch", "the signing certificate lacks readable TCB "
                        "extensions (1.3.6.1.4.1.3704.1.3.*)")]
    if cert_tcb != report.reported_tcb.as_dict():
        findings.append(Finding("snp.tcb_mismatch", f"certificate TCB {cert_tcb} differs from "
                                f"reported TCB {report.reported_tcb.as_dict()}"))
    if report.signing_key == "vcek" and not report.mask_chip_id:
        hw_id = extension_value(leaf, OID_HW_ID) or b""
        if len(hw_id) != 64:  # newer VCEKs wrap the 64 bytes in an OCTET STRING
            try:
                tag, inner, end = der_tlv(hw_id)
                hw_id = inner if tag == 0x04 and end == len(hw_id) else b""
            except ValueError:
                hw_id = b""
        if hw_id != report.chip_id:
            findings.append(Finding("snp.chip_id_mismatch", "the VCEK's hwID "
                                    f"{hw_id.hex() or '(none)'} is not the report's chip id"))
    return findings


class SnpVerifier:
    """Verifier for ``sev-snp`` evidence: raw report bytes plus the VCEK or VLEK.

    Evidence certificates: the VCEK/VLEK (picked by its name, SEV-VCEK or SEV-VLEK,
    as the report's key selection says) and optionally the ASK/ASVK. Roots come
    from ``policy.trusted_roots["sev-snp"]`` (e.g. AMD's ask_ark bundle: its ARK is
    the anchor, its ASK and ASVK help to build the chain). Nonce: see
    ``base.nonce_finding`` (padded or SHA-512 in REPORT_DATA).
    """

    kind = "sev-snp"

    def appraise(self, evidence: Evidence, policy: AppraisalPolicy, now: datetime) -> Appraisal:
        check_call(self.kind, evidence, now)
        try:
            report = parse_report(evidence.raw)
        except ValueError as exc:
            return self._fail(policy, now, Finding("snp.malformed", str(exc)))
        claims = report.claims()
        if report.cpuid and report.cpuid[0] == TURIN_FAMILY:
            return self._fail(policy, now, Finding("snp.unsupported", "Turin reports use "
                                                   "another TCB layout, not read here"), claims)
        try:
            certs = load_certificates(evidence.certificates)
            roots = load_certificates(policy.roots_for(self.kind))
        except ValueError as exc:
            return self._fail(policy, now, Finding("cert.malformed", str(exc)), claims)
        failures: list[Finding] = []
        not_after: list[datetime] = []
        leaf_name = LEAF_NAMES.get(report.signing_key)
        leaf = next((c for c in certs if common_name(c) == leaf_name), None)
        if leaf is None:
            failures.append(Finding("snp.key_missing", f"report is signed with key "
                                    f"{report.signing_key!r}; no {leaf_name or 'usable'} "
                                    "certificate was given"))
        else:
            claims["product"] = _product_name(leaf)
            if (f := _verify_signature(report, leaf)) is not None:
                failures.append(f)
            failures += _key_findings(report, leaf)
            chain = build_chain(leaf, certs + roots, anchors_of(roots))
            if not chain.ok:
                failures.append(Finding(f"snp.{chain.code}", chain.detail))
            failures += [Finding(c, d) for c, d in validity_problems(chain.chain or [leaf], now)]
            not_after = [c.not_valid_after_utc for c in chain.chain or [leaf]]
            claims["chain"] = [common_name(c) for c in chain.chain]
        finding, binding = nonce_finding(report.report_data, evidence.nonce)
        failures += [finding] if finding else []
        claims["nonce_binding"] = binding
        failures += check_policy(report, policy)
        vector = trust_vector((f.code for f in failures), measured=bool(
            policy.allowed_measurements), encrypted=True)
        return conclude(self.kind, policy, now, failures, claims, vector=vector,
                        not_after=not_after)

    def _fail(self, policy: AppraisalPolicy, now: datetime, finding: Finding,
              claims: dict[str, Any] | None = None) -> Appraisal:
        return conclude(self.kind, policy, now, [finding], claims or {},
                        vector=trust_vector([finding.code], measured=False, encrypted=False))


def _product_name(cert: Any) -> str | None:
    value = extension_value(cert, OID_PRODUCT_NAME)
    try:
        tag, name, _ = der_tlv(value or b"")
    except ValueError:
        return None
    return name.decode("ascii", "replace") if tag == 0x16 else None
