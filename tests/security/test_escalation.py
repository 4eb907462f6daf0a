"""No escalation (Kubernetes RBAC semantics): a caller mints tokens for, binds roles to, revokes
bindings of and deletes only users all of whose bindings lie within its own powers, and grants
only roles it holds itself on the scope; a user of another organisation is named like an
unknown one (same status, code and message).

Two parts: the attacks found by hand, tried with every attacker of the red world; and a sweep
generated over every (caller role x caller scope x target role x target scope), checked
against an oracle written from the scope tree (not from gpuplane's own code) and followed by a
whoami of every token issued, so no principal ends up holding more than before.
"""

from __future__ import annotations

import itertools
import time

import pytest

from gpuplane.api.problems import status_of
from gpuplane.domain.errors import GpuplaneError
from gpuplane.service.authz import Principal
from gpuplane.service.specs import (OrganisationSpec, ProjectSpec, RoleBindingSpec, TokenSpec,
                                    UserSpec)
from gpuplane.store.records import RoleBinding

from api.conftest import _ok, build_world
from functional.dbs import database_params, make_db_url
from security.conftest import ATTACKER_NAMES, ATTEMPTS, assert_no_leak


def _user_with(red, user: str, role: str, scope: str, scope_name: str | None,
               organisation: str = "org-beta") -> None:
    """A user of ``organisation`` holding one binding, made by the global admin."""
    A = red.h("admin")
    _ok(red.client.post("/v1/users", json={"name": user, "organisation": organisation},
                        headers=A))
    _ok(red.client.post("/v1/role-bindings", headers=A, json={
        "user": user, "role": role, "scope": scope, "scope_name": scope_name}))


def _roles(red, user: str) -> set[tuple[str, str, str | None]]:
    me = _ok(red.client.get("/v1/whoami", headers=red.h(user)))
    return {(b["role"], b["scope"], b["scope_name"]) for b in me["roles"]}


@pytest.mark.parametrize("staff_role", ["admin", "operator"])
def test_no_token_for_a_user_of_your_org_holding_a_global_binding(red, staff_role):
    """Attack (a): an org admin mints a token for a global admin/operator of its organisation
    and, with it, grants itself admin on global."""
    _user_with(red, "staff-beta", staff_role, "global", None)
    before = {u: _roles(red, u) for u in ATTACKER_NAMES}
    for user in ATTACKER_NAMES:
        red.attempt("escalation.token_for_global_user")
        r = red.client.post("/v1/tokens", json={"user": "staff-beta", "name": "x"},
                            headers=red.h(user))
        assert r.status_code in (403, 404), (user, r.text)
        assert_no_leak(r.text)
        red.attempt("escalation.grant_self_global_admin")
        r = red.client.post("/v1/role-bindings", headers=red.h(user), json={
            "user": user, "role": "admin", "scope": "global"})
        assert r.status_code in (403, 404), (user, r.text)
    assert {u: _roles(red, u) for u in ATTACKER_NAMES} == before
    # the org admin reads its org's users, so it is told why (403), not "no such user"
    r = red.client.post("/v1/tokens", json={"user": "staff-beta"}, headers=red.h("mal-org-admin"))
    assert r.status_code == 403 and r.json()["code"] == "gpuplane.auth.forbidden"


def test_no_token_revoke_or_delete_of_a_user_with_a_binding_elsewhere(red):
    """A user of org-beta who also holds a role in org-alpha (bound by a global admin) is out
    of reach of org-beta's admins: minting a token for them would open org-alpha."""
    _user_with(red, "bridge-beta", "viewer", "project", "proj-beta")
    b = _ok(red.client.post("/v1/role-bindings", headers=red.h("admin"), json={
        "user": "bridge-beta", "role": "member", "scope": "project", "scope_name": "proj-alpha"}))
    bridge_token = _ok(red.client.post("/v1/tokens", headers=red.h("admin"),
                                       json={"user": "bridge-beta"}))
    for user in ATTACKER_NAMES:
        H = red.h(user)
        red.attempt("escalation.token_for_cross_org_user")
        assert red.client.post("/v1/tokens", json={"user": "bridge-beta"},
                               headers=H).status_code in (403, 404)
        red.attempt("escalation.revoke_cross_org_token")
        assert red.client.delete(f"/v1/tokens/{bridge_token['id']}",
                                 headers=H).status_code in (403, 404)
        red.attempt("escalation.revoke_cross_org_binding")
        assert red.client.delete(f"/v1/role-bindings/{b['id']}",
                                 headers=H).status_code in (403, 404)
        red.attempt("escalation.delete_cross_org_user")
        assert red.client.delete("/v1/users/bridge-beta", headers=H).status_code in (403, 404)
    who = _ok(red.client.get("/v1/users/bridge-beta", headers=red.h("admin")))
    assert len(who["roles"]) == 2


