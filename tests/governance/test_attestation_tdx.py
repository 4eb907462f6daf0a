"""Intel TDX verifier on real quotes and collateral (Phala-Network/dcap-qvl samples).

dcap-qvl does the cryptography; these tests pin how its outcomes become reasons and
how the operator's policy (status, MRTD, debug, nonce) is applied on top.
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gpuplane.governance.attestation import AppraisalPolicy, Evidence
from gpuplane.governance.attestation.tdx import TdxVerifier, check_policy, error_code

ATTESTATION = Path(__file__).resolve().parents[3] / "shared" / "attestation"
TDX = ATTESTATION / "tdx"
pytestmark = pytest.mark.skipif(not TDX.is_dir(), reason=f"real attestation evidence not "
                                f"present at {ATTESTATION} (see shared/attestation/SOURCE.md)")

NOW = datetime(2025, 7, 1, tzinfo=timezone.utc)  # TCB info issued 2025-06-19, next 2025-07-19
OUTDATED_NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)  # its collateral: 2026-02-18..03-20
MRTD = ("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
        "de03ae6dc5f87f27428b2538873118b7")
REPORT_DATA_AT = 48 + 520  # quote header, then TDREPORT 1.0 up to REPORTDATA
VERIFIER = TdxVerifier()


def read(name: str) -> bytes:
    return (TDX / name).read_bytes()


def report_data(quote: str = "tdx_quote") -> bytes:
    return read(quote)[REPORT_DATA_AT:REPORT_DATA_AT + 64]


def evidence(quote: str = "tdx_quote", collateral: str | None = "tdx_quote_collateral.json", *,
             raw: bytes | None = None, nonce: bytes | None | str = "report") -> Evidence:
    return Evidence(kind="tdx", raw=read(quote) if raw is None else raw,
                    collateral=None if collateral is None else (TDX / collateral).read_text(),
                    nonce=report_data(quote) if nonce == "report" else nonce)


def outdated() -> Evidence:
    return evidence("tdx_quote_outdated", "tdx_quote_outdated_collateral.json")


# ---------------------------------------------------------------- real evidence


def test_the_real_quote_is_up_to_date_and_affirms():
    a = VERIFIER.appraise(evidence(), AppraisalPolicy(), NOW)
    assert (a.status, a.passed, a.reasons) == ("affirming", True, ())
    assert a.claims["status"] == "UpToDate" and a.claims["advisory_ids"] == []
    assert a.claims["mr_td"] == MRTD and a.claims["fmspc"] == "B0C06F000000"
    assert a.claims["report_data"] == report_data().hex()
    assert {"rt_mr0", "rt_mr1", "rt_mr2", "rt_mr3"} <= a.claims.keys()
    assert a.claims["nonce_binding"] == "padded"
    assert a.trust_vector == {"instance-identity": 2, "hardware": 2, "configuration": 2,
                              "runtime-opaque": 2}


def test_a_result_expires_when_the_tcb_info_must_be_refreshed():
    a = VERIFIER.appraise(evidence(), AppraisalPolicy(result_lifetime_s=30 * 86400), NOW)
    assert a.expires_at == datetime(2025, 7, 19, 10, 16, 3, tzinfo=timezone.utc)
    assert VERIFIER.appraise(evidence(), AppraisalPolicy(), NOW).expires_at == NOW + timedelta(
        hours=1)


def test_the_outdated_quote_matches_no_tcb_level_of_its_collateral():
    # Its PCK certificate's CPUSVN has SEAMLDR ACM SVN 3; every TCB level in the
    # collateral needs 5, so Intel's matching finds no level (upstream dcap-qvl needs an
    # override to make it pass); the quote and collateral are otherwise genuine.
    a = VERIFIER.appraise(outdated(), AppraisalPolicy(), OUTDATED_NOW)
    assert a.reasons == ("tdx.tcb_not_supported",) and not a.passed


def test_pinning_intels_root_still_verifies():
    collateral = json.loads((TDX / "tdx_quote_collateral.json").read_text())
    root = x509.load_pem_x509_certificates(collateral["tcb_info_issuer_chain"].encode())[-1]
    assert "Intel SGX Root CA" in root.subject.rfc4514_string()
    pinned = AppraisalPolicy(trusted_roots={"tdx": (root.public_bytes(Encoding.DER),)})
    assert VERIFIER.appraise(evidence(), pinned, NOW).passed


# ---------------------------------------------------------------- tampered, swapped, stale


@pytest.mark.parametrize("offset", [REPORT_DATA_AT, 48 + 136, 200],
                         ids=["report data", "mr_td", "td body"])
def test_a_flipped_byte_in_the_quote_breaks_its_signature(offset):
    raw = bytearray(read("tdx_quote"))
    raw[offset] ^= 1
    a = VERIFIER.appraise(evidence(raw=bytes(raw)), AppraisalPolicy(), NOW)
    assert a.reasons == ("tdx.signature_invalid",) and a.trust_vector["hardware"] == 99


def test_a_wrong_nonce_is_rejected():
    a = VERIFIER.appraise(evidence(nonce=b"\x01" * 32), AppraisalPolicy(), NOW)
    assert a.reasons == ("nonce.mismatch",)


def test_no_nonce_means_no_pass():
    assert VERIFIER.appraise(evidence(nonce=None), AppraisalPolicy(), NOW).reasons == (
        "nonce.missing",)


def test_another_root_does_not_vouch_for_intels_chain():
    nvidia_root = (ATTESTATION / "nvidia" / "nvidia_device_root.pem").read_bytes()
    a = VERIFIER.appraise(evidence(), AppraisalPolicy(trusted_roots={"tdx": (nvidia_root,)}),
                          NOW)
    assert a.reasons == ("tdx.chain_invalid",)


@pytest.mark.parametrize("field, old, new, code", [
    ("tcb_info", "UpToDate", "OutOfDate", "tdx.collateral_invalid"),  # signed by Intel
    ("tcb_info", '"fmspc"', '"fmspc_"', "tdx.collateral_malformed"),
    ("qe_identity", '"version"', '"version_"', "tdx.collateral_malformed"),
])
def test_tampered_collateral_is_rejected(field, old, new, code):
    collateral = json.loads((TDX / "tdx_quote_collateral.json").read_text())
    collateral[field] = collateral[field].replace(old, new, 1)
    ev = dataclasses.replace(evidence(), collateral=json.dumps(collateral))
    assert VERIFIER.appraise(ev, AppraisalPolicy(), NOW).reasons == (code,)


def test_collateral_for_another_platform_is_rejected():
    ev = dataclasses.replace(evidence(), collateral=(
        TDX / "tdx_quote_outdated_collateral.json").read_text())
    assert VERIFIER.appraise(ev, AppraisalPolicy(), OUTDATED_NOW).reasons == (
        "tdx.collateral_mismatch",)


@pytest.mark.parametrize("now, code", [
    (datetime(2025, 8, 1, tzinfo=timezone.utc), "collateral.expired"),   # TCB info expired
    (datetime(2026, 11, 28, tzinfo=timezone.utc), "collateral.expired"),  # CRL expired
    (datetime(2025, 6, 1, tzinfo=timezone.utc), "collateral.not_yet_valid"),
])
def test_the_clock_outside_the_collaterals_window_is_rejected(now, code):
    a = VERIFIER.appraise(evidence(), AppraisalPolicy(), now)
    assert a.reasons == (code,) and a.trust_vector["hardware"] == 97


@pytest.mark.parametrize("collateral, code", [(None, "tdx.collateral_malformed"),
                                              ("{}", "tdx.collateral_malformed")])
def test_missing_or_unreadable_collateral_is_malformed(collateral, code):
    ev = dataclasses.replace(evidence(), collateral=collateral)
    assert VERIFIER.appraise(ev, AppraisalPolicy(), NOW).reasons == (code,)


def test_damaged_quotes_fail_and_never_raise():
    raw, rng = read("tdx_quote"), random.Random(7)
    variants = [raw[:n] for n in range(0, len(raw), 173)]
    for _ in range(60):
        damaged = bytearray(raw)
        damaged[rng.randrange(48 + 584)] ^= 1 << rng.randrange(8)  # header and TD report
        variants.append(bytes(damaged))
    for variant in variants:
        a = VERIFIER.appraise(evidence(raw=variant), AppraisalPolicy(), NOW)
        assert not a.passed and a.reasons


def test_what_is_not_a_quote_is_malformed():
    a = VERIFIER.appraise(evidence(raw=b"\x04\x00" + b"\0" * 30), AppraisalPolicy(), NOW)
    assert a.reasons == ("tdx.malformed",)


# ---------------------------------------------------------------- operator policy


def test_a_status_outside_the_accepted_set_is_named():
    a = VERIFIER.appraise(evidence(), AppraisalPolicy(tdx_accepted_statuses=("OutOfDate",)),
                          NOW)
    assert a.reasons == ("tdx.status.UpToDate",)
    claims = {"status": "OutOfDate", "advisory_ids": ["INTEL-SA-01036"],
              "td_attributes": "00" * 8, "mr_td": MRTD}
    [finding] = check_policy(claims, AppraisalPolicy())
    assert finding.code == "tdx.status.OutOfDate" and "INTEL-SA-01036" in finding.detail
    assert check_policy(claims, AppraisalPolicy(
        tdx_accepted_statuses=("UpToDate", "OutOfDate"))) == []


def test_debug_tds_are_refused_unless_allowed():
    a = VERIFIER.appraise(evidence(), AppraisalPolicy(), NOW)
    assert a.claims["td_attributes"] == "0000001000000000"  # DEBUG (bit 0) clear
    debug = {**a.claims, "td_attributes": "0100001000000000"}
    assert [f.code for f in check_policy(debug, AppraisalPolicy())] == ["debug.enabled"]
    assert check_policy(debug, AppraisalPolicy(debug_allowed=True)) == []


def test_an_mrtd_outside_the_allow_list_is_refused():
    a = VERIFIER.appraise(evidence(), AppraisalPolicy(allowed_measurements=("00" * 48,)), NOW)
    assert a.reasons == ("measurement.not_allowed",)
    assert VERIFIER.appraise(evidence(), AppraisalPolicy(allowed_measurements=(MRTD,)),
                             NOW).passed


@pytest.mark.parametrize("message, code", [
    ("ISV enclave report signature is invalid", "tdx.signature_invalid"),
    ("Signature is invalid for qe_identity in quote_collateral", "tdx.collateral_invalid"),
    ("CrlExpired { time: UnixTime(1), next_update: UnixTime(0) }", "collateral.expired"),
    ("TCBInfo issue date is in the future", "collateral.not_yet_valid"),
    ("Failed to parse root CA CRL", "tdx.chain_invalid"),
    ("something new", "tdx.verification_failed"),
])
def test_dcap_qvl_messages_map_to_stable_codes(message, code):
    assert error_code(message) == code
