"""Keystone as identity, against a live Keystone (conftest.py): users, projects and roles are
created in Keystone through its API; gpuplane (an API served on a loopback port) maps their
tokens to its tenancy; the CLI logs in with the usual OS_* variables.

Keystone, for this module: domain ``gpt-<random>`` with projects ``ML Team`` (alice member,
rita reader, maria admin), ``Other Team`` (bob member) and ``svc`` (gpuplane's own user, role
``service``). gpuplane's token cache lives 2 s here (default 60 s).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from functional.dbs import database_params, make_db_url

from gpuplane.api import create_app
from gpuplane.client.http import keystone_login_from_env
from gpuplane.domain.errors import InvalidInput
from gpuplane.service.keystone import minimal_roles, name_candidates, slug
from gpuplane.service.keystone_client import TokenCache, parse_role_map
from gpuplane.settings import Settings

from .conftest import REPO, Keystone

CACHE_S = 2.0
PROBLEM = "application/problem+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A gpuplane API served by uvicorn on a loopback port, in a thread of the test."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "API did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class World:
    ks: Keystone
    domain: str
    domain_id: str
    url: str
    admin: dict[str, str]  # gpuplane's own bootstrap admin (bearer)
    http: httpx.Client
    settings: Settings
    passwords: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def token(self, user: str, project: str = "ML Team") -> str:
        return self.ks.token(user, self.passwords[user], self.domain, project)

    def get(self, path: str, token: str, **kw) -> httpx.Response:  # noqa: ANN003
        return self.http.get(self.url + path, headers={"X-Auth-Token": token}, **kw)

    def post(self, path: str, token: str, body: dict) -> httpx.Response:
        return self.http.post(self.url + path, headers={"X-Auth-Token": token}, json=body)

    def as_admin(self, path: str) -> dict:
        resp = self.http.get(self.url + path, headers=self.admin)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def os_env(self, user: str, project: str = "ML Team", **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OS_", "GPUPLANE_"))}
        env.update(OS_AUTH_URL=self.ks.url, OS_USERNAME=user, OS_PASSWORD=self.passwords[user],
                   OS_PROJECT_NAME=project, OS_USER_DOMAIN_NAME=self.domain,
                   OS_PROJECT_DOMAIN_NAME=self.domain, GPUPLANE_URL=self.url,
                   GPUPLANE_HOME=str(Path(self.settings.home) / "cli-home"), **extra)
        return env


def workload(name: str, project: str) -> dict:
    return {"name": name, "project": project,
            "tasks": [{"command": ["true"], "resources": {"gpus": 1}}]}


def keystone_settings(world_or_ks, tmp: Path, **kw) -> Settings:  # noqa: ANN001
    return Settings(home=tmp, db_url=f"sqlite:///{tmp / 'gpuplane.db'}", **kw)


@pytest.fixture(scope="module")
def world(keystone: Keystone, tmp_path_factory) -> Iterator[World]:
    ks = keystone
    rand = secrets.token_hex(3)
    domain = f"gpt-{rand}"
    domain_id = ks.create_domain(domain)
    try:
        ids = {"ml": ks.create_project("ML Team", domain_id),
               "other": ks.create_project("Other Team", domain_id),
               "svc": ks.create_project("svc", domain_id)}
        passwords = {}
        for user, role, project in (("alice", "member", "ml"), ("rita", "reader", "ml"),
                                    ("maria", "admin", "ml"), ("bob", "member", "other"),
                                    ("gsvc", "service", "svc")):
            passwords[user] = secrets.token_hex(8)
            ids[user] = ks.create_user(user, passwords[user], domain_id)
            ks.assign(role, ids[user], ids[project])
        tmp = tmp_path_factory.mktemp("gpuplane-keystone")
        settings = Settings(
            home=tmp, db_url=f"sqlite:///{tmp / 'gpuplane.db'}", keystone_url=ks.url,
            keystone_cache_s=CACHE_S, keystone_username="gsvc",
            keystone_password=passwords["gsvc"], keystone_user_domain_name=domain,
            keystone_project_name="svc", keystone_project_domain_name=domain,
            keystone_global_scope=f"{ks.admin_domain}/{ks.admin_project}",
            auth_fail_limit=1000)
        app = create_app(settings)
        admin = {"Authorization": f"Bearer {app.state.services.bootstrap_admin()}"}
        with ServerThread(app) as server, httpx.Client(timeout=60) as http:
            for path, body in (("/v1/sites", {"name": "eu-de-1", "jurisdiction": "EU/DE"}),
                               ("/v1/hosts", {"name": "gpu-1", "site": "eu-de-1", "cpu": 64,
                                              "memory": "512Gi", "gpus": [
                                                  {"index": i, "model": "H100-80GB",
                                                   "memory_mib": 81920} for i in range(8)]})):
                resp = http.post(server.url + path, json=body, headers=admin)
                assert resp.status_code == 201, resp.text
            yield World(ks, domain, domain_id, server.url, admin, http, settings, passwords, ids)
        app.state.store.dispose()
    finally:
        ks.delete_domain(domain_id)


# -- the figure: a Keystone user submits, lands in the mapped project, is refused when revoked -
def test_member_token_submits_into_the_mapped_project(world: World):
    token = world.token("alice")
    resp = world.post("/v1/workloads", token, workload("job-alice", "ml-team"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["project"] == "ml-team"

    me = world.get("/v1/whoami", token).json()
    assert me["name"] == "alice" and me["organisation"] == world.domain
    assert me["email"] == f"keystone:{world.ids['alice']}"
    assert [(b["role"], b["scope"], b["scope_name"]) for b in me["roles"]] == [
        ("member", "project", "ml-team")]  # member + implied reader -> one member binding
    project = world.as_admin("/v1/projects/ml-team")
    assert project["organisation"] == world.domain
    assert project["display_name"] == f"ML Team (keystone project {world.ids['ml']})"
    org = world.as_admin(f"/v1/organisations/{world.domain}")
    assert org["display_name"].endswith(f"(keystone domain {world.domain_id})")
    audit = world.as_admin("/v1/audit?limit=500")["items"]
    by_keystone = {(e["action"], e["object_id"]) for e in audit if e["actor"] == "keystone"}
    assert {("organisation.create", world.domain), ("project.create", "ml-team"),
            ("user.create", "alice"), ("role.grant", "alice")} <= by_keystone


def test_cli_submits_with_os_variables(world: World, tmp_path: Path):
    job = tmp_path / "job.yaml"
    job.write_text("kind: Job\nname: job-cli\nproject: ml-team\n"
                   "tasks:\n  - command: [\"true\"]\n    resources: {gpus: 1}\n")
    env = world.os_env("alice")
    run = subprocess.run([sys.executable, "-m", "gpuplane", "apply", "-f", str(job)], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "created" in run.stdout
    run = subprocess.run([sys.executable, "-m", "gpuplane", "get", "workloads", "-o", "json"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "job-cli" in run.stdout and "ml-team" in run.stdout

    env["OS_PASSWORD"] = "wrong"
    run = subprocess.run([sys.executable, "-m", "gpuplane", "get", "workloads"], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "refused the credentials of user alice" in run.stderr
    assert f"OS_AUTH_URL={world.ks.url}" in run.stderr, run.stderr


def test_revoked_token_is_refused_within_the_cache_lifetime(world: World):
    token = world.token("alice")
    assert world.get("/v1/workloads", token).status_code == 200  # validated, now cached
    world.ks.revoke(token)
    revoked_at = time.monotonic()
    while True:
        resp = world.get("/v1/workloads", token)
        waited = time.monotonic() - revoked_at
        if resp.status_code == 401:
            break
        assert resp.status_code == 200, resp.text
        assert waited < CACHE_S + 5, "still accepted long after the cache lifetime"
        time.sleep(0.1)
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["code"] == "gpuplane.auth.unauthenticated"
    assert waited <= CACHE_S + 2.0, waited  # + one validation round trip (~0.7 s here)
    print(f"revoked token refused {waited:.2f} s after revocation (cache {CACHE_S:g} s)")


# -- roles and isolation --------------------------------------------------------------------
def test_a_display_name_does_not_link_a_keystone_project(world: World):
    """The link lives in a table only the Keystone mapping writes: a display name that names
    another Keystone project's id (anyone who may edit it could write one) links nothing."""
    world.get("/v1/whoami", world.token("alice"))  # ml-team exists, linked to ML Team
    third = world.ks.create_project("Third Team", world.domain_id)
    world.passwords["carol"] = secrets.token_hex(8)
    carol = world.ks.create_user("carol", world.passwords["carol"], world.domain_id)
    world.ks.assign("member", carol, third)
    resp = world.http.patch(world.url + "/v1/projects/ml-team", headers=world.admin,
                            json={"display_name": f"ML Team (keystone project {third})"})
    assert resp.status_code == 200, resp.text
    token = world.token("carol", "Third Team")
    me = world.get("/v1/whoami", token).json()
    assert [(b["role"], b["scope_name"]) for b in me["roles"]] == [("member", "third-team")]
    resp = world.post("/v1/workloads", token, workload("job-carol", "ml-team"))
    assert resp.status_code == 404, resp.text  # ml-team is not carol's
    # the next ML Team token puts ml-team's display name back
    world.get("/v1/whoami", world.token("alice"))
    assert world.as_admin("/v1/projects/ml-team")["display_name"] == \
        f"ML Team (keystone project {world.ids['ml']})"


