"""The exit path (docs/exit.md): ``gpuplane export`` / ``gpuplane import``.

A state with tenancy, inventory, quotas, policies, workloads whose tasks ran and finished
(usage, events, scheduler memory), attestation results and a signed audit checkpoint is
exported, imported into a fresh store, and exported again: the files are identical apart
from the documented volatile fields and the import's own audit continuation; the imported
log verifies and a consistency proof from the exported checkpoint to the new one holds.
Every kind of tampering makes the import refuse and write nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from gpuplane.control.loop import ControlLoop
from gpuplane.domain.workloads import WorkloadSpec
from gpuplane.drivers.sim import SimDriver
from gpuplane.governance import audit, checkpoints, merkle, note
from gpuplane.service import Principal, Services, Unauthenticated
from gpuplane.service.exchange import canonical_manifest, export_state
from gpuplane.service.exchange_import import import_state, verify_export
from gpuplane.service.specs import (GpuSpec, HostSpec, OrganisationSpec, PriorityClassSpec,
                                    ProjectSpec, QuotaSpec, RoleBindingSpec, SiteSpec, TokenSpec,
                                    UserSpec)
from gpuplane.store import Store
from gpuplane.store import exchange as rows
from gpuplane.store.exchange import ExportRejected

from .dbs import FakeClock, database_params, make_db_url

ADMIN = Principal.system("admin")
AUDIT_FILES = {"audit.jsonl", "checkpoint.txt", "audit-log.yaml"}
ORIGIN = "test.example/log"


@pytest.fixture(params=database_params())
def stores(request, tmp_path):
    """A source and a target store on the same kind of database."""
    urls = [make_db_url(request.param, tmp_path / name) for name in ("a", "b")]
    out = []
    for gen in urls:
        url = next(gen)
        if url.startswith("sqlite"):
            Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        store = Store(url)
        store.migrate()
        out.append(store)
    yield out
    for store, gen in zip(out, urls):
        store.dispose()
        next(gen, None)


def build_state(store: Store, home: Path, clock: FakeClock) -> tuple[Ed25519PrivateKey, str]:
    """Everything an installation knows; returns (its audit key, a token it issued)."""
    svc = Services(store, clock=clock)
    svc.bootstrap_admin()
    inv, ten, pol = svc.inventory, svc.tenancy, svc.policy
    inv.create_site(ADMIN, SiteSpec(name="eu-de-1", jurisdiction="EU/DE"))
    for name, model, n in (("h100-a", "H100-80GB", 4), ("a100-a", "A100-80GB", 2)):
        inv.register_host(ADMIN, HostSpec(
            name=name, site="eu-de-1", cpu=64, memory="512Gi", driver="sim",
            labels={"rack": "r1"},
            gpus=[GpuSpec(index=i, model=model, memory_mib=81920) for i in range(n)]))
    ten.create_organisation(ADMIN, OrganisationSpec(name="acme", display_name="Acme Ümlaut"))
    ten.create_project(ADMIN, ProjectSpec(name="vision", organisation="acme", weight=2.5,
                                          cohort="research"))
    ten.create_user(ADMIN, UserSpec(name="ada", email="ada@example.org", organisation="acme"))
    ten.grant_role(ADMIN, RoleBindingSpec(user="ada", role="member", scope="project",
                                          scope_name="vision"))
    _, token = ten.create_token(ADMIN, TokenSpec(name="ci", user="ada"))
    pol.set_quota(ADMIN, QuotaSpec(project="vision", resource="gpu", guaranteed=4,
                                   borrowing_limit=2))
    pol.set_quota(ADMIN, QuotaSpec(project="default", resource="gpu", guaranteed=2))
    pol.create_priority_class(ADMIN, PriorityClassSpec(name="urgent", value=5000,
                                                       description="on call"))
    svc.governance.set_policy(ADMIN, "residency", {"classifications": {
        "eu-personal": {"jurisdictions": ["EU"]}}})
    loop = ControlLoop(store, {"sim": SimDriver(home, clock=clock)}, holder="test",
                       lease_ttl_s=3600, clock=clock, memory_every_s=1.0)
    try:
        for i, (project, seconds) in enumerate((("vision", "30"), ("default", "30"),
                                                ("vision", "100000"))):
            svc.workloads.submit_workload(ADMIN, WorkloadSpec(
                name=f"train-{i}", project=project,
                labels={"gpuplane.io/sim-duration-s": seconds},
                tasks=[{"command": ["train"], "resources": {"gpus": 1}}]))
        for _ in range(3):
            loop.tick()
            clock.advance(20)
        for _ in range(3):
            loop.tick()
            clock.advance(5)
    finally:
        loop.release()
    with store.write() as tx:
        tx.attestation.add_result("h100-a", "sev-snp", True, "affirming", [],
                                  {"chip_id": "c1"}, {"ear.status": "affirming"}, clock(),
                                  clock() + 600)
    key = Ed25519PrivateKey.generate()
    with store.write() as tx:
        checkpoints.make_checkpoint(tx, checkpoints.notary_for(tx, key, ORIGIN),
                                    "interval", clock())
    clock.advance(1)
    svc.tenancy.create_user(ADMIN, UserSpec(name="bob"))  # the log grows past the checkpoint
    return key, token


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _verifiers(origin: str, *keys: Ed25519PrivateKey) -> list[note.Verifier]:
    return [note.make_verifier(origin, k.public_key()) for k in keys]


def assert_continued(first: Path, second: Path, key_a: Ed25519PrivateKey,
                     key_b: Ed25519PrivateKey, report) -> None:
    """``second`` (exported after importing ``first``) holds the same state, and its audit log
    is ``first``'s continued by the import: the documented differences and no others."""
    f1, f2 = _files(first), _files(second)
    assert f1.keys() == f2.keys()
    differ = sorted(n for n in f1 if f1[n] != f2[n])
    assert differ == sorted(AUDIT_FILES | {"manifest.json", "manifest.sig", "audit-key.pem"})
    # the manifest differs in created_at and the audit files' hashes only
    m1, m2 = (json.loads(f["manifest.json"]) for f in (f1, f2))
    for m in (m1, m2):
        m["created_at"] = m["checkpoint"] = None
        for name in AUDIT_FILES:
            m["files"].pop(name)
    assert m1 == m2
    # the audit log: the exported one, then system.import and the import's checkpoint
    assert f2["audit.jsonl"].startswith(f1["audit.jsonl"])
    tail = [json.loads(line) for line in f2["audit.jsonl"][len(f1["audit.jsonl"]):].splitlines()]
    assert len(tail) == 2 and tail[0]["action"] == "system.import"
    assert tail[0]["seq"] == report.new_size and tail[1]["size"] == report.new_size
    assert tail[0]["detail"]["checkpoint"]["size"] == report.old_size
    ident1, ident2 = (yaml.safe_load(f["audit-log.yaml"]) for f in (f1, f2))
    assert ident2["origin"] == ident1["origin"] == ORIGIN
    assert ident2["public_keys"] == [*ident1["public_keys"], checkpoints.public_pem(key_b)]
    assert ident2["checkpoints"][:-1] == ident1["checkpoints"]
    assert ident2["checkpoints"][-1]["reason"] == "import"
    # the continued log verifies against the exported checkpoint and the new one (both keys)
    log = audit.read_log(second / "audit.jsonl")
    both = _verifiers(ORIGIN, key_a, key_b)
    for trusted in (f1["checkpoint.txt"], f2["checkpoint.txt"]):
        result = audit.verify_log(log, both, trusted=trusted.decode())
        assert result.ok, result.problems