@pytest.mark.parametrize("scope", [("project", "proj-beta"), ("organisation", "org-beta")])
def test_binding_a_user_of_another_org_answers_like_an_unknown_user(red, scope):
    """Attack (b): 201 for alice-alpha, 404 for a name nobody holds, told a project admin that
    alice-alpha exists. Now both answers are the same, for every role of tenant B."""
    for user in ATTACKER_NAMES:
        answers = []
        for name in ("alice-alpha", "nobody-alpha"):
            red.attempt("leak.user_exists_via_role_binding")
            r = red.client.post("/v1/role-bindings", headers=red.h(user), json={
                "user": name, "role": "viewer", "scope": scope[0], "scope_name": scope[1]})
            body = r.json()
            answers.append((r.status_code, body.get("code"), body.get("title"),
                            body.get("detail", "").replace(name, "NAME")))
        assert answers[0] == answers[1], (user, answers)
        assert answers[0][0] in (403, 404)
    assert _roles(red, "alice-alpha") == {("member", "project", "proj-alpha")}


def test_naming_a_user_of_another_org_anywhere_answers_like_an_unknown_user(red):
    """Tokens, bindings list, read and delete: alice-alpha is as unknown as nobody-alpha."""
    calls = (("POST", "/v1/tokens", {"user": "NAME"}), ("GET", "/v1/users/NAME", None),
             ("DELETE", "/v1/users/NAME", None))
    for user, (method, path, body) in itertools.product(ATTACKER_NAMES, calls):
        answers = []
        for name in ("alice-alpha", "nobody-alpha"):
            red.attempt("leak.user_exists")
            kw = {"json": {"user": name}} if body else {}
            r = red.client.request(method, path.replace("NAME", name), headers=red.h(user), **kw)
            answers.append((r.status_code, r.json().get("code"),
                            r.json().get("detail", "").replace(name, "NAME")))
        assert answers[0] == answers[1], (user, method, path, answers)
        assert answers[0][0] == 404 and answers[0][1] == "gpuplane.user.not_found"


def test_org_admin_grants_only_roles_it_holds_on_scopes_it_holds(red):
    H = red.h("mal-org-admin")
    _ok(red.client.post("/v1/users", json={"name": "new-beta", "organisation": "org-beta"},
                        headers=H))
    for role, scope, name, status in (("admin", "global", None, 403),
                                      ("operator", "global", None, 403),
                                      ("viewer", "global", None, 403),
                                      ("admin", "organisation", "org-alpha", 404),
                                      ("viewer", "project", "proj-alpha", 404)):
        red.attempt("escalation.grant_outside_own_scope")
        r = red.client.post("/v1/role-bindings", headers=H, json={
            "user": "new-beta", "role": role, "scope": scope, "scope_name": name})
        assert r.status_code == status, (role, scope, r.text)
    # inside its organisation it may hand out every role: all of them are within admin's
    for role in ("admin", "operator", "member", "viewer", "auditor"):
        _ok(red.client.post("/v1/role-bindings", headers=H, json={
            "user": "new-beta", "role": role, "scope": "project", "scope_name": "proj-beta"}))
    # a project admin may not lift anyone (itself included) to its organisation
    r = red.client.post("/v1/role-bindings", headers=red.h("mal-proj-admin"), json={
        "user": "mal-proj-admin", "role": "admin", "scope": "organisation",
        "scope_name": "org-beta"})
    assert r.status_code == 403, r.text


# -- the generated sweep ----------------------------------------------------------------------

# The scope tree of the sweep's world: global > org-a > {proj-a, proj-a2}; global > org-b > proj-b.
SCOPES = {"global": ("global", None), "org-a": ("organisation", "org-a"),
          "proj-a": ("project", "proj-a"), "proj-a2": ("project", "proj-a2"),
          "org-b": ("organisation", "org-b"), "proj-b": ("project", "proj-b")}
PARENT = {"org-a": "global", "org-b": "global", "proj-a": "org-a", "proj-a2": "org-a",
          "proj-b": "org-b"}
ROLES = ("admin", "operator", "member", "viewer", "auditor")
# A role "holds" another if it may do everything the other may (from docs/api.md's table).
HOLDS = {"admin": set(ROLES), "operator": {"operator", "member", "viewer"},
         "member": {"member", "viewer"}, "viewer": {"viewer"}, "auditor": {"auditor"}}