def test_reader_cannot_submit_but_sees_the_project(world: World):
    token = world.token("rita")
    resp = world.post("/v1/workloads", token, workload("job-rita", "ml-team"))
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["code"] == "gpuplane.auth.forbidden"
    names = {w["name"] for w in world.get("/v1/workloads", token).json()["items"]}
    assert "job-alice" in names


def test_another_projects_user_cannot_see_it(world: World):
    token = world.token("bob", "Other Team")
    assert world.get("/v1/workloads/job-alice", token,
                     params={"project": "ml-team"}).status_code == 404
    assert world.get("/v1/workloads", token).json()["items"] == []
    assert world.post("/v1/workloads", token,
                      workload("job-bob", "ml-team")).status_code == 404
    resp = world.post("/v1/workloads", token, workload("job-bob", "other-team"))
    assert resp.status_code == 201, resp.text
    assert [p["name"] for p in world.get("/v1/projects", token).json()["items"]] == [
        "other-team"]


def test_project_admin_role_is_not_a_global_role(world: World):
    token = world.token("maria")
    me = world.get("/v1/whoami", token).json()
    assert [(b["role"], b["scope"]) for b in me["roles"]] == [("admin", "project")]
    resp = world.post("/v1/sites", token, {"name": "sneaky", "jurisdiction": "EU/DE"})
    assert resp.status_code == 403, resp.text
    projects = [p["name"] for p in world.get("/v1/projects", token).json()["items"]]
    assert projects == ["ml-team"]