def test_export_import_export_round_trip(stores, tmp_path):
    src, dst = stores
    clock = FakeClock()
    key_a, token = build_state(src, tmp_path / "home-a", clock)
    concepts = {c.file: c for c in rows.CONCEPTS}
    with src.read() as tx:
        usage_rows = rows.count(tx, concepts["usage.jsonl"])
        sched = rows.count(tx, concepts["scheduler-state.jsonl"])
    assert usage_rows >= 2 and sched >= 1  # tasks ran and finished, fair share remembered

    first = tmp_path / "export-1"
    rep1 = export_state(src, first, key_a, now=clock())
    assert rep1.new_checkpoint and rep1.checkpoint_size == rep1.audit_size
    clock.advance(60)
    again = tmp_path / "export-1b"
    export_state(src, again, key_a, now=clock())
    f1, f1b = _files(first), _files(again)  # nothing changed: only the manifest's time
    assert f1.keys() == f1b.keys()
    assert [n for n in f1 if f1[n] != f1b[n]] == ["manifest.json", "manifest.sig"]
    m1, m1b = json.loads(f1["manifest.json"]), json.loads(f1b["manifest.json"])
    assert {**m1, "created_at": None} == {**m1b, "created_at": None}

    pub_a = tmp_path / "a.pub"
    pub_a.write_text(checkpoints.public_pem(key_a))
    key_b = Ed25519PrivateKey.generate()
    verified = verify_export(first, pub_a)
    report = import_state(dst, verified, key_b, now=clock())
    assert report.records["workloads.jsonl"] == 3 and report.key_added
    assert report.old_size == rep1.checkpoint_size and report.new_size == rep1.audit_size + 1
    merkle.verify_consistency(report.old_size, report.new_size, bytes.fromhex(report.old_root),
                              bytes.fromhex(report.new_root),
                              [bytes.fromhex(h) for h in report.proof])

    second = tmp_path / "export-2"
    export_state(dst, second, key_b, now=clock())
    assert_continued(first, second, key_a, key_b, report)
    # the second export imports too: a log signed by two installations' keys
    third = Store(f"sqlite:///{tmp_path / 'c.db'}")
    third.migrate()
    try:
        chained = import_state(third, verify_export(second, None), Ed25519PrivateKey.generate(),
                             now=clock())
        assert chained.old_size == report.new_size and chained.new_size == report.new_size + 1
    finally:
        third.dispose()

    # the new installation works: new ids do not collide, old tokens cannot authenticate
    svc_b = Services(dst, clock=clock)
    svc_b.tenancy.create_project(ADMIN, ProjectSpec(name="after", organisation="acme"))
    svc_b.workloads.submit_workload(ADMIN, WorkloadSpec(
        name="after-import", project="vision", tasks=[{"command": ["x"]}]))
    with pytest.raises(Unauthenticated):
        svc_b.auth.authenticate(token)


