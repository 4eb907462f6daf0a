"""NVIDIA confidential-computing GPUs (Hopper): appraise SPDM 1.1 measurement evidence.

The evidence is what the driver captured from the GPU: the SPDM GET_MEASUREMENTS
request (which carries the verifier's 32-byte nonce) followed by the signed
MEASUREMENTS response (DMTF DSP0274 1.1.1, messages GET_MEASUREMENTS and
MEASUREMENTS). The GPU's attestation key signs request || response up to the
signature with ECDSA P-384 / SHA-384 (raw r || s, 48 bytes each, big-endian). That
key's certificate (``GH100 ... FMC LF``) is first in the chain the driver returns;
the chain must reach NVIDIA's device identity root, which the operator pins.

The response's opaque data (NVIDIA-defined items: type, size, value) carries the
driver and VBIOS versions and the FWID, the digest of the GPU firmware that the
leaf certificate also carries in its TCG DICE extension (2.23.133.5.4.1); the two
must agree, or the certificate was issued for other firmware.

Measurements are reported as claims; comparing them with NVIDIA's reference
integrity manifests (RIMs) is not done here, so ``allowed_measurements`` does not
apply to this kind.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpuplane.governance.attestation.base import (
    Appraisal,
    AppraisalPolicy,
    Evidence,
    Finding,
    check_call,
    conclude,
    trust_vector,
)
from gpuplane.governance.attestation.certs import (
    anchors_of,
    build_chain,
    common_name,
    der_walk,
    extension_value,
    load_certificates,
    validity_problems,
    verify_p384,
)

SPDM_VERSION = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
REQUEST_SIZE = 37
NONCE_SIZE = 32
SIGNATURE_SIZE = 96
DMTF_SPEC = 0x01
OID_DICE_FWID = "2.23.133.5.4.1"
SHA384_OID = bytes.fromhex("608648016503040202")

# NVIDIA opaque data item types, named as NVIDIA's own verifier (nvtrust) names them.
OPAQUE_NAMES = {
    1: "cert_issuer_name", 2: "cert_authority_key_identifier", 3: "driver_version",
    4: "gpu_info", 5: "id_sku", 6: "vbios_version", 7: "manufacturer_id",
    8: "tamper_detection", 9: "smc", 10: "vpr", 11: "nvdec0_status", 12: "measurement_count",
    13: "cpr_info", 14: "board_id", 15: "chip_sku", 16: "chip_sku_mod", 17: "project",
    18: "project_sku", 19: "project_sku_mod", 20: "fwid", 21: "protected_pcie_status",
    22: "switch_pdi", 23: "floorswept_ports", 24: "position_id", 25: "lock_switch_status",
    32: "gpu_link_conn", 33: "sys_enable_status", 34: "opaque_data_version", 35: "chip_info",
    36: "feature_flag",
}
_TEXT_ITEMS = {3, 15, 16, 17, 18, 35}
_FEATURES = {0: "SPT", 1: "MPT", 2: "PPCIE"}
_NVDEC = {0xAA: "enabled", 0x55: "disabled"}


@dataclass(frozen=True)
class SpdmMeasurements:
    """A decoded GET_MEASUREMENTS request + MEASUREMENTS response pair."""

    nonce: bytes  # the requester's (verifier's) nonce
    responder_nonce: bytes
    measurements: dict[int, bytes]  # block index -> DMTF measurement value
    opaque: dict[str, Any]
    signature: bytes
    signed_bytes: bytes


def _u(data: bytes, offset: int, size: int, what: str) -> int:
    if offset + size > len(data):
        raise ValueError(f"{what} runs past the end of the evidence")
    return int.from_bytes(data[offset:offset + size], "little")


def _decode_item(kind: int, data: bytes) -> Any:
    if kind in _TEXT_ITEMS:
        return data.decode("utf-8", "replace").rstrip("\0")
    if kind == 6 and len(data) >= 2:  # VBIOS: first half reversed, then the next byte
        half = len(data) // 2
        return ".".join(f"{b:02x}" for b in reversed(data[:half])) + f".{data[half]:02x}"
    if kind == 12:
        if len(data) % 4:
            raise ValueError("measurement_count is not a list of 4-byte counts")
        return {str(i // 4 + 1): int.from_bytes(data[i:i + 4], "little")
                for i in range(0, len(data), 4)}
    if kind == 11 and len(data) == 1 and data[0] in _NVDEC:
        return _NVDEC[data[0]]
    if kind in (34, 36) and len(data) <= 8:
        value = int.from_bytes(data, "little")
        return _FEATURES.get(value, "unknown") if kind == 36 else value
    if kind == 22:
        return [data[i:i + 8].hex() for i in range(0, len(data), 8)]
    return data.hex()


def _opaque(data: bytes) -> dict[str, Any]:
    items: dict[str, Any] = {}
    offset = 0
    while offset < len(data):
        kind = _u(data, offset, 2, "opaque item type")
        size = _u(data, offset + 2, 2, "opaque item size")
        value = data[offset + 4:offset + 4 + size]
        if len(value) != size:
            raise ValueError(f"opaque item {kind} runs past the opaque data")
        name = OPAQUE_NAMES.get(kind, f"type_{kind}")
        if name in items:
            raise ValueError(f"opaque item {name} appears twice")
        items[name] = _decode_item(kind, value)
        offset += 4 + size
    return items


def parse_evidence(raw: bytes) -> SpdmMeasurements:
    """Decode request || response; ValueError naming the part that does not fit.

    Hex text of the same bytes (as NVIDIA's tools write it) is accepted too.
    """
    if raw and set(raw) <= set(string.hexdigits.encode() + string.whitespace.encode()):
        raw = bytes.fromhex(raw.decode())
    if len(raw) < REQUEST_SIZE + 8:
        raise ValueError(f"evidence is {len(raw)} bytes, too short for SPDM request + response")
    request, response = raw[:REQUEST_SIZE], raw[REQUEST_SIZE:]
    if request[0] != SPDM_VERSION or request[1] != GET_MEASUREMENTS:
        raise ValueError(f"request is not SPDM 1.1 GET_MEASUREMENTS "
                         f"(version {request[0]:#x}, code {request[1]:#x})")
    if not request[2] & 1:
        raise ValueError("request did not ask for a signature (param1 bit 0)")
    if response[0] != SPDM_VERSION or response[1] != MEASUREMENTS:
        raise ValueError(f"response is not SPDM 1.1 MEASUREMENTS "
                         f"(version {response[0]:#x}, code {response[1]:#x})")
    blocks, record_len = response[4], _u(response, 5, 3, "record length")
    record_end = 8 + record_len
    if record_end > len(response):
        raise ValueError("measurement record runs past the end of the evidence")
    measurements: dict[int, bytes] = {}
    offset = 8
    for _ in range(blocks):
        if offset + 4 > record_end:
            raise ValueError("measurement blocks run past the record length")
        index, spec = response[offset], response[offset + 1]
        size = _u(response, offset + 2, 2, "measurement block size")
        block = response[offset + 4:offset + 4 + size]
        if not spec & DMTF_SPEC or len(block) < 3 or 3 + _u(block, 1, 2, "value size") != size:
            raise ValueError(f"measurement block {index} is not a DMTF measurement")
        if index in measurements:
            raise ValueError(f"measurement block {index} appears twice")
        measurements[index] = block[3:]
        offset += 4 + size
        if offset > record_end:
            raise ValueError("measurement blocks run past the record length")
    if offset != record_end:
        raise ValueError("measurement record length does not match its blocks")
    responder_nonce = response[record_end:record_end + NONCE_SIZE]
    opaque_len = _u(response, record_end + NONCE_SIZE, 2, "opaque length")
    opaque_at = record_end + NONCE_SIZE + 2
    signature_at = opaque_at + opaque_len
    signature = response[signature_at:signature_at + SIGNATURE_SIZE]
    if len(signature) != SIGNATURE_SIZE:
        raise ValueError("signature runs past the end of the evidence")
    if any(response[signature_at + SIGNATURE_SIZE:]):  # zero padding after it is harmless
        raise ValueError("unsigned bytes follow the signature")
    return SpdmMeasurements(nonce=request[4:36], responder_nonce=responder_nonce,
                            measurements=measurements,
                            opaque=_opaque(response[opaque_at:signature_at]),
                            signature=signature,
                            signed_bytes=raw[:REQUEST_SIZE + signature_at])


def certificate_fwid(cert: Any) -> bytes | None:
    """The SHA-384 FWID in the certificate's TCG DICE extension, or None."""
    value = extension_value(cert, OID_DICE_FWID)
    if value is None:
        return None
    try:
        items = list(der_walk(value))
    except ValueError:
        return None
    for (tag, body), (next_tag, digest) in zip(items, items[1:]):
        if tag == 0x06 and body == SHA384_OID and next_tag == 0x04 and len(digest) == 48:
            return digest
    return None


def _signature_finding(evidence: SpdmMeasurements, leaf: Any) -> Finding | None:
    r, s = evidence.signature[:48], evidence.signature[48:]
    why = verify_p384(leaf, int.from_bytes(r, "big"), int.from_bytes(s, "big"),
                      evidence.signed_bytes)
    if why is not None:
        return Finding("nvidia.signature_invalid",
                       f"measurement signature: the key of {common_name(leaf)!r} {why}")
    return None


def _nonce_finding(signed: bytes, nonce: bytes | None) -> Finding | None:
    if not nonce:
        return Finding("nonce.missing", "no nonce was given; freshness cannot be shown")
    if len(nonce) > NONCE_SIZE:
        return Finding("nonce.too_long", f"the SPDM nonce holds {NONCE_SIZE} bytes, "
                       f"the nonce given has {len(nonce)}")
    if signed != nonce.ljust(NONCE_SIZE, b"\0"):
        return Finding("nonce.mismatch", f"the request carried nonce {signed.hex()}")
    return None


class NvidiaVerifier:
    """Verifier for ``nvidia-cc`` evidence.

    Evidence certificates: the chain the driver returns (PEM, leaf first; it may end
    with the root, which counts only if it is also configured). Roots:
    ``policy.trusted_roots["nvidia-cc"]`` (NVIDIA's device identity CA). Nonce: the
    32-byte SPDM nonce must equal the nonce, zero-padded.
    """

    kind = "nvidia-cc"

    def appraise(self, evidence: Evidence, policy: AppraisalPolicy, now: datetime) -> Appraisal:
        check_call(self.kind, evidence, now)
        try:
            spdm = parse_evidence(evidence.raw)
        except ValueError as exc:
            return self._fail(policy, now, Finding("nvidia.malformed", str(exc)))
        claims: dict[str, Any] = {
            "measurements": {str(i): v.hex() for i, v in sorted(spdm.measurements.items())},
            "config": spdm.opaque, "fwid": spdm.opaque.get("fwid"),
            "driver_version": spdm.opaque.get("driver_version"),
            "vbios_version": spdm.opaque.get("vbios_version"), "nonce": spdm.nonce.hex(),
        }
        try:
            certs = load_certificates(evidence.certificates)
            roots = load_certificates(policy.roots_for(self.kind))
        except ValueError as exc:
            return self._fail(policy, now, Finding("cert.malformed", str(exc)), claims)
        failures: list[Finding] = []
        not_after: list[datetime] = []
        if len(certs) < 2:
            failures.append(Finding("nvidia.chain_too_short", f"{len(certs)} certificate(s); "
                                    "the chain needs the signing certificate and its issuers"))
        if certs:
            leaf = certs[0]
            claims["device"] = common_name(leaf)
            if (f := _signature_finding(spdm, leaf)) is not None:
                failures.append(f)
            failures += _fwid_findings(leaf, spdm.opaque.get("fwid"))
            chain = build_chain(leaf, certs + roots, anchors_of(roots))
            if not chain.ok:
                failures.append(Finding(f"nvidia.{chain.code}", chain.detail))
            failures += [Finding(c, d) for c, d in validity_problems(chain.chain or certs, now)]
            not_after = [c.not_valid_after_utc for c in chain.chain or certs]
            claims["chain"] = [common_name(c) for c in chain.chain]
        if (f := _nonce_finding(spdm.nonce, evidence.nonce)) is not None:
            failures.append(f)
        vector = trust_vector((f.code for f in failures), measured=False, encrypted=False)
        return conclude(self.kind, policy, now, failures, claims, vector=vector,
                        not_after=not_after)

    def _fail(self, policy: AppraisalPolicy, now: datetime, finding: Finding,
              claims: dict[str, Any] | None = None) -> Appraisal:
        return conclude(self.kind, policy, now, [finding], claims or {},
                        vector=trust_vector([finding.code], measured=False, encrypted=False))


def _fwid_findings(leaf: Any, reported: str | None) -> list[Finding]:
    fwid = certificate_fwid(leaf)
    if fwid is None:
        return [Finding("nvidia.fwid_missing", f"{common_name(leaf)!r} has no FWID extension "
                        f"({OID_DICE_FWID}): it is not the GPU's signing certificate")]
    if reported is None:
        return [Finding("nvidia.fwid_missing", "the measurements carry no FWID")]
    if fwid.hex() != reported:
        return [Finding("nvidia.fwid_mismatch", f"certificate FWID {fwid.hex()} is not the "
                        f"reported {reported}")]
    return []
