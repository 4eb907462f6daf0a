"""AMD SEV-SNP verifier on real reports (confidential-containers/trustee test data).

The evidence lives in ../shared/attestation (see its SOURCE.md); nothing is copied
here. Negative cases are built from the real files: a flipped byte, another
certificate, another vendor bundle, a moved clock, a stricter policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gpuplane.governance.attestation import VERIFIERS, AppraisalPolicy, Evidence, VerifierId
from gpuplane.governance.attestation.base import nonce_finding
from gpuplane.governance.attestation.snp import SnpVerifier, check_policy, parse_report

ATTESTATION = Path(__file__).resolve().parents[3] / "shared" / "attestation"
SNP = ATTESTATION / "snp"
pytestmark = pytest.mark.skipif(not SNP.is_dir(), reason=f"real attestation evidence not "
                                f"present at {ATTESTATION} (see shared/attestation/SOURCE.md)")

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)  # inside every SNP certificate's validity
MEASUREMENT = ("a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
               "23500644e0e692e6be917f9050d3d38c")
VERIFIER = SnpVerifier()


def read(name: str) -> bytes:
    return (SNP / name).read_bytes()


def policy(bundle: str = "milan_ask_ark_asvk.pem", **kw) -> AppraisalPolicy:
    return AppraisalPolicy(trusted_roots={"sev-snp": (read(bundle),)}, **kw)


def evidence(report: str = "test-report.bin", cert: str = "test-vcek.der", *,
             raw: bytes | None = None, nonce: bytes | None | str = "report") -> Evidence:
    raw = read(report) if raw is None else raw
    chosen = read(report)[0x50:0x90].rstrip(b"\0") if nonce == "report" else nonce
    return Evidence(kind="sev-snp", raw=raw, certificates=(read(cert),), nonce=chosen)


def flipped(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


# ---------------------------------------------------------------- real evidence verifies


def test_the_real_vcek_report_affirms_with_its_claims():
    a = VERIFIER.appraise(evidence(), policy(), NOW)
    assert (a.status, a.passed, a.reasons) == ("affirming", True, ())
    assert a.claims["measurement"] == MEASUREMENT
    assert a.claims["reported_tcb"] == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
    assert a.claims["chip_id"].startswith("c38427a30d4c7af9")
    assert a.claims["signing_key"] == "vcek" and a.claims["product"] == "Milan-B0"
    assert a.claims["chain"] == ["SEV-VCEK", "SEV-Milan", "ARK-Milan"]
    assert a.claims["debug"] is False and a.claims["nonce_binding"] == "padded"
    assert a.trust_vector == {"instance-identity": 2, "hardware": 2, "configuration": 2,
                              "runtime-opaque": 2}
    assert a.expires_at == NOW + timedelta(hours=1)


def test_the_real_vlek_report_affirms_through_the_asvk():
    a = VERIFIER.appraise(evidence("test-vlek-report.bin", "test-vlek.der"), policy(), NOW)
    assert a.passed, a.details
    assert a.claims["signing_key"] == "vlek" and a.claims["version"] == 3
    assert a.claims["chain"] == ["SEV-VLEK", "SEV-VLEK-Milan", "ARK-Milan"]
    assert a.claims["cpuid"] == {"family": 0x19, "model": 1, "stepping": 1}


def test_the_ear_names_profile_verifier_status_vector_and_policy():
    a = VERIFIER.appraise(evidence(), policy(), NOW)
    ear = a.to_ear(VerifierId(build="gpuplane test", developer="gpuplane"))
    assert ear["eat_profile"] == "tag:github.com,2023:veraison/ear"
    assert ear["iat"] == int(NOW.timestamp()) and ear["exp"] == ear["iat"] + 3600
    assert ear["ear.verifier-id"] == {"build": "gpuplane test", "developer": "gpuplane"}
    sub = ear["submods"]["sev-snp"]
    assert sub["ear.status"] == "affirming"
    assert sub["ear.trustworthiness-vector"]["hardware"] == 2
    assert sub["ear.appraisal-policy-id"] == a.policy_id
    assert a.policy_id.startswith("policy:gpuplane/default@")


def test_a_result_expires_no_later_than_the_vcek():
    a = VERIFIER.appraise(evidence(), policy(result_lifetime_s=10 * 365 * 86400), NOW)
    assert a.expires_at == datetime(2030, 1, 24, 17, 58, 26, tzinfo=timezone.utc)


def test_the_registry_holds_the_snp_verifier():
    assert VERIFIERS["sev-snp"].kind == "sev-snp"


# ---------------------------------------------------------------- tampered or swapped evidence


@pytest.mark.parametrize("offset", [0x08, 0x50, 0x90, 0x1A0, 0x29F],
                         ids=["policy", "report data", "measurement", "chip id", "last signed"])
def test_a_flipped_byte_in_the_signed_body_breaks_the_signature(offset):
    raw = flipped(read("test-report.bin"), offset, bit=1)
    a = VERIFIER.appraise(evidence(raw=raw, nonce=None), policy(), NOW)
    assert "snp.signature_invalid" in a.reasons and not a.passed
    assert a.status == "contraindicated" and a.trust_vector["hardware"] == 99


def test_a_flipped_byte_in_the_signature_breaks_it():
    a = VERIFIER.appraise(evidence(raw=flipped(read("test-report.bin"), 0x2A0)), policy(), NOW)
    assert a.reasons == ("snp.signature_invalid",)


@pytest.mark.parametrize("cert", ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"])
def test_the_invalid_vceks_do_not_chain_nor_match_the_chip(cert):
    a = VERIFIER.appraise(evidence(cert=cert), policy(), NOW)
    assert {"snp.chain_invalid", "snp.signature_invalid", "snp.chip_id_mismatch",
            "snp.tcb_mismatch"} <= set(a.reasons)
    assert a.trust_vector["instance-identity"] == 99


@pytest.mark.parametrize("bundle", ["genoa_ask_ark_asvk.pem", "turin_ask_ark_asvk.pem"])
def test_another_cpu_familys_bundle_does_not_vouch_for_a_milan_vcek(bundle):
    a = VERIFIER.appraise(evidence(), policy(bundle), NOW)
    assert a.reasons == ("snp.chain_invalid",)
    assert "SEV-Milan" in a.details["snp.chain_invalid"]


def test_a_root_that_only_the_evidence_brings_is_not_trusted():
    ev = dataclasses.replace(evidence(), certificates=(read("test-vcek.der"),
                                                       read("milan_ask_ark_asvk.pem")))
    a = VERIFIER.appraise(ev, AppraisalPolicy(), NOW)
    assert a.reasons == ("snp.root_untrusted",)


def test_a_vlek_cannot_stand_in_for_the_vcek_a_report_names():
    a = VERIFIER.appraise(evidence(cert="test-vlek.der"), policy(), NOW)
    assert a.reasons == ("snp.key_missing",)


def test_damaged_reports_fail_and_never_raise():
    raw, rng = read("test-report.bin"), random.Random(7)
    variants = [raw[:n] for n in range(0, len(raw), 61)]
    for _ in range(60):
        damaged = bytearray(raw)
        damaged[rng.randrange(0x330)] ^= 1 << rng.randrange(8)  # signed body, r and s
        variants.append(bytes(damaged))
    for variant in variants:
        a = VERIFIER.appraise(evidence(raw=variant), policy(), NOW)
        assert not a.passed and a.reasons


@pytest.mark.parametrize("raw, why", [(b"\0" * 100, "bytes"),
                                      (b"\x01" + b"\0" * 0x49F, "version 1")])
def test_what_is_not_a_report_is_malformed(raw, why):
    a = VERIFIER.appraise(evidence(raw=raw), policy(), NOW)
    assert a.reasons == ("snp.malformed",) and why in a.details["snp.malformed"]


def test_a_certificate_that_is_not_one_is_malformed():
    ev = dataclasses.replace(evidence(), certificates=(b"not a certificate",))
    assert VERIFIER.appraise(ev, policy(), NOW).reasons == ("cert.malformed",)


# ---------------------------------------------------------------- nonce


def test_a_wrong_nonce_is_rejected():
    a = VERIFIER.appraise(evidence(nonce=b"\x01" * 32), policy(), NOW)
    assert a.reasons == ("nonce.mismatch",)


def test_no_nonce_means_no_freshness_and_no_pass():
    a = VERIFIER.appraise(evidence(nonce=None), policy(), NOW)
    assert a.reasons == ("nonce.missing",) and not a.passed


def test_report_data_may_hold_the_nonce_padded_or_its_sha512():
    nonce = b"gpuplane-nonce"
    assert nonce_finding(nonce.ljust(64, b"\0"), nonce) == (None, "padded")
    assert nonce_finding(hashlib.sha512(nonce).digest(), nonce) == (None, "sha512")
    assert nonce_finding(hashlib.sha512(b"other").digest(), nonce)[0].code == "nonce.mismatch"
    assert nonce_finding(b"\0" * 64, b"")[0].code == "nonce.missing"  # empty is no nonce


# ---------------------------------------------------------------- clock


@pytest.mark.parametrize("now, code", [
    (datetime(2030, 2, 1, tzinfo=timezone.utc), "cert.expired"),
    (datetime(2022, 1, 1, tzinfo=timezone.utc), "cert.not_yet_valid"),
])
def test_the_vcek_is_only_valid_inside_its_window(now, code):
    assert VERIFIER.appraise(evidence(), policy(), now).reasons == (code,)


def test_the_real_vlek_has_expired_by_2026():
    a = VERIFIER.appraise(evidence("test-vlek-report.bin", "test-vlek.der"), policy(),
                          datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert a.reasons == ("cert.expired",) and "SEV-VLEK" in a.details["cert.expired"]


# ---------------------------------------------------------------- operator policy


def test_debug_is_refused_unless_the_policy_allows_it():
    report = parse_report(read("test-report.bin"))
    assert report.debug is False  # the real guest policy 0x3001f has bit 19 clear
    debug_on = dataclasses.replace(report, policy=report.policy | 1 << 19)
    assert [f.code for f in check_policy(debug_on, AppraisalPolicy())] == ["debug.enabled"]
    assert check_policy(debug_on, AppraisalPolicy(debug_allowed=True)) == []


def test_a_debug_report_forged_from_a_real_one_fails_twice():
    raw = flipped(read("test-report.bin"), 0x08 + 19 // 8, bit=19 % 8)
    a = VERIFIER.appraise(evidence(raw=raw), policy(), NOW)
    assert {"snp.signature_invalid", "debug.enabled"} <= set(a.reasons)


def test_a_measurement_outside_the_allow_list_is_refused():
    a = VERIFIER.appraise(evidence(), policy(allowed_measurements=("00" * 48,)), NOW)
    assert a.reasons == ("measurement.not_allowed",) and a.trust_vector["executables"] == 33
    ok = VERIFIER.appraise(evidence(), policy(allowed_measurements=(MEASUREMENT.upper(),)), NOW)
    assert ok.passed and ok.trust_vector["executables"] == 2


def test_a_tcb_below_the_minimum_is_refused():
    a = VERIFIER.appraise(evidence(), policy(snp_min_tcb={"microcode": 116}), NOW)
    assert a.reasons == ("tcb.below_minimum",) and "microcode 115 < 116" in a.details[
        "tcb.below_minimum"]
    assert a.trust_vector["hardware"] == 32
    assert VERIFIER.appraise(evidence(), policy(snp_min_tcb={"microcode": 115, "snp": 8}),
                             NOW).passed


@pytest.mark.parametrize("kw, field", [
    ({"snp_min_tcb": {"fmc": 1}}, "snp_min_tcb.fmc"),
    ({"snp_min_tcb": {"snp": 300}}, "snp_min_tcb.snp"),
    ({"allowed_measurements": ("xyz",)}, "allowed_measurements[0]"),
    ({"result_lifetime_s": 0}, "result_lifetime_s"),
    ({"trusted_roots": {"sev-snp": (b"junk",)}}, "trusted_roots.sev-snp"),
])
def test_an_unusable_policy_names_its_field(kw, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        AppraisalPolicy(**kw)


def test_programming_errors_raise():
    with pytest.raises(ValueError, match="timezone"):
        VERIFIER.appraise(evidence(), policy(), datetime(2025, 6, 1))
    with pytest.raises(ValueError, match="evidence.kind"):
        VERIFIER.appraise(dataclasses.replace(evidence(), kind="tdx"), policy(), NOW)
