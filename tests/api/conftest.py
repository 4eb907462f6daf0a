"""An API over SQLite and PostgreSQL, with two tenants set up through the API itself.

Tenant A: organisation org-alpha, project proj-alpha, users alice-alpha (member),
vera-alpha (viewer), audrey-alpha (auditor of org-alpha), and a workload job-alpha with a
quota. Tenant B: org-beta, proj-beta, bob-beta (member). Every name of A contains "alpha" so
a leak into B's answers is easy to spot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from gpuplane.api import create_app
from gpuplane.web import mount_dashboard
from gpuplane.governance import checkpoints
from gpuplane.service.logs import LogChunk, TaskLogRef
from gpuplane.settings import Settings

from functional.dbs import FakeClock, database_params, make_db_url


class MemoryLogs:
    """A LogSource holding one log text per (workload id, task index)."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], bytes] = {}

    def read_log(self, ref: TaskLogRef, offset: int, limit: int) -> LogChunk | None:
        data = self.logs.get((ref.workload_id, ref.task_index))
        if data is None:
            return None
        part = data[offset:offset + limit]
        return LogChunk(part, offset + len(part), complete=offset + len(part) >= len(data))


@dataclass
class World:
    client: TestClient
    logs: MemoryLogs
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, object] = field(default_factory=dict)

    def h(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def _ok(resp, status=(200, 201)):
    assert resp.status_code in ((status,) if isinstance(status, int) else status), resp.text
    return resp.json()


def build_world(db_url: str, tmp_path, clock=None) -> World:
    settings = Settings(home=tmp_path / "home", db_url=db_url, max_body_bytes=65_536)
    logs = MemoryLogs()
    app = create_app(settings, log_source=logs, clock=clock or FakeClock())
    mount_dashboard(app)  # as `gpuplane up` serves it: the console and its history too
    admin_token = app.state.services.bootstrap_admin()
    client = TestClient(app, raise_server_exceptions=False)
    w = World(client, logs, {"admin": admin_token})
    A = w.h("admin")
    _ok(client.post("/v1/sites", json={"name": "eu-de-1", "jurisdiction": "EU/DE"}, headers=A))
    _ok(client.post("/v1/hosts", headers=A, json={
        "name": "gpu-1", "site": "eu-de-1", "cpu": 64, "memory": "512Gi",
        "gpus": [{"index": i, "model": "H100-80GB", "memory_mib": 81920} for i in range(8)]}))
    for org, project in (("org-alpha", "proj-alpha"), ("org-beta", "proj-beta")):
        _ok(client.post("/v1/organisations", json={"name": org}, headers=A))
        _ok(client.post("/v1/projects", json={"name": project, "organisation": org}, headers=A))
    for user, org, role, scope, scope_name in (
            ("alice-alpha", "org-alpha", "member", "project", "proj-alpha"),
            ("vera-alpha", "org-alpha", "viewer", "project", "proj-alpha"),
            ("audrey-alpha", "org-alpha", "auditor", "organisation", "org-alpha"),
            ("bob-beta", "org-beta", "member", "project", "proj-beta")):
        _ok(client.post("/v1/users", json={"name": user, "organisation": org}, headers=A))
        b = _ok(client.post("/v1/role-bindings", headers=A, json={
            "user": user, "role": role, "scope": scope, "scope_name": scope_name}))
        w.ids[f"binding:{user}"] = b["id"]
        t = _ok(client.post("/v1/tokens", json={"user": user, "name": "main"}, headers=A))
        w.tokens[user] = t["token"]
        w.ids[f"token:{user}"] = t["id"]
    q = _ok(client.put("/v1/quotas", headers=A, json={
        "project": "proj-alpha", "resource": "gpu", "guaranteed": 4}))
    w.ids["quota"] = q["id"]
    wl = _ok(client.post("/v1/workloads", headers=w.h("alice-alpha"), json={
        "name": "job-alpha", "project": "proj-alpha",
        "tasks": [{"command": ["echo", "alpha-secret"], "resources": {"gpus": 1}}]}))
    w.ids["workload"] = wl["id"]
    logs.logs[(wl["id"], 0)] = b"alpha-secret\n"
    _ok(client.post("/v1/workloads", headers=w.h("bob-beta"), json={
        "name": "job-beta", "project": "proj-beta", "tasks": [{"command": ["true"]}]}))
    with app.state.store.write() as tx:  # a signed checkpoint, as the scheduler leader makes
        key = checkpoints.load_or_create_key(settings.audit_key_path)
        checkpoints.make_checkpoint(tx, checkpoints.notary_for(tx, key, None), "test", 0.0)
    app.state.history.sample()
    return w


@pytest.fixture(params=database_params())
def world(request, tmp_path):
    for url in make_db_url(request.param, tmp_path):
        w = build_world(url, tmp_path)
        yield w
        w.client.close()
        w.client.app.state.store.dispose()


@pytest.fixture(scope="module", params=database_params())
def shared_world(request, tmp_path_factory):
    """One world per module and database, for tests that must not change anything (the
    isolation tests: if one of them does change something, its own assertions fail)."""
    tmp = tmp_path_factory.mktemp("world")
    for url in make_db_url(request.param, tmp):
        w = build_world(url, tmp)
        yield w
        w.client.close()
        w.client.app.state.store.dispose()