def test_global_scope_admin_is_a_gpuplane_global_admin(world: World):
    ks = world.ks
    token = ks.admin_token()  # admin role on the configured global project
    me = world.get("/v1/whoami", token).json()
    assert me["name"].startswith("admin-")  # gpuplane's own 'admin' keeps its name
    assert ("admin", "global") in {(b["role"], b["scope"]) for b in me["roles"]}
    projects = {p["name"] for p in world.get("/v1/projects", token).json()["items"]}
    assert {"default", "ml-team", "other-team"} <= projects


def test_role_changes_are_kept_in_step(world: World):
    ks, rita = world.ks, world.ids["rita"]
    first = world.token("rita")
    assert world.get("/v1/whoami", first).status_code == 200
    ks.unassign("reader", rita, world.ids["ml"])
    ks.assign("member", rita, world.ids["ml"])
    token = world.token("rita")
    resp = world.post("/v1/workloads", token, workload("job-rita", "ml-team"))
    assert resp.status_code == 201, resp.text
    roles = world.as_admin("/v1/users/rita")["roles"]
    assert [(b["role"], b["scope_name"]) for b in roles] == [("member", "ml-team")]
    actions = [(e["action"], e["detail"].get("role")) for e in
               world.as_admin("/v1/audit?limit=500")["items"]
               if e["actor"] == "keystone" and e["object_id"] == "rita"]
    assert ("role.revoke", "viewer") in actions and actions[-1] == ("role.grant", "member")


