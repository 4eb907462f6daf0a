"""Tenant isolation, generated from the OpenAPI route table (DESIGN invariant 7).

Every /v1 route is exercised: a new route is covered automatically, and a route with a path
parameter or request body this file does not know fails the test until it is classified.
"""

from __future__ import annotations

import pytest

from gpuplane.api import create_app

# Path parameters naming objects of tenant A (value filled from the world) ...
TENANT_PARAMS = {"workload", "project", "organisation", "user", "token_id", "quota_id",
                 "binding_id"}
# ... or shared infrastructure every tenant may read and only global roles change.
SHARED_PARAMS = {"site": "eu-de-1", "host": "gpu-1", "priority_class": "standard",
                 "name": "residency"}
# Required query parameters of routes that have them (aimed at tenant A's audit entries).
QUERIES = {"/v1/audit/proof/inclusion": {"seq": 3}, "/v1/audit/proof/consistency": {"old": 1,
                                                                                   "new": 3}}
WRITE = {"POST", "PUT", "PATCH", "DELETE"}
TICKET_ROUTES = {("GET", "/v1/stream")}  # takes ?ticket=, not the bearer token
SELF_POSTS = {("POST", "/v1/stream/tickets")}  # a ticket for the caller; writes nothing


def _param_values(world) -> dict[str, object]:
    return {"workload": world.ids["workload"], "project": "proj-alpha",
            "organisation": "org-alpha", "user": "alice-alpha",
            "token_id": world.ids["token:alice-alpha"], "quota_id": world.ids["quota"],
            "binding_id": world.ids["binding:alice-alpha"], **SHARED_PARAMS}


# A valid body per request model, aimed at tenant A's objects where the body names a tenant.
BODIES = {
    "SiteSpec": {"name": "eu-fr-9", "jurisdiction": "EU/FR"},
    "HostSpec": {"name": "gpu-1", "site": "eu-de-1", "cpu": 8, "memory": 1024},
    "HostStateSpec": {"state": "cordoned"},
    "OrganisationSpec": {"name": "org-gamma"},
    "ProjectSpec": {"name": "proj-alpha-2", "organisation": "org-alpha"},
    "ProjectUpdate": {"weight": 9},
    "UserSpec": {"name": "mallory-alpha", "organisation": "org-alpha"},
    "RoleBindingSpec": {"user": "bob-beta", "role": "admin", "scope": "project",
                        "scope_name": "proj-alpha"},
    "TokenSpec": {"user": "alice-alpha", "name": "stolen"},
    "QuotaSpec": {"project": "proj-alpha", "resource": "gpu", "guaranteed": 100},
    "PriorityClassSpec": {"name": "standard", "value": 1},  # the path names standard too
    "WorkloadSpec": {"name": "intruder", "project": "proj-alpha",
                     "tasks": [{"command": ["true"]}]},
    "EvidenceIn": {"kind": "software", "nonce": "00" * 32, "evidence": "e30="},
    "PolicyDocumentIn": {"classifications": {"public": {"jurisdictions": ["US"]}}},
}


class Op:
    """One operation of the OpenAPI document: method, path template, path parameters, body."""

    def __init__(self, method: str, path: str, spec: dict) -> None:
        self.method, self.path = method.upper(), path
        self.params = {p["name"] for p in spec.get("parameters", []) if p["in"] == "path"}
        ref = (spec.get("requestBody", {}).get("content", {}).get("application/json", {})
               .get("schema", {}).get("$ref"))
        self.body = ref.rsplit("/", 1)[1] if ref else None

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"


def _operations() -> list[Op]:
    """Every /v1 operation of the served OpenAPI document."""
    import tempfile

    from gpuplane.settings import Settings

    url = f"sqlite:///{tempfile.gettempdir()}/gpuplane-openapi-unused.db"
    doc = create_app(Settings(db_url=url), migrate=False).openapi()
    return [Op(m, path, spec) for path, item in sorted(doc["paths"].items())
            if path.startswith("/v1/") for m, spec in sorted(item.items())]


def _call(world, user, op: Op, values):
    unknown = op.params - TENANT_PARAMS - set(SHARED_PARAMS)
    assert not unknown, f"classify path parameter(s) {unknown} of {op} in this test"
    path = op.path.format(**{p: values[p] for p in op.params})
    if op.body is not None:
        assert op.body in BODIES, f"add a body for {op.body} ({op}) to BODIES"
    kw = {"json": BODIES[op.body]} if op.body else {}
    return world.client.request(op.method, path, headers=world.h(user),
                                params=QUERIES.get(op.path), **kw)


