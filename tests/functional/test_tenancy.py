"""Tenants, roles, tokens and the audit chain, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from gpuplane.domain.errors import NotFound
from gpuplane.domain.workloads import TaskGroup, WorkloadSpec
from gpuplane.governance.audit import verify_entries
from gpuplane.service import Forbidden, Unauthenticated
from gpuplane.service.specs import (OrganisationSpec, ProjectSpec, QuotaSpec, RoleBindingSpec,
                                    TokenSpec, UserSpec)


def test_bootstrap_creates_a_working_admin_token_once(store, clock):
    from gpuplane.service import Services

    svc = Services(store, clock=clock)
    token = svc.bootstrap_admin()
    assert token.startswith("gpp_")
    assert svc.auth.authenticate(token).name == "admin"
    assert svc.bootstrap_admin() is None  # idempotent
    fresh = svc.bootstrap_admin(new_token_if_exists=True)
    assert fresh != token and svc.auth.token_is_valid(fresh) and svc.auth.token_is_valid(token)


def test_tokens_are_stored_hashed(store, clock):
    from gpuplane.service import Services

    token = Services(store, clock=clock).bootstrap_admin()
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT token_hash, prefix FROM api_tokens")).all()
    assert rows and all(token not in (h, p) and len(h) == 64 for h, p in rows)


def _tenants(svc, admin):
    """Org a (project pa, users a-member/a-viewer/a-auditor/a-admin) and org b (pb, b-member)."""
    tokens = {}
    for org, project in (("a", "pa"), ("b", "pb")):
        svc.tenancy.create_organisation(admin, OrganisationSpec(name=org))
        svc.tenancy.create_project(admin, ProjectSpec(name=project, organisation=org))
    for user, role, scope, name in (("a-member", "member", "project", "pa"),
                                    ("a-viewer", "viewer", "project", "pa"),
                                    ("a-auditor", "auditor", "organisation", "a"),
                                    ("a-admin", "admin", "organisation", "a"),
                                    ("b-member", "member", "project", "pb")):
        svc.tenancy.create_user(admin, UserSpec(name=user, organisation=user[0]))
        svc.tenancy.grant_role(admin, RoleBindingSpec(user=user, role=role, scope=scope,
                                                      scope_name=name))
        _, tokens[user] = svc.tenancy.create_token(admin, TokenSpec(user=user))
    return {u: svc.auth.authenticate(t) for u, t in tokens.items()}


def _wl(name, project):
    return WorkloadSpec(name=name, project=project, tasks=[TaskGroup(command=["true"])])


def test_members_see_only_their_projects_workloads(svc, admin):
    who = _tenants(svc, admin)
    wa = svc.workloads.submit_workload(who["a-member"], _wl("job", "pa"))
    svc.workloads.submit_workload(who["b-member"], _wl("job", "pb"))
    listed = svc.workloads.list_workloads(who["b-member"], None, 100).items
    assert [w.project for w in listed] == ["pb"]
    with pytest.raises(NotFound):
        svc.workloads.get_workload(who["b-member"], wa.id)
    with pytest.raises(NotFound):
        svc.workloads.cancel_workload(who["b-member"], wa.id)
    with pytest.raises(NotFound):
        svc.workloads.submit_workload(who["b-member"], _wl("sneaky", "pa"))
    events = svc.workloads.list_events(who["b-member"], None, 100).items
    assert all(e.project == "pb" for e in events) and events


def test_viewer_reads_but_cannot_write_and_auditor_cannot_read_logs(svc, admin):
    who = _tenants(svc, admin)
    wa = svc.workloads.submit_workload(who["a-member"], _wl("job", "pa"))
    assert svc.workloads.get_workload(who["a-viewer"], wa.id).id == wa.id
    with pytest.raises(Forbidden):
        svc.workloads.cancel_workload(who["a-viewer"], wa.id)
    with pytest.raises(Forbidden):
        svc.workloads.submit_workload(who["a-viewer"], _wl("v", "pa"))
    assert svc.workloads.get_workload(who["a-auditor"], wa.id).id == wa.id
    with pytest.raises(Forbidden):
        svc.workloads.read_logs(who["a-auditor"], wa.id)
    entries, _ = svc.audit.list_entries(who["a-auditor"], None, 100)
    assert any(e.action == "workload.submit" and e.object_id == wa.id for e in entries)
    with pytest.raises(Forbidden):
        svc.audit.list_entries(who["a-member"], None, 100)


def test_org_admin_manages_its_org_only(svc, admin):
    who = _tenants(svc, admin)
    svc.tenancy.create_project(who["a-admin"], ProjectSpec(name="pa2", organisation="a"))
    with pytest.raises(NotFound):
        svc.tenancy.create_project(who["a-admin"], ProjectSpec(name="pb2", organisation="b"))
    svc.policy.set_quota(who["a-admin"], QuotaSpec(project="pa", resource="gpu", guaranteed=8))
    with pytest.raises(NotFound):
        svc.policy.set_quota(who["a-admin"], QuotaSpec(project="pb", resource="gpu",
                                                       guaranteed=8))
    with pytest.raises(Forbidden):  # members cannot raise their own quota
        svc.policy.set_quota(who["a-member"], QuotaSpec(project="pa", resource="gpu",
                                                        guaranteed=80))
    with pytest.raises(Forbidden):  # org admins cannot hand out global roles
        svc.tenancy.grant_role(who["a-admin"], RoleBindingSpec(user="a-member", role="admin",
                                                               scope="global"))
    orgs = [o.name for o in svc.tenancy.list_organisations(who["a-member"], None, 10).items]
    assert orgs == ["a"]


def test_no_escalation_through_a_user_holding_more_than_you(svc, admin):
    """An org admin may not act for a user of its organisation who holds a global binding (or
    one elsewhere): no token, no binding, no revoking, no deletion."""
    who = _tenants(svc, admin)
    for role in ("admin", "operator", "viewer"):
        staff = f"a-staff-{role}"
        svc.tenancy.create_user(admin, UserSpec(name=staff, organisation="a"))
        bound = svc.tenancy.grant_role(admin, RoleBindingSpec(user=staff, role="member",
                                                              scope="project", scope_name="pa"))
        svc.tenancy.grant_role(admin, RoleBindingSpec(user=staff, role=role, scope="global"))
        rec, _ = svc.tenancy.create_token(admin, TokenSpec(user=staff))
        for attempt in (
                lambda: svc.tenancy.create_token(who["a-admin"], TokenSpec(user=staff)),
                lambda: svc.tenancy.grant_role(who["a-admin"], RoleBindingSpec(
                    user=staff, role="viewer", scope="project", scope_name="pa")),
                lambda: svc.tenancy.revoke_role(who["a-admin"], bound.id),
                lambda: svc.tenancy.revoke_token(who["a-admin"], rec.id),
                lambda: svc.tenancy.delete_user(who["a-admin"], staff)):
            with pytest.raises(Forbidden, match="holds roles beyond yours"):
                attempt()
        assert len(svc.tenancy.get_user(admin, staff).roles) == 2
    # a user of org a bound into org b by a global admin is out of a's reach as well
    svc.tenancy.grant_role(admin, RoleBindingSpec(user="a-viewer", role="viewer",
                                                  scope="project", scope_name="pb"))
    with pytest.raises(Forbidden):
        svc.tenancy.create_token(who["a-admin"], TokenSpec(user="a-viewer"))
    # inside its organisation the org admin manages as before
    svc.tenancy.create_token(who["a-admin"], TokenSpec(user="a-member"))
    svc.tenancy.grant_role(who["a-admin"], RoleBindingSpec(user="a-member", role="operator",
                                                           scope="organisation", scope_name="a"))


def test_users_of_other_orgs_and_without_one_are_unknown_to_tenants(svc, admin):
    who = _tenants(svc, admin)
    svc.tenancy.create_user(admin, UserSpec(name="staff"))  # no organisation
    svc.tenancy.grant_role(admin, RoleBindingSpec(user="staff", role="viewer",
                                                  scope="project", scope_name="pa"))
    for name in ("b-member", "staff", "nobody"):
        for attempt in (
                lambda: svc.tenancy.grant_role(who["a-admin"], RoleBindingSpec(
                    user=name, role="viewer", scope="project", scope_name="pa")),
                lambda: svc.tenancy.create_token(who["a-admin"], TokenSpec(user=name)),
                lambda: svc.tenancy.delete_user(who["a-admin"], name),
                lambda: svc.tenancy.get_user(who["a-admin"], name)):
            with pytest.raises(NotFound) as err:
                attempt()
            assert (err.value.code, err.value.detail) == ("gpuplane.user.not_found",
                                                          f"user {name!r} not found")
    # a global admin names and binds anyone, anywhere
    svc.tenancy.grant_role(admin, RoleBindingSpec(user="b-member", role="viewer",
                                                  scope="project", scope_name="pa"))
    svc.tenancy.create_token(admin, TokenSpec(user="staff"))


def test_bad_tokens_are_refused_and_audited(svc, admin, clock):
    who = _tenants(svc, admin)
    rec, token = svc.tenancy.create_token(who["a-member"], TokenSpec(name="short",
                                                                     expires_in_s=60))
    assert svc.auth.authenticate(token).name == "a-member"
    clock.advance(61)
    for bad in (token, "gpp_nonsense", None):
        with pytest.raises(Unauthenticated):
            svc.auth.authenticate(bad)
    _, t2 = svc.tenancy.create_token(who["a-member"], TokenSpec())
    svc.tenancy.revoke_token(who["a-member"], svc.tenancy.list_tokens(
        who["a-member"], None, 10).items[-1].id)
    with pytest.raises(Unauthenticated):
        svc.auth.authenticate(t2)
    failed, _ = svc.audit.list_entries(admin, None, 100, action="auth.login_failed")
    assert [e.detail["reason"] for e in failed] == ["expired token", "unknown token",
                                                    "revoked token"]
    assert all(token not in str(e.detail) for e in failed)


def test_audit_chain_verifies_and_detects_tampering(svc, admin, store):
    _tenants(svc, admin)
    assert svc.audit.verify(admin) == []
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"))
    problems = svc.audit.verify(admin)
    assert problems and "seq 3" in problems[0]
    import json

    lines = [json.loads(line) for line in svc.audit.export(admin)]
    del lines[5]
    assert any("removed, inserted or reordered" in p for p in verify_entries(lines))


def test_audit_chain_does_not_fork_under_concurrent_submissions(svc, admin):
    import threading

    errors = []

    def submit(i: int) -> None:
        try:
            svc.workloads.submit_workload(admin, _wl(f"w{i}", "default"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert svc.audit.verify(admin) == []