CALLER_SCOPES = ("global", "org-a", "proj-a")
TARGET_SCOPES = tuple(SCOPES)


def _within(scope: str, caller_scope: str) -> bool:
    while scope != caller_scope and scope in PARENT:
        scope = PARENT[scope]
    return scope == caller_scope


def _org_of(scope: str) -> str | None:
    return None if scope == "global" else (scope if scope.startswith("org") else
                                           PARENT[scope])


def _oracle(caller: tuple[str, str], target_bindings: list[tuple[str, str]], target_org: str,
            op: str, new: tuple[str, str] | None = None) -> bool:
    """May ``caller`` (role, scope) do ``op`` to a user of ``target_org`` holding
    ``target_bindings``? Only admins manage; every binding of the target (and the new one)
    must lie within the caller's scope with a role the caller holds. A token or a deletion
    also needs the caller's scope to contain the user's organisation; a new binding needs the
    caller to be able to name the user (global, or the user's organisation is its own)."""
    role, cscope = caller
    if role != "admin":
        return False
    if op in ("token", "delete") and not _within(target_org, cscope):
        return False
    if op == "bind" and not (cscope == "global" or _org_of(cscope) == target_org):
        return False
    bindings = list(target_bindings) + ([new] if new else [])
    return all(_within(s, cscope) and r in HOLDS[role] for r, s in bindings)


# Targets: one user per (role, scope), all of org-a (the callers' organisation), plus a user of
# org-a holding two bindings and users of org-b (another organisation) with and without one.
TARGETS = ([(f"t-{r}-{s}", "org-a", [(r, s)]) for r, s in itertools.product(ROLES, TARGET_SCOPES)]
           + [("t-two", "org-a", [("member", "proj-a"), ("viewer", "proj-a2")]),
              ("t-none", "org-a", []),
              ("t-b-none", "org-b", []),
              ("t-b-viewer", "org-b", [("viewer", "proj-b")]),
              ("t-b-in-a", "org-b", [("viewer", "proj-a")])])
# What a caller tries to bind to a fresh user of org-a, and to every target.
GRANTS = tuple(itertools.product(ROLES, TARGET_SCOPES))