OPS = _operations()
WRITES = [op for op in OPS if op.method in WRITE and (op.method, op.path) not in SELF_POSTS]


def test_the_route_table_is_not_empty():
    assert len(OPS) > 30 and len(WRITES) > 15


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_tenant_b_cannot_touch_tenant_a(shared_world, op):
    world = shared_world
    resp = _call(world, "bob-beta", op, _param_values(world))
    if (op.method, op.path) in TICKET_ROUTES:
        assert resp.status_code == 401 and resp.json()["code"] == "gpuplane.auth.unauthenticated"
        return _assert_a_intact(world)
    if (op.method, op.path) in SELF_POSTS:
        assert resp.status_code == 201 and "alpha" not in resp.text
        return _assert_a_intact(world)
    names_a = bool(op.params & TENANT_PARAMS) or op.body in {
        "ProjectSpec", "UserSpec", "RoleBindingSpec", "TokenSpec", "QuotaSpec", "WorkloadSpec"}
    if names_a or op.method in WRITE:
        assert resp.status_code in (403, 404), (resp.status_code, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
    else:
        assert resp.status_code == 200 or resp.status_code == 403, resp.text
        assert "alpha" not in resp.text.replace("eu-de-1", ""), resp.text
    _assert_a_intact(world)


@pytest.mark.parametrize("op", WRITES, ids=repr)
def test_a_viewer_cannot_write(shared_world, op):
    world = shared_world
    resp = _call(world, "vera-alpha", op, _param_values(world))
    assert resp.status_code in (403, 404), (resp.status_code, resp.text)
    _assert_a_intact(world)


def test_list_routes_filtered_by_tenant_a_are_refused_to_b(world):
    c, B = world.client, world.h("bob-beta")
    for path in ("/v1/workloads?project=proj-alpha", "/v1/events?project=proj-alpha",
                 "/v1/quotas?project=proj-alpha", "/v1/usage?project=proj-alpha",
                 "/v1/projects?organisation=org-alpha"):
        resp = c.get(path, headers=B)
        if path.startswith("/v1/projects"):  # listing is filtered to what B may see
            assert resp.status_code == 200 and resp.json()["items"] == [], resp.text
        else:
            assert resp.status_code in (403, 404), (path, resp.text)


def test_auditor_reads_audit_but_not_logs(world):
    c, wid = world.client, world.ids["workload"]
    aud = world.h("audrey-alpha")
    entries = c.get("/v1/audit", headers=aud)
    assert entries.status_code == 200
    assert any(e["object_id"] == wid for e in entries.json()["items"])
    assert c.get(f"/v1/workloads/{wid}", headers=aud).status_code == 200
    logs = c.get(f"/v1/workloads/{wid}/logs", headers=aud)
    assert logs.status_code == 403 and logs.json()["code"] == "gpuplane.auth.forbidden"
    # the member and the viewer of the project may read the log
    for user in ("alice-alpha", "vera-alpha"):
        r = c.get(f"/v1/workloads/{wid}/logs", headers=world.h(user))
        assert r.status_code == 200 and r.text == "alpha-secret\n"
    # a member may not read the audit log; B's auditor-less member neither
    assert c.get("/v1/audit", headers=world.h("alice-alpha")).status_code == 403


def test_every_v1_route_needs_a_token(world):
    values = _param_values(world)
    for op in OPS:
        path = op.path.format(**{p: values[p] for p in op.params})
        kw = {"json": BODIES[op.body]} if op.body else {}
        resp = world.client.request(op.method, path, params=QUERIES.get(op.path), **kw)
        assert resp.status_code == 401, (op, resp.text)
        assert resp.json()["code"] == "gpuplane.auth.unauthenticated"


def _assert_a_intact(world):
    c, A = world.client, world.h("alice-alpha")
    wl = c.get(f"/v1/workloads/{world.ids['workload']}", headers=A).json()
    assert wl["status"]["phase"] == "Pending" and not wl["status"]["cancel_requested"]
    quota = c.get(f"/v1/quotas/{world.ids['quota']}", headers=A).json()
    assert quota["guaranteed"] == 4
    me = c.get("/v1/whoami", headers=A).json()
    assert [r["role"] for r in me["roles"]] == ["member"]
    assert c.get("/v1/projects/proj-alpha", headers=A).json()["weight"] == 1.0
