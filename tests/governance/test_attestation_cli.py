"""``gpuplane attestation verify`` on the real evidence, plus the verifier registry and
the development-only software verifier (which has no CLI kind)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuplane.cli.main import _register, app
from gpuplane.domain.errors import GpuplaneError
from gpuplane.governance.attestation import (
    VERIFIERS,
    AppraisalPolicy,
    Evidence,
    VerifierId,
    get_verifier,
)

ATTESTATION = Path(__file__).resolve().parents[3] / "shared" / "attestation"
SNP, TDX, NV = ATTESTATION / "snp", ATTESTATION / "tdx", ATTESTATION / "nvidia"
needs_evidence = pytest.mark.skipif(
    not ATTESTATION.is_dir(),
    reason=f"real attestation evidence not present at {ATTESTATION} "
           "(see shared/attestation/SOURCE.md)")

SNP_NONCE = "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2"
NV_NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"


@pytest.fixture(scope="module")
def gpuplane():
    _register()
    runner = CliRunner()

    def run(*args: str | Path):
        return runner.invoke(app, ["attestation", "verify", *map(str, args)])
    return run


def snp_args(*extra: str | Path) -> list[str | Path]:
    return ["sev-snp", SNP / "test-report.bin", "--cert", SNP / "test-vcek.der",
            "--root", SNP / "milan_ask_ark_asvk.pem", "--at", "2025-06-01T00:00:00Z", *extra]


def tdx_args(*extra: str | Path) -> list[str | Path]:
    return ["tdx", TDX / "tdx_quote", "--collateral", TDX / "tdx_quote_collateral.json",
            "--at", "2025-07-01", *extra]


def nv_args(chain: str = "hopper_cert_chain_case1.txt", *extra: str | Path):
    return ["nvidia-cc", NV / "hopperAttestationReport.txt", "--cert", NV / chain,
            "--root", NV / "nvidia_device_root.pem", "--at", "2025-07-01", *extra]


# ---------------------------------------------------------------- passing evidence: exit 0


@needs_evidence
def test_the_real_snp_report_passes(gpuplane):
    r = gpuplane(*snp_args("--nonce", SNP_NONCE))
    assert r.exit_code == 0, r.output
    assert "sev-snp: PASS (affirming)" in r.output
    assert "SEV-VCEK -> SEV-Milan -> ARK-Milan" in r.output


@needs_evidence
def test_the_real_tdx_quote_passes_as_json_with_its_ear(gpuplane):
    quote = (TDX / "tdx_quote").read_bytes()
    r = gpuplane(*tdx_args("--nonce", quote[568:632].hex(), "--json"))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["appraisal"]["passed"] is True and out["appraisal"]["claims"]["status"] == "UpToDate"
    ear = out["ear"]
    assert ear["eat_profile"] == "tag:github.com,2023:veraison/ear"
    assert ear["submods"]["tdx"]["ear.status"] == "affirming"
    assert ear["ear.verifier-id"]["build"].startswith("gpuplane ")
    assert ear["exp"] - ear["iat"] == 3600


@needs_evidence
def test_the_real_nvidia_report_passes(gpuplane):
    r = gpuplane(*nv_args("hopper_cert_chain_case1.txt", "--nonce", NV_NONCE))
    assert r.exit_code == 0, r.output
    assert "nvidia-cc: PASS" in r.output and "fwid: f5c384ae" in r.output


# ---------------------------------------------------------------- failing evidence: exit 1


@needs_evidence
@pytest.mark.parametrize("args, reason", [
    (snp_args("--nonce", "00" * 32), "nonce.mismatch"),
    (snp_args(), "nonce.missing"),
    (["sev-snp", SNP / "test-report.bin", "--cert", SNP / "test-vcek.der", "--root",
      SNP / "genoa_ask_ark_asvk.pem", "--nonce", SNP_NONCE, "--at", "2025-06-01"],
     "snp.chain_invalid"),
    (snp_args("--nonce", SNP_NONCE, "--at", "2031-01-01"), "cert.expired"),
    (tdx_args("--nonce", "00", "--at", "2026-11-28"), "collateral.expired"),
    (["tdx", TDX / "tdx_quote_outdated", "--collateral",
      TDX / "tdx_quote_outdated_collateral.json", "--at", "2026-03-01", "--nonce", "00"],
     "tdx.tcb_not_supported"),
    (nv_args("hopper_cert_chain_case2.txt", "--nonce", NV_NONCE), "nvidia.chain_too_short"),
    (nv_args("hopper_cert_chain_case3.txt", "--nonce", NV_NONCE), "nvidia.chain_invalid"),
    (nv_args("hopper_cert_chain_case4.txt", "--nonce", NV_NONCE), "nvidia.fwid_missing"),
], ids=["wrong nonce", "no nonce", "genoa bundle", "vcek expired", "crl expired",
        "outdated tdx", "nvidia case2", "nvidia case3", "nvidia case4"])
def test_failing_evidence_exits_1_and_prints_each_reason(gpuplane, args, reason):
    r = gpuplane(*args)
    assert r.exit_code == 1, r.output
    assert "FAIL (contraindicated)" in r.output and f"  {reason}: " in r.output


@needs_evidence
def test_a_failing_appraisal_in_json_still_exits_1(gpuplane):
    r = gpuplane(*snp_args("--json"))
    assert r.exit_code == 1
    assert json.loads(r.stdout)["ear"]["submods"]["sev-snp"]["gpuplane.reasons"] == [
        "nonce.missing"]


# ---------------------------------------------------------------- unusable input: exit 2


@needs_evidence
@pytest.mark.parametrize("args, fragment", [
    (["sev-snp", SNP / "test-report.bin", "--cert", SNP / "test-vcek.der"],
     "--root is required for sev-snp"),
    (["nvidia-cc", NV / "hopperAttestationReport.txt", "--cert",
      NV / "hopper_cert_chain_case1.txt"], "--root is required for nvidia-cc"),
    (["tdx", TDX / "tdx_quote"], "--collateral is required for tdx"),
    (["tdx", TDX / "tdx_quote", "--collateral", TDX / "tdx_quote_collateral.json", "--cert",
      SNP / "test-vcek.der"], "--cert is not used for tdx"),
    (snp_args("--collateral", TDX / "tdx_quote_collateral.json"), "only used for tdx"),
    (snp_args("--nonce", "xyz"), "--nonce: 'xyz' is not hex"),
    (snp_args("--at", "yesterday"), "--at: 'yesterday' is not an ISO 8601"),
    (["sev-snp", SNP / "nope.bin", "--root", SNP / "milan_ask_ark_asvk.pem"],
     "cannot read evidence"),
    (["sev-snp", SNP / "test-report.bin", "--root", SNP / "test-report.bin"], "--root:"),
    (["sev-snp", TDX / "tdx_quote", "--root", SNP / "milan_ask_ark_asvk.pem"],
     "[snp.malformed]"),
    (["tdx", SNP / "test-report.bin", "--collateral", TDX / "tdx_quote_collateral.json"],
     "[tdx.malformed]"),
    (["tdx", TDX / "tdx_quote", "--collateral", SNP / "test-report.bin"], "collateral"),
    (["nvidia-cc", NV / "hopperAttestationReport.txt", "--cert", SNP / "test-report.bin",
      "--root", NV / "nvidia_device_root.pem"], "[cert.malformed]"),
])
def test_unusable_input_exits_2_with_one_line(gpuplane, args, fragment):
    r = gpuplane(*args)
    assert r.exit_code == 2, r.output
    assert fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.output


def test_an_unknown_kind_is_a_usage_error(gpuplane):
    r = gpuplane("sgx", "x")
    assert r.exit_code == 2 and "sev-snp" in r.output


def test_the_help_says_how_roots_are_given(gpuplane):
    r = CliRunner().invoke(app, ["attestation", "verify", "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert "REQUIRED for sev-snp" in r.output and "never trusted by itself" in r.output


@needs_evidence
def test_the_installed_command_runs_without_a_traceback():
    cmd = [sys.executable, "-m", "gpuplane", "attestation", "verify", *map(str, nv_args(
        "hopper_cert_chain_case3.txt", "--nonce", NV_NONCE))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "nvidia.chain_invalid" in done.stdout
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- registry and software


NOW = datetime(2025, 7, 1, tzinfo=timezone.utc)


def software(nonce: str = "0a0b", measurement: str = "ff" * 4) -> Evidence:
    return Evidence(kind="software", raw=json.dumps(
        {"nonce": nonce, "measurement": measurement}).encode(), nonce=bytes.fromhex("0a0b"))


def test_the_registry_lists_every_kind_and_names_them_when_asked_for_another():
    assert set(VERIFIERS) == {"sev-snp", "tdx", "nvidia-cc", "software"}
    assert all(v.kind == k for k, v in VERIFIERS.items())
    with pytest.raises(GpuplaneError) as err:
        get_verifier("sgx")
    assert err.value.code == "gpuplane.attestation.unknown_kind"
    assert "sev-snp, tdx, nvidia-cc, software" in err.value.detail


def test_software_evidence_is_refused_by_default():
    a = get_verifier("software").appraise(software(), AppraisalPolicy(), NOW)
    assert (a.status, a.passed, a.reasons) == ("contraindicated", False,
                                               ("software.not_allowed",))


def test_software_evidence_allowed_is_only_a_warning_and_says_insecure():
    a = get_verifier("software").appraise(software(), AppraisalPolicy(allow_software=True), NOW)
    assert (a.status, a.passed) == ("warning", True)
    assert a.claims["insecure"] is True and a.reasons == ("software.insecure",)
    ear = a.to_ear(VerifierId(build="t", developer="t"))
    assert ear["submods"]["software"]["ear.status"] == "warning"
    assert "ear.trustworthiness-vector" not in ear["submods"]["software"]


@pytest.mark.parametrize("evidence, code", [
    (software(nonce="0c0d"), "nonce.mismatch"),
    (Evidence(kind="software", raw=b"{not json", nonce=b"\x0a\x0b"), "software.malformed"),
    (Evidence(kind="software", raw=b'{"nonce": "0a0b"}', nonce=b"\x0a\x0b"),
     "software.malformed"),
])
def test_allowed_software_evidence_still_needs_its_nonce_and_shape(evidence, code):
    a = get_verifier("software").appraise(evidence, AppraisalPolicy(allow_software=True), NOW)
    assert code in a.reasons and not a.passed


def test_allowed_software_evidence_obeys_the_measurement_allow_list():
    pol = AppraisalPolicy(allow_software=True, allowed_measurements=("00",))
    a = get_verifier("software").appraise(software(), pol, NOW)
    assert "measurement.not_allowed" in a.reasons and not a.passed
