"""NVIDIA H100 verifier on real SPDM evidence (confidential-containers/trustee test data).

Two real reports verify (signature, chain to NVIDIA's device root, FWID, nonce); the
four chain files of upstream's own tests exercise the chain checks.
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gpuplane.governance.attestation import AppraisalPolicy, Evidence
from gpuplane.governance.attestation.certs import load_certificates
from gpuplane.governance.attestation.nvidia import (
    NvidiaVerifier,
    certificate_fwid,
    parse_evidence,
)

ATTESTATION = Path(__file__).resolve().parents[3] / "shared" / "attestation"
NV = ATTESTATION / "nvidia"
pytestmark = pytest.mark.skipif(not NV.is_dir(), reason=f"real attestation evidence not "
                                f"present at {ATTESTATION} (see shared/attestation/SOURCE.md)")

NOW = datetime(2025, 7, 1, tzinfo=timezone.utc)
NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
# The CoCo run bound 48 bytes of report data; the GPU's SPDM nonce holds the first 32.
COCO_REPORT_DATA = bytes.fromhex(
    "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec"
    "e279b616efefc2aae21da80cf5581250")
VERIFIER = NvidiaVerifier()


def read(name: str) -> bytes:
    return (NV / name).read_bytes()


def policy(root: Path = NV / "nvidia_device_root.pem") -> AppraisalPolicy:
    return AppraisalPolicy(trusted_roots={"nvidia-cc": (root.read_bytes(),)})


def evidence(report: str = "hopperAttestationReport.txt",
             chain: str = "hopper_cert_chain_case1.txt", *, raw: bytes | None = None,
             nonce: bytes | None = NONCE) -> Evidence:
    return Evidence(kind="nvidia-cc", raw=read(report) if raw is None else raw,
                    certificates=(read(chain),), nonce=nonce)


def binary(report: str = "hopperAttestationReport.txt") -> bytes:
    return bytes.fromhex(read(report).decode())


# ---------------------------------------------------------------- real evidence


def test_the_real_h100_report_affirms_with_upstreams_claims():
    a = VERIFIER.appraise(evidence(), policy(), NOW)
    assert (a.status, a.passed, a.reasons) == ("affirming", True, ())
    expected = json.loads(read("hopperAttestationReport-claims.txt"))
    assert a.claims["measurements"] == expected["measurements"]
    assert len(a.claims["measurements"]) == 64
    # Upstream printed two one-byte status items as text ("U" is 0x55); here they are
    # decoded: NVDEC0 0x55 means disabled, protected PCIe stays raw hex.
    assert a.claims["config"]["nvdec0_status"] == "disabled"
    assert a.claims["config"]["protected_pcie_status"] == "55"
    same = {k: v for k, v in expected["config"].items()
            if k not in ("nvdec0_status", "protected_pcie_status")}
    assert {k: a.claims["config"][k] for k in same} == same
    assert a.claims["fwid"] == expected["config"]["fwid"]
    assert (a.claims["driver_version"], a.claims["vbios_version"]) == ("550.90.07",
                                                                       "96.00.9f.00.01")
    assert a.claims["chain"][0] == "GH100 A01 GSP FMC LF"
    assert a.claims["chain"][-1] == "NVIDIA Device Identity CA"
    assert a.claims["nonce"] == NONCE.hex()


def test_the_real_coco_report_affirms_with_its_spdm_nonce():
    a = VERIFIER.appraise(evidence("hopper_coco_report1.txt", "hopper_coco_certs1.txt",
                                   nonce=COCO_REPORT_DATA[:32]), policy(), NOW)
    assert a.passed, a.details
    assert a.claims["driver_version"] == "580.95.05"
    assert a.claims["config"]["feature_flag"] == "SPT"


def test_binary_evidence_and_its_hex_text_are_the_same():
    a = VERIFIER.appraise(evidence(raw=binary()), policy(), NOW)
    assert a.passed
    assert parse_evidence(binary()) == parse_evidence(read("hopperAttestationReport.txt"))


def test_the_leaf_certificate_carries_the_reported_fwid():
    leaf = load_certificates([read("hopper_cert_chain_case1.txt")])[0]
    assert certificate_fwid(leaf).hex() == parse_evidence(binary()).opaque["fwid"]


# ---------------------------------------------------------------- chains (upstream's cases)


def test_case2_only_the_root_is_too_short():
    a = VERIFIER.appraise(evidence(chain="hopper_cert_chain_case2.txt"), policy(), NOW)
    assert "nvidia.chain_too_short" in a.reasons and not a.passed


def test_case3_a_missing_intermediate_breaks_the_chain():
    a = VERIFIER.appraise(evidence(chain="hopper_cert_chain_case3.txt"), policy(), NOW)
    assert a.reasons == ("nvidia.chain_invalid",)
    assert "Provisioner ICA 1" in a.details["nvidia.chain_invalid"]


def test_case4_without_the_signing_certificate_there_is_no_fwid():
    a = VERIFIER.appraise(evidence(chain="hopper_cert_chain_case4.txt"), policy(), NOW)
    assert {"nvidia.fwid_missing", "nvidia.signature_invalid"} <= set(a.reasons)


def test_another_gpus_chain_does_not_sign_this_report():
    a = VERIFIER.appraise(evidence(chain="hopper_coco_certs1.txt"), policy(), NOW)
    assert {"nvidia.signature_invalid", "nvidia.fwid_mismatch"} <= set(a.reasons)


def test_the_root_at_the_end_of_the_chain_file_is_not_trusted_by_itself():
    a = VERIFIER.appraise(evidence(), AppraisalPolicy(), NOW)
    assert a.reasons == ("nvidia.root_untrusted",)
    amd = policy(ATTESTATION / "snp" / "milan_ask_ark_asvk.pem")
    a = VERIFIER.appraise(evidence(), amd, NOW)
    assert a.reasons == ("nvidia.root_untrusted",)
    assert "NVIDIA Device Identity CA" in a.details["nvidia.root_untrusted"]


# ---------------------------------------------------------------- tampering, nonce, clock


@pytest.mark.parametrize("offset", [4, 37 + 8 + 7, 37 + 3000, 4117 - 97],
                         ids=["request nonce", "first measurement", "record", "opaque"])
def test_a_flipped_byte_in_the_signed_messages_breaks_the_signature(offset):
    raw = bytearray(binary())
    raw[offset] ^= 1
    a = VERIFIER.appraise(evidence(raw=bytes(raw), nonce=None), policy(), NOW)
    assert "nvidia.signature_invalid" in a.reasons and a.trust_vector["hardware"] == 99


def test_a_wrong_nonce_is_rejected():
    a = VERIFIER.appraise(evidence(nonce=b"\x02" * 32), policy(), NOW)
    assert a.reasons == ("nonce.mismatch",)


def test_a_nonce_longer_than_spdms_is_refused_not_truncated():
    a = VERIFIER.appraise(evidence("hopper_coco_report1.txt", "hopper_coco_certs1.txt",
                                   nonce=COCO_REPORT_DATA), policy(), NOW)
    assert a.reasons == ("nonce.too_long",)


def test_no_nonce_means_no_pass():
    assert VERIFIER.appraise(evidence(nonce=None), policy(), NOW).reasons == ("nonce.missing",)


def test_before_the_certificates_were_issued_nothing_is_valid():
    # NVIDIA's certificates are valid until 9999-12-31, so only the start can be crossed.
    a = VERIFIER.appraise(evidence(), policy(), datetime(2020, 1, 1, tzinfo=timezone.utc))
    assert a.reasons == ("cert.not_yet_valid",)
    assert a.details["cert.not_yet_valid"].count("valid from") == 5


@pytest.mark.parametrize("damage, fragment", [
    (lambda b: b[:24], "too short"),
    (lambda b: b"\x10" + b[1:], "SPDM 1.1"),
    (lambda b: b[:2000], "past the end"),
    (lambda b: b + b"\x01", "unsigned bytes"),
    (lambda b: b.hex().encode()[:101], "hexadecimal"),  # odd-length hex text
], ids=["short", "version", "truncated", "trailing", "bad hex"])
def test_what_is_not_spdm_evidence_is_malformed(damage, fragment):
    a = VERIFIER.appraise(evidence(raw=damage(binary())), policy(), NOW)
    assert a.reasons == ("nvidia.malformed",) and fragment in a.details["nvidia.malformed"]


def test_damaged_evidence_fails_and_never_raises():
    raw, rng = binary(), random.Random(7)
    variants = [raw[:n] for n in range(0, len(raw), 137)]
    for _ in range(60):
        damaged = bytearray(raw)
        damaged[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        variants.append(bytes(damaged))
    for variant in variants:
        a = VERIFIER.appraise(evidence(raw=variant), policy(), NOW)
        assert not a.passed and a.reasons


def test_zero_padding_after_the_signature_is_tolerated():
    assert VERIFIER.appraise(evidence(raw=binary() + b"\0"), policy(), NOW).passed


def test_a_chain_file_that_is_not_pem_is_malformed():
    ev = dataclasses.replace(evidence(), certificates=(b"-----BEGIN CERTIFICATE-----\nxx",))
    assert VERIFIER.appraise(ev, policy(), NOW).reasons == ("cert.malformed",)