def _resign(d: Path, key: Ed25519PrivateKey, origin: str, *, swap_key: bool = True) -> None:
    """What an attacker does after changing files: new hashes, a new signature, own key."""
    m = json.loads((d / "manifest.json").read_text())
    for name, info in m["files"].items():
        data = (d / name).read_bytes()
        info["sha256"], info["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    text = canonical_manifest(m)
    (d / "manifest.json").write_text(text)
    (d / "manifest.sig").write_text(note.sign_note(text, [note.make_signer(origin, key)]))
    if swap_key:
        (d / "audit-key.pem").write_text(checkpoints.public_pem(key))


def _edit_yaml(d: Path) -> None:
    p = d / "projects.yaml"
    p.write_text(p.read_text().replace("weight: 2.5", "weight: 9.5"))


def _drop_audit_line(d: Path) -> None:
    p = d / "audit.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:3] + lines[4:]))


ATTACKER = Ed25519PrivateKey.generate()
# label: (tamper(dir, the installation's key), import with --key?, what the refusal says)
TAMPERING = {
    "changed yaml value": (lambda d, k: _edit_yaml(d), False, "projects.yaml: its SHA-256"),
    "changed yaml value, re-hashed": (
        lambda d, k: (_edit_yaml(d), _resign(d, ATTACKER, ORIGIN, swap_key=False)),
        False, "manifest.sig does not verify"),
    "removed audit line": (lambda d, k: _drop_audit_line(d), False,
                           "audit.jsonl: its SHA-256"),
    "removed audit line, re-signed with the stolen key": (
        lambda d, k: (_drop_audit_line(d), _resign(d, k, ORIGIN)),
        False, "audit.jsonl does not verify against checkpoint.txt: leaf 4"),
    "swapped key": (lambda d, k: (d / "audit-key.pem").write_text(
        checkpoints.public_pem(ATTACKER)), False, "manifest.sig does not verify"),
    "everything re-signed, operator's --key": (
        lambda d, k: (_edit_yaml(d), _resign(d, ATTACKER, ORIGIN)), True,
        "manifest.sig does not verify with --key"),
    "everything re-signed, no --key": (
        lambda d, k: (_edit_yaml(d), _resign(d, ATTACKER, ORIGIN)), False,
        "the key that signed manifest.sig is not one of the audit log's keys"),
    "a record with an unknown field, re-signed with the stolen key": (
        lambda d, k: ((d / "sites.yaml").write_text((d / "sites.yaml").read_text().replace(
            "  name: eu-de-1", "  name: eu-de-1\n  colour: blue")), _resign(d, k, ORIGIN)),
        False, "sites.yaml, item 1: unknown field(s) colour"),
    "a broken event line, re-signed with the stolen key": (
        lambda d, k: ((d / "events.jsonl").write_text(
            (d / "events.jsonl").read_text() + '{"id": "x"}\n'), _resign(d, k, ORIGIN)),
        False, "events.jsonl, line"),
}


@pytest.mark.parametrize("db", database_params())
def test_tampered_export_is_refused_and_nothing_written(db, tmp_path):
    gen = make_db_url(db, tmp_path)
    src = Store(next(gen))
    src.migrate()
    clock = FakeClock()
    key, _ = build_state(src, tmp_path / "home", clock)
    good = tmp_path / "good"
    export_state(src, good, key, now=clock())
    src.dispose()
    next(gen, None)
    pub = tmp_path / "a.pub"
    pub.write_text(checkpoints.public_pem(key))
    for i, (label, (tamper, with_key, message)) in enumerate(TAMPERING.items()):
        bad = tmp_path / f"bad-{i}"
        shutil.copytree(good, bad)
        tamper(bad, key)
        gen = make_db_url(db, tmp_path / f"t{i}")
        url = next(gen)
        Path(tmp_path / f"t{i}").mkdir(exist_ok=True)
        dst = Store(url)
        dst.migrate()
        try:
            with pytest.raises(ExportRejected) as err:
                import_state(dst, verify_export(bad, pub if with_key else None), key,
                             now=clock())
            assert message in err.value.detail, (label, err.value.detail)
            with dst.read() as tx:
                assert rows.fresh_problems(tx) == [], label
        finally:
            dst.dispose()
            next(gen, None)


def test_import_refuses_a_database_that_is_not_fresh(stores, tmp_path):
    src, dst = stores
    clock = FakeClock()
    key, _ = build_state(src, tmp_path / "home", clock)
    export_state(src, tmp_path / "out", key, now=clock())
    Services(dst, clock=clock).bootstrap_admin()  # `gpuplane up` ran once on the target
    with dst.read() as tx:
        before = (tx.audit.size(), rows.fresh_problems(tx))
    with pytest.raises(ExportRejected) as err:
        import_state(dst, verify_export(tmp_path / "out"), key, now=clock())
    assert err.value.code == "gpuplane.exchange.not_empty"
    assert "not a fresh installation" in err.value.detail and "users" in err.value.detail
    with dst.read() as tx:
        assert (tx.audit.size(), rows.fresh_problems(tx)) == before


def test_export_refuses_a_folder_that_is_not_empty(stores, tmp_path):
    src, _ = stores
    clock = FakeClock()
    Services(src, clock=clock).bootstrap_admin()
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    from gpuplane.service.exchange import ExportError

    with pytest.raises(ExportError, match="not an empty folder"):
        export_state(src, target, Ed25519PrivateKey.generate(), now=clock())
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_cli_export_then_import(tmp_path, monkeypatch):
    from gpuplane.cli.main import _register, app

    for var in ("GPUPLANE_HOME", "GPUPLANE_DB_URL", "GPUPLANE_AUDIT_KEY_FILE",
                "GPUPLANE_AUDIT_ORIGIN"):
        monkeypatch.delenv(var, raising=False)
    _register()
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    store = Store(f"sqlite:///{home_a / 'gpuplane.db'}")
    store.migrate()
    clock = FakeClock()
    key, _ = build_state(store, home_a, clock)
    store.dispose()
    key_file = home_a / "audit-key.pem"
    key_file.write_bytes(_pem(key))
    key_file.chmod(0o600)
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["export", str(out), "--home", str(home_a)])
    assert r.exit_code == 0, r.output
    assert "signed in manifest.sig" in r.output
    pub = tmp_path / "a.pub"
    pub.write_text(checkpoints.public_pem(key))

    r = runner.invoke(app, ["import", str(out), "--home", str(tmp_path / "nowhere"),
                            "--key", str(tmp_path / "missing.pub")])
    assert r.exit_code == 1 and "missing.pub cannot be read" in r.output, r.output

    _edit_yaml(out)
    r = runner.invoke(app, ["import", str(out), "--home", str(home_b), "--key", str(pub)])
    assert r.exit_code == 1 and "projects.yaml: its SHA-256" in r.output, r.output
    assert "Traceback" not in r.output
    _edit_yaml_back(out)

    r = runner.invoke(app, ["import", str(out), "--home", str(home_b), "--key", str(pub)])
    assert r.exit_code == 0, r.output
    assert "consistency proof" in r.output and "verified" in r.output
    assert (home_b / "audit-key.pem").exists()
    r = runner.invoke(app, ["import", str(out), "--home", str(home_b), "--key", str(pub)])
    assert r.exit_code == 1 and "not a fresh installation" in r.output, r.output


def _edit_yaml_back(d: Path) -> None:
    p = d / "projects.yaml"
    p.write_text(p.read_text().replace("weight: 9.5", "weight: 2.5"))


def _pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("GPUPLANE_TEST_PG_URL"),
                    reason="GPUPLANE_TEST_PG_URL not set")
def test_sqlite_to_postgresql(tmp_path):
    """The exit path between databases: an SQLite installation moves to PostgreSQL."""
    lite, pg = make_db_url("sqlite", tmp_path), make_db_url("postgresql", tmp_path)
    src, dst = Store(next(lite)), Store(next(pg))
    try:
        src.migrate()
        dst.migrate()
        clock = FakeClock()
        key_a, _ = build_state(src, tmp_path / "home", clock)
        export_state(src, tmp_path / "one", key_a, now=clock())
        key_b = Ed25519PrivateKey.generate()
        report = import_state(dst, verify_export(tmp_path / "one"), key_b, now=clock())
        export_state(dst, tmp_path / "two", key_b, now=clock())
        assert_continued(tmp_path / "one", tmp_path / "two", key_a, key_b, report)
    finally:
        src.dispose()
        dst.dispose()
        next(pg, None)