def test_keystone_callers_cannot_mint_gpuplane_tokens(world: World):
    resp = world.post("/v1/tokens", world.token("alice"), {"name": "forever"})
    assert resp.status_code == 403, resp.text
    assert "outlive" in resp.json()["detail"]


# -- failures: never a traceback --------------------------------------------------------------
@pytest.mark.parametrize("token", ["garbage", "gAAAAABnot-a-real-fernet-token", "a b c", "x" * 9000])
def test_garbage_token_is_a_401_problem(world: World, token: str):
    resp = world.get("/v1/workloads", token)
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert body["code"] == "gpuplane.auth.unauthenticated" and "Keystone" in body["detail"]
    assert "Traceback" not in resp.text


def test_unscoped_token_is_refused_with_a_hint(world: World):
    token = world.ks.token("alice", world.passwords["alice"], world.domain)
    resp = world.get("/v1/workloads", token)
    assert resp.status_code == 401, resp.text
    assert "OS_PROJECT_NAME" in resp.json()["detail"]


def test_bearer_tokens_keep_working(world: World):
    resp = world.http.get(world.url + "/v1/whoami", headers=world.admin)
    assert resp.status_code == 200 and resp.json()["name"] == "admin"


def test_keystone_down_is_a_503_problem(tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}/v3"
    app = create_app(keystone_settings(None, tmp_path, keystone_url=dead, keystone_timeout_s=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/v1/workloads", headers={"X-Auth-Token": "gAAAAABsomething"})
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == PROBLEM and resp.headers["retry-after"]
    body = resp.json()
    assert body["code"] == "gpuplane.keystone.unavailable"
    assert dead in body["detail"] and "Traceback" not in resp.text
    app.state.store.dispose()


def test_refused_service_credentials_are_a_503_naming_the_setting(world: World, tmp_path: Path):
    app = create_app(keystone_settings(
        world, tmp_path, keystone_url=world.ks.url, keystone_username="gsvc",
        keystone_password="wrong", keystone_user_domain_name=world.domain,
        keystone_project_name="svc", keystone_project_domain_name=world.domain))
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/v1/workloads", headers={"X-Auth-Token": world.token("alice")})
    assert resp.status_code == 503, resp.text
    assert "GPUPLANE_KEYSTONE_USERNAME" in resp.json()["detail"]
    app.state.store.dispose()


def test_tokens_validate_themselves_without_service_credentials(world: World, tmp_path: Path):
    app = create_app(keystone_settings(world, tmp_path, keystone_url=world.ks.url))
    token = world.token("bob", "Other Team")
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/v1/whoami", headers={"X-Auth-Token": token})
        assert resp.status_code == 200, resp.text
        world.ks.revoke(token)
        app.state.services.keystone(app.state.settings).cache.clear()
        assert client.get("/v1/whoami", headers={"X-Auth-Token": token}).status_code == 401
    app.state.store.dispose()


def test_keystone_token_without_keystone_configured_is_a_401_that_says_so(tmp_path: Path):
    app = create_app(keystone_settings(None, tmp_path))
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/v1/workloads", headers={"X-Auth-Token": "gAAAAABsomething"})
    assert resp.status_code == 401
    assert "GPUPLANE_KEYSTONE_URL" in resp.json()["detail"]
    app.state.store.dispose()


def test_keystone_install_and_start_time(keystone: Keystone):
    """Not a check of gpuplane: records how long the harness took (shown with -s)."""
    if keystone.started_in_s is not None:
        print(f"keystone.sh start: {keystone.started_in_s:.1f} s")
        assert keystone.started_in_s < 600


# -- pure parts (no Keystone) -----------------------------------------------------------------
def test_names_role_tables_and_cache():
    assert slug("ML Team") == "ml-team" and slug("Ünïcode!!") == "n-code" and slug("--") == "keystone"
    assert name_candidates("Default", "default") == ["default", "default-default"]
    long = name_candidates("x" * 80, "0123456789abcdef")
    assert all(len(n) <= 63 for n in long) and long[1].endswith("-01234567")
    assert parse_role_map(" admin = admin , reader=viewer,") == {"admin": "admin",
                                                                   "reader": "viewer"}
    assert minimal_roles({"admin", "member", "viewer"}) == {"admin"}
    assert minimal_roles({"member", "auditor"}) == {"member", "auditor"}
    cache = TokenCache(max_entries=2)
    for i in range(3):
        cache.put(str(i), 10.0, object())  # type: ignore[arg-type]
    assert cache.get("0", 0.0) is None and cache.get("2", 0.0) is not None
    assert cache.get("2", 10.0) is None and len(cache) == 1
    with pytest.raises(ValueError, match="GPUPLANE_ROLE"):
        Settings(keystone_project_roles="admin=root")


def test_os_variables_and_clouds_yaml(tmp_path: Path):
    env = {"OS_AUTH_URL": "http://ks:5000", "OS_USERNAME": "u", "OS_PASSWORD": "p",
           "OS_PROJECT_NAME": "p1", "OS_USER_DOMAIN_NAME": "D", "OS_PROJECT_DOMAIN_NAME": "D"}
    login = keystone_login_from_env(env)
    assert login is not None and login.auth_url == "http://ks:5000/v3"
    assert login.body == {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "u", "domain": {"name": "D"}, "password": "p"}}},
        "scope": {"project": {"name": "p1", "domain": {"name": "D"}}}}}
    assert "OS_AUTH_URL=http://ks:5000" in login.source
    assert keystone_login_from_env({"PATH": "/bin"}) is None
    with pytest.raises(InvalidInput) as err:
        keystone_login_from_env({"OS_AUTH_URL": "http://ks/v3", "OS_USERNAME": "u"})
    assert [e.loc for e in err.value.errors] == ["OS_PASSWORD"]
    ready = keystone_login_from_env({"OS_TOKEN": "tok"})
    assert ready is not None and ready.token == "tok"

    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  lab:\n    auth:\n      auth_url: https://ks.lab/v3\n"
        "      application_credential_id: abc\n    auth_type: v3applicationcredential\n")
    (tmp_path / "secure.yaml").write_text(
        "clouds:\n  lab:\n    auth:\n      application_credential_secret: s3\n")
    env = {"OS_CLOUD": "lab", "OS_CLIENT_CONFIG_FILE": str(tmp_path / "clouds.yaml"),
           "OS_CLIENT_SECURE_FILE": str(tmp_path / "secure.yaml")}
    login = keystone_login_from_env(env)
    assert login is not None and f"cloud 'lab' of {tmp_path / 'clouds.yaml'}" == login.source
    assert login.body == {"auth": {"identity": {"methods": ["application_credential"],
                                                "application_credential": {"secret": "s3",
                                                                           "id": "abc"}}}}
    with pytest.raises(InvalidInput, match="no cloud 'nope'"):
        keystone_login_from_env({**env, "OS_CLOUD": "nope"})