class Sweep:
    """The sweep's world: build_world plus org-a (proj-a, proj-a2) and org-b (proj-b). The
    sweep drives the service layer with the principals the API would build from each caller's
    token (one HTTP round trip per attempt would make it four times slower); every token is
    then checked through ``GET /v1/whoami``."""

    def __init__(self, db_url: str, tmp_path) -> None:
        self.w = build_world(db_url, tmp_path)
        self.c = self.w.client
        self.svc = self.c.app.state.services
        self.admin = self.svc.auth.authenticate(self.w.tokens["admin"])
        for org, projects in (("org-a", ("proj-a", "proj-a2")), ("org-b", ("proj-b",))):
            self.svc.tenancy.create_organisation(self.admin, OrganisationSpec(name=org))
            for p in projects:
                self.svc.tenancy.create_project(self.admin, ProjectSpec(name=p, organisation=org))
        self.tokens: dict[str, str] = {}  # the callers' own tokens
        self.who: dict[str, Principal] = {}  # the callers, as their tokens authenticate
        self.minted: dict[str, tuple[str, str]] = {}  # token a caller minted -> (caller, target)
        self.held: dict[str, list[RoleBinding]] = {}  # user -> its bindings

    def user(self, name: str, org: str, bindings: list[tuple[str, str]]) -> None:
        """Create ``name`` in ``org`` with ``bindings`` (as the global admin); remember them."""
        self.svc.tenancy.create_user(self.admin, UserSpec(name=name, organisation=org))
        self.held[name] = [self.svc.tenancy.grant_role(self.admin, _grant(name, *b))
                           for b in bindings]

    def caller(self, name: str, role: str, scope: str) -> None:
        self.user(name, "org-a", [(role, scope)])
        _, self.tokens[name] = self.svc.tenancy.create_token(self.admin, TokenSpec(user=name))
        self.who[name] = self.svc.auth.authenticate(self.tokens[name])

    def whoami(self, token: str) -> dict:
        return _ok(self.c.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"}))


def _grant(user: str, role: str, scope: str) -> RoleBindingSpec:
    kind, name = SCOPES[scope]
    return RoleBindingSpec(user=user, role=role, scope=kind, scope_name=name)


def _status(fn, *args) -> tuple[int, object]:  # noqa: ANN001
    """(HTTP status the API would answer, result or error) of one service call."""
    try:
        return 200, fn(*args)
    except GpuplaneError as exc:
        return status_of(exc), exc


@pytest.fixture(params=database_params())
def sweep(request, tmp_path):
    for url in make_db_url(request.param, tmp_path):
        s = Sweep(url, tmp_path)
        yield s
        s.c.close()
        s.c.app.state.store.dispose()


def test_every_caller_against_every_target(sweep):
    """For every caller (role x scope) and target (role x scope, plus multi-binding and other-org
    users): mint a token, bind, revoke each binding, delete; allowed exactly when the oracle
    says, refused with 403/404 otherwise; and every token opens no more than its holder held."""
    s, t0 = sweep, time.monotonic()
    tenancy = s.svc.tenancy
    callers = {f"c-{r}-{sc}": (r, sc) for r, sc in itertools.product(ROLES, CALLER_SCOPES)}
    for name, (role, cscope) in callers.items():
        s.caller(name, role, cscope)
    for t, org, bindings in TARGETS:
        s.user(t, org, bindings)
    counts = {"allowed": 0, "refused": 0}

    def check(ok: bool, status: int, what: str) -> bool:
        assert status in ((200,) if ok else (403, 404)), f"{what}: {status}"
        counts["allowed" if ok else "refused"] += 1
        return ok

    def opens_no_more(token: str) -> None:
        caller, target = s.minted[token]
        crole, cscope = callers[caller]
        me = s.whoami(token)
        assert me["name"] == target
        for b in me["roles"]:
            scope = b["scope_name"] or "global"
            assert _within(scope, cscope) and b["role"] in HOLDS[crole], (caller, target, b)

    pairs = list(itertools.product(callers.items(), TARGETS))
    for (caller, (role, cscope)), (t, org, bindings) in pairs:
        who, what = s.who[caller], f"{caller} -> {t}"
        # 1. mint a token for the target
        status, out = _status(tenancy.create_token, who, TokenSpec(user=t, name="sweep"))
        if check(_oracle((role, cscope), bindings, org, "token"), status, f"token {what}"):
            s.minted[out[1]] = (caller, t)
        # 2. bind a role on proj-a (within every admin caller's scope) to the target
        new = ("member" if ("viewer", "proj-a") in bindings else "viewer", "proj-a")
        status, out = _status(tenancy.grant_role, who, _grant(t, *new))
        if check(_oracle((role, cscope), bindings, org, "bind", new), status, f"bind {what}"):
            tenancy.revoke_role(s.admin, out.id)
        # 3. revoke each of the target's bindings
        for i, b in enumerate(s.held[t]):
            status, _ = _status(tenancy.revoke_role, who, b.id)
            if check(_oracle((role, cscope), bindings, org, "revoke"), status,
                     f"revoke {b.role}@{b.scope_name} of {what}"):
                s.held[t][i] = tenancy.grant_role(s.admin, RoleBindingSpec(
                    user=t, role=b.role, scope=b.scope_kind, scope_name=b.scope_name or None))
    # 4. every caller binds every role on every scope to a fresh user of its organisation
    for caller, (role, cscope) in callers.items():
        fresh = f"f-{caller}"
        s.user(fresh, "org-a", [])
        for grole, gscope in GRANTS:
            status, _ = _status(tenancy.grant_role, s.who[caller], _grant(fresh, grole, gscope))
            check(_oracle((role, cscope), [], "org-a", "bind", (grole, gscope)), status,
                  f"grant {grole}@{gscope} by {caller}")
    # 5. nobody holds more than before: every caller's token still opens only its binding, and
    # every token it minted opens no more than the caller held.
    for caller, (role, cscope) in callers.items():
        me = s.whoami(s.tokens[caller])
        assert [(b["role"], b["scope_name"] or "global") for b in me["roles"]] == [(role, cscope)]
    for token in s.minted:
        opens_no_more(token)
    # 6. delete (last: a deleted user's tokens go with it)
    for (caller, (role, cscope)), (t, org, bindings) in pairs:
        status, _ = _status(tenancy.delete_user, s.who[caller], t)
        if check(_oracle((role, cscope), bindings, org, "delete"), status,
                 f"delete {caller} -> {t}"):
            s.user(t, org, bindings)
    ATTEMPTS["escalation.generated_sweep"] += counts["refused"]
    print(f"\nsweep: {counts} in {time.monotonic() - t0:.1f}s, {len(s.minted)} tokens minted "
          "and checked")
    assert counts["allowed"] > 100 and counts["refused"] > 1000
