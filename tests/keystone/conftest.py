"""A live Keystone for the identity tests: started with scripts/openstack/keystone.sh (its
virtualenv is installed from PyPI on first use and reused), or an operator's own Keystone.

* Default: ``keystone.sh start --state <tmp>`` (fresh SQLite database and bootstrap admin),
  ``stop`` at the end of the session. An install or start failure FAILS the tests (no skip):
  the suite must not pass without having talked to a real Keystone.
* ``GPUPLANE_TEST_KEYSTONE_URL=https://keystone.example:5000/v3`` with
  ``GPUPLANE_TEST_KEYSTONE_ADMIN_PASSWORD`` (and, when not ``admin`` / ``admin`` / ``Default``,
  ``GPUPLANE_TEST_KEYSTONE_ADMIN_USER``, ``..._ADMIN_PROJECT``, ``..._ADMIN_DOMAIN``): the
  same tests against that Keystone. They create one domain named ``gpt-<random>`` with
  projects and users inside, and delete it afterwards; the admin user needs Keystone's
  ``admin`` role on its project.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "openstack" / "keystone.sh"


@dataclass
class Keystone:
    """A Keystone the tests administer through its API (as its bootstrap admin)."""

    url: str  # .../v3
    admin_password: str
    admin_user: str = "admin"
    admin_project: str = "admin"
    admin_domain: str = "Default"
    started_in_s: float | None = None  # None: an operator's Keystone
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))
    _admin_token: str | None = None

    # -- tokens ---------------------------------------------------------------------------
    def token(self, user: str, password: str, domain: str, project: str | None = None,
              project_domain: str | None = None, domain_scope: str | None = None) -> str:
        """A token for ``user`` (by name in ``domain``), project-scoped when ``project``,
        domain-scoped when ``domain_scope``, else unscoped."""
        auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": domain}, "password": password}}}}
        if project:
            auth["scope"] = {"project": {"name": project,
                                         "domain": {"name": project_domain or domain}}}
        elif domain_scope:
            auth["scope"] = {"domain": {"name": domain_scope}}
        resp = self.http.post(f"{self.url}/auth/tokens?nocatalog", json={"auth": auth})
        assert resp.status_code == 201, resp.text
        return resp.headers["X-Subject-Token"]

    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token = self.token(self.admin_user, self.admin_password,
                                           self.admin_domain, self.admin_project)
        return self._admin_token

    def revoke(self, token: str) -> None:
        resp = self.http.delete(f"{self.url}/auth/tokens", headers={
            "X-Auth-Token": self.admin_token(), "X-Subject-Token": token})
        assert resp.status_code == 204, resp.text

    # -- administration -------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)
             ) -> Any:  # noqa: ANN401
        resp = self.http.request(method, f"{self.url}{path}", json=body,
                                 headers={"X-Auth-Token": self.admin_token()})
        assert resp.status_code in ok, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def create_domain(self, name: str) -> str:
        return self.call("POST", "/domains", {"domain": {"name": name}})["domain"]["id"]

    def delete_domain(self, domain_id: str) -> None:
        self.call("PATCH", f"/domains/{domain_id}", {"domain": {"enabled": False}}, ok=(200, 404))
        self.call("DELETE", f"/domains/{domain_id}", ok=(204, 404))

    def create_project(self, name: str, domain_id: str) -> str:
        return self.call("POST", "/projects", {"project": {"name": name,
                                                           "domain_id": domain_id}})["project"]["id"]

    def create_user(self, name: str, password: str, domain_id: str) -> str:
        return self.call("POST", "/users", {"user": {"name": name, "password": password,
                                                     "domain_id": domain_id}})["user"]["id"]

    def role_id(self, name: str) -> str:
        roles = self.call("GET", f"/roles?name={name}")["roles"]
        assert roles, f"Keystone has no role {name!r}"
        return roles[0]["id"]

    def assign(self, role: str, user_id: str, project_id: str | None = None,
               domain_id: str | None = None) -> None:
        target = f"/projects/{project_id}" if project_id else f"/domains/{domain_id}"
        self.call("PUT", f"{target}/users/{user_id}/roles/{self.role_id(role)}")

    def unassign(self, role: str, user_id: str, project_id: str) -> None:
        self.call("DELETE", f"/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}")


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def keystone(tmp_path_factory) -> Iterator[Keystone]:
    url = os.environ.get("GPUPLANE_TEST_KEYSTONE_URL")
    if url:
        password = os.environ.get("GPUPLANE_TEST_KEYSTONE_ADMIN_PASSWORD")
        if not password:
            pytest.fail("GPUPLANE_TEST_KEYSTONE_URL is set but GPUPLANE_TEST_KEYSTONE_ADMIN_"
                        "PASSWORD is not: the tests create a domain, projects and users there "
                        "as that Keystone's admin")
        ks = Keystone(url.rstrip("/") if url.rstrip("/").endswith("/v3") else
                      url.rstrip("/") + "/v3", password,
                      os.environ.get("GPUPLANE_TEST_KEYSTONE_ADMIN_USER", "admin"),
                      os.environ.get("GPUPLANE_TEST_KEYSTONE_ADMIN_PROJECT", "admin"),
                      os.environ.get("GPUPLANE_TEST_KEYSTONE_ADMIN_DOMAIN", "Default"))
        yield ks
        ks.http.close()
        return
    state = tmp_path_factory.mktemp("keystone")
    password = secrets.token_hex(12)
    env = {**os.environ, "KEYSTONE_ADMIN_PASSWORD": password}
    t0 = time.monotonic()
    try:
        proc = subprocess.run([str(SCRIPT), "start", "--state", str(state)], env=env,
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{SCRIPT.name} start did not finish within 15 minutes")
    if proc.returncode != 0:
        pytest.fail(f"Keystone could not be installed or started ({SCRIPT.name} exit "
                    f"{proc.returncode}; 3 = PyPI unreachable); set GPUPLANE_TEST_KEYSTONE_URL "
                    f"to use a running Keystone instead:\n{_tail(proc.stderr)}")
    ks = Keystone(proc.stdout.strip().splitlines()[-1], password,
                  started_in_s=time.monotonic() - t0)
    try:
        yield ks
    finally:
        ks.http.close()
        subprocess.run([str(SCRIPT), "stop", "--state", str(state)], capture_output=True,
                       timeout=60)