@pytest.mark.parametrize("db", [p for p in database_params() if p != "sqlite"])
def test_keystone_tenancy_on_postgresql(keystone: Keystone, tmp_path: Path, db: str):
    """The mapping's writes (tenancy, links, bindings) on PostgreSQL: first use creates, the
    next token of the same user writes nothing and lands in the same project."""
    ks = keystone
    domain = f"gpg-{secrets.token_hex(3)}"
    domain_id = ks.create_domain(domain)
    try:
        project = ks.create_project("PG Team", domain_id)
        password = secrets.token_hex(8)
        ks.assign("member", ks.create_user("dora", password, domain_id), project)
        for db_url in make_db_url(db, tmp_path):
            app = create_app(Settings(home=tmp_path, db_url=db_url, keystone_url=ks.url,
                                      keystone_cache_s=0))
            with ServerThread(app) as server, httpx.Client(timeout=60) as http:
                def whoami() -> dict:
                    token = ks.token("dora", password, domain, "PG Team")
                    resp = http.get(server.url + "/v1/whoami", headers={"X-Auth-Token": token})
                    assert resp.status_code == 200, resp.text
                    return resp.json()

                first = whoami()
                with app.state.store.read() as tx:
                    entries = len(tx.audit.list()[0])
                assert [(b["role"], b["scope_name"]) for b in first["roles"]] == [
                    ("member", "pg-team")]
                assert whoami() == first
                with app.state.store.read() as tx:
                    assert len(tx.audit.list()[0]) == entries  # in step: nothing written
            app.state.store.dispose()
    finally:
        ks.delete_domain(domain_id)
