"""Governance through the API: policies (global admin only), attestation of a host on REAL
evidence from ../shared/attestation (nonce issued by gpuplane, appraisal stored with its EAR and
audited, failures with reasons), residency at submission, the audit log's checkpoint and proofs,
and every new endpoint tried with every role of another tenant."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from gpuplane.governance import checkpoints

from .conftest import build_world
from functional.dbs import FakeClock

ATTESTATION = Path(__file__).resolve().parents[3] / "shared" / "attestation"
NV_NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
JULY_2025 = dt.datetime(2025, 7, 1, tzinfo=dt.UTC).timestamp()
TENANT_ROLES = ("alice-alpha", "vera-alpha", "audrey-alpha", "bob-beta")


@pytest.fixture
def gw(tmp_path):
    w = build_world(f"sqlite:///{tmp_path / 'g.db'}", tmp_path, clock=FakeClock(JULY_2025))
    yield w
    w.client.close()
    w.client.app.state.store.dispose()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_only_a_global_admin_sets_policies_and_sites(gw):
    body = {"classifications": {"eu": {"jurisdictions": ["EU"]}}}
    for user in TENANT_ROLES:
        r = gw.client.put("/v1/policies/residency", json=body, headers=gw.h(user))
        assert r.status_code == 403, (user, r.text)
        r = gw.client.post("/v1/sites", json={"name": "x", "jurisdiction": "CH"},
                           headers=gw.h(user))
        assert r.status_code == 403
    r = gw.client.put("/v1/policies/residency", json=body, headers=gw.h("admin"))
    assert r.status_code == 200 and r.json()["version"] == 1
    bad = gw.client.put("/v1/policies/residency", headers=gw.h("admin"),
                        json={"classifications": {"eu": {"jurisdictions": ["Europe"]}}})
    assert bad.status_code == 422 and "classifications.eu.jurisdictions.0" in bad.text
    assert gw.client.put("/v1/policies/nope", json={}, headers=gw.h("admin")).status_code == 404
    # every audit entry from now on carries the policy set's hash
    gw.client.post("/v1/organisations", json={"name": "org-gamma"}, headers=gw.h("admin"))
    last = gw.client.get("/v1/audit", headers=gw.h("admin"), params={"limit": 500}).json()
    assert last["items"][-1]["policy_hash"] and last["items"][0]["policy_hash"] == ""


def test_residency_is_checked_at_submission(gw):
    gw.client.put("/v1/policies/residency", headers=gw.h("admin"), json={"classifications": {
        "swiss": {"jurisdictions": ["CH"]}, "eu": {"jurisdictions": ["EU"]}}})
    job = {"project": "proj-alpha", "tasks": [{"command": ["x"], "resources": {"gpus": 1}}]}
    r = gw.client.post("/v1/workloads", headers=gw.h("alice-alpha"), json={
        **job, "name": "a", "residency": {"classification": "secret"}})
    assert r.status_code == 422 and "residency.classification" in r.text
    r = gw.client.post("/v1/workloads", headers=gw.h("alice-alpha"), json={
        **job, "name": "b", "residency": {"classification": "swiss",
                                          "jurisdictions": ["EU/DE"]}})
    assert r.status_code == 422 and "allows none of them" in r.text
    r = gw.client.post("/v1/workloads", headers=gw.h("alice-alpha"), json={
        **job, "name": "c", "residency": {"classification": "eu"}})
    assert r.status_code == 201, r.text


needs_evidence = pytest.mark.skipif(not ATTESTATION.is_dir(),
                                    reason=f"attestation evidence not present ({ATTESTATION})")


@needs_evidence
def test_host_attestation_on_real_nvidia_evidence(gw):
    A = gw.h("admin")
    root = (ATTESTATION / "nvidia" / "nvidia_device_root.pem").read_text()
    assert gw.client.put("/v1/policies/attestation", headers=A,
                         json={"roots": {"nvidia-cc": [root]}}).status_code == 200
    ch = gw.client.post("/v1/hosts/gpu-1/attestation/challenge", headers=A)
    assert ch.status_code == 200 and len(ch.json()["nonce"]) == 64
    evidence = {"kind": "nvidia-cc", "nonce": NV_NONCE,
                "evidence": _b64(ATTESTATION / "nvidia" / "hopperAttestationReport.txt"),
                "certificates": [_b64(ATTESTATION / "nvidia" / "hopper_cert_chain_case1.txt")]}
    # real evidence carries the nonce it was produced for: one gpuplane never issued is refused
    r = gw.client.post("/v1/hosts/gpu-1/attestation", headers=A, json=evidence)
    assert r.status_code == 200 and r.json()["reasons"] == ["nonce.unknown"]
    with gw.client.app.state.store.write() as tx:  # as if gpuplane had issued that nonce
        tx.attestation.add_challenge(NV_NONCE, "gpu-1", JULY_2025, JULY_2025 + 60)
    r = gw.client.post("/v1/hosts/gpu-1/attestation", headers=A, json=evidence)
    out = r.json()
    assert out["passed"] and out["status"] == "affirming", out
    assert out["ear"]["submods"]["nvidia-cc"]["ear.status"] == "affirming"
    # the nonce is used up: a replay fails
    again = gw.client.post("/v1/hosts/gpu-1/attestation", headers=A, json=evidence).json()
    assert not again["passed"] and again["reasons"] == ["nonce.unknown"]
    # a wrong chain fails with its reason, recorded and audited
    with gw.client.app.state.store.write() as tx:
        tx.attestation.add_challenge(NV_NONCE, "gpu-1", JULY_2025, JULY_2025 + 60)
    bad = gw.client.post("/v1/hosts/gpu-1/attestation", headers=A, json={
        **evidence, "certificates": [_b64(ATTESTATION / "nvidia" / "hopper_cert_chain_case2.txt")]})
    assert not bad.json()["passed"] and "nvidia.chain_too_short" in bad.json()["reasons"]
    hist = gw.client.get("/v1/hosts/gpu-1/attestation", headers=A).json()
    assert [h["passed"] for h in hist] == [False, False, True, False]
    audit = gw.client.get("/v1/audit", headers=A, params={"action": "host.attest"}).json()
    assert [e["outcome"] for e in audit["items"]] == ["refused", "ok", "refused", "refused"]
    assert "nvidia.chain_too_short" in audit["items"][-1]["detail"]["reasons"]


def test_tenants_cannot_attest_or_read_the_whole_log(gw):
    for user in TENANT_ROLES:
        h = gw.h(user)
        assert gw.client.post("/v1/hosts/gpu-1/attestation/challenge", headers=h
                              ).status_code == 403
        r = gw.client.post("/v1/hosts/gpu-1/attestation", headers=h, json={
            "kind": "software", "nonce": "00" * 32, "evidence": "e30="})
        assert r.status_code == 403
        assert gw.client.get("/v1/audit/export", headers=h).status_code == 403
        assert gw.client.get("/v1/audit/proof/inclusion", headers=h,
                             params={"seq": 1}).status_code in (403, 404)


def test_checkpoint_key_and_inclusion_proof_over_the_api(gw, tmp_path):
    A = gw.h("admin")
    key = checkpoints.load_or_create_key(tmp_path / "home" / "audit-key.pem")  # the world's
    gw.client.post("/v1/organisations", json={"name": "org-gamma"}, headers=A)
    with gw.client.app.state.store.write() as tx:
        cp = checkpoints.make_checkpoint(tx, checkpoints.notary_for(tx, key, None), "test", 1.0)
    got = gw.client.get("/v1/audit/checkpoint", headers=A).json()
    assert got["size"] == cp.size and got["note"] == cp.note
    keys = gw.client.get("/v1/audit/key", headers=gw.h("vera-alpha")).json()
    assert keys["public_keys"] == [checkpoints.public_pem(key)]
    proof = gw.client.get("/v1/audit/proof/inclusion", headers=A, params={"seq": 3}).json()
    assert proof["size"] == cp.size and proof["proof"]
    # a scoped auditor gets proofs only for entries of its own organisation
    mine = gw.client.get("/v1/audit", headers=gw.h("audrey-alpha")).json()["items"]
    seq = mine[0]["seq"]
    ok = gw.client.get("/v1/audit/proof/inclusion", headers=gw.h("audrey-alpha"),
                       params={"seq": seq})
    assert ok.status_code == 200
    others = [s for s in range(1, cp.size + 1) if s not in {e["seq"] for e in mine}]
    r = gw.client.get("/v1/audit/proof/inclusion", headers=gw.h("audrey-alpha"),
                      params={"seq": others[0]})
    assert r.status_code == 404


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def _cases():
    snp, nv, tdx = ATTESTATION / "snp", ATTESTATION / "nvidia", ATTESTATION / "tdx"
    snp_nonce = (snp / "test-report.bin").read_bytes()[0x50:0x90].rstrip(b"\0").hex()
    tdx_nonce = (tdx / "tdx_quote").read_bytes()[568:632].hex()
    snp_ok = dict(kind="sev-snp", raw=(snp / "test-report.bin").read_bytes(),
                  certs=[snp / "test-vcek.der"], nonce=snp_nonce, collateral=None)
    nv_ok = dict(kind="nvidia-cc", raw=(nv / "hopperAttestationReport.txt").read_bytes(),
                 certs=[nv / "hopper_cert_chain_case1.txt"], nonce=NV_NONCE, collateral=None)
    tdx_ok = dict(kind="tdx", raw=(tdx / "tdx_quote").read_bytes(), certs=[], nonce=tdx_nonce,
                  collateral=(tdx / "tdx_quote_collateral.json").read_text())
    return [
        ("snp", snp_ok, None, JULY_2025),
        ("snp flipped byte", {**snp_ok, "raw": _flip(snp_ok["raw"], 0x90)},
         "snp.signature_invalid", JULY_2025),
        ("snp wrong nonce", {**snp_ok, "nonce": "ab" * 32}, "nonce.mismatch", JULY_2025),
        ("snp wrong chain", {**snp_ok, "certs": [snp / "test-vcek-invalid-new.der"]},
         "snp.chain_invalid", JULY_2025),
        ("snp expired", snp_ok, "cert.expired", dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
         .timestamp()),
        ("nvidia", nv_ok, None, JULY_2025),
        ("nvidia wrong nonce", {**nv_ok, "nonce": "cd" * 32}, "nonce.mismatch", JULY_2025),
        ("nvidia missing intermediate", {**nv_ok, "certs": [nv / "hopper_cert_chain_case3.txt"]},
         "nvidia.chain_invalid", JULY_2025),
        ("tdx", tdx_ok, None, JULY_2025),
        ("tdx flipped byte", {**tdx_ok, "raw": _flip(tdx_ok["raw"], 200)},
         "tdx.signature_invalid", JULY_2025),
        ("tdx expired collateral", tdx_ok, "collateral.expired",
         dt.datetime(2026, 11, 28, tzinfo=dt.UTC).timestamp()),
    ]


@needs_evidence
def test_every_vector_verifies_and_every_negative_is_audited_with_its_reason(tmp_path):
    snp_roots = (ATTESTATION / "snp" / "milan_ask_ark_asvk.pem").read_text()
    nv_root = (ATTESTATION / "nvidia" / "nvidia_device_root.pem").read_text()
    for name, case, reason, at in _cases():
        clock = FakeClock(at)
        home = tmp_path / name.replace(" ", "-")
        w = build_world(f"sqlite:///{home}.db", home, clock=clock)
        try:
            A = w.h("admin")
            assert w.client.put("/v1/policies/attestation", headers=A, json={
                "roots": {"sev-snp": [snp_roots], "nvidia-cc": [nv_root]}}).status_code == 200
            with w.client.app.state.store.write() as tx:  # the nonce the evidence was made for
                tx.attestation.add_challenge(case["nonce"], "gpu-1", at, at + 60)
            r = w.client.post("/v1/hosts/gpu-1/attestation", headers=A, json={
                "kind": case["kind"], "nonce": case["nonce"],
                "evidence": base64.b64encode(case["raw"]).decode(),
                "certificates": [_b64(p) for p in case["certs"]],
                "collateral": case["collateral"]})
            assert r.status_code == 200, (name, r.text)
            out = r.json()
            entry = w.client.get("/v1/audit", headers=A, params={"action": "host.attest"}
                                 ).json()["items"][-1]
            if reason is None:
                assert out["passed"], (name, out["reasons"])
                assert entry["outcome"] == "ok" and out["expires_at"] > at
            else:
                assert not out["passed"] and reason in out["reasons"], (name, out["reasons"])
                assert entry["outcome"] == "refused" and reason in entry["detail"]["reasons"]
        finally:
            w.client.close()
            w.client.app.state.store.dispose()
