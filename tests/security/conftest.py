"""The red-team world: a victim tenant and an attacker tenant holding a token of every role.

Built on ``tests/api/conftest.build_world`` (tenant A: org-alpha / proj-alpha, the victim;
tenant B: org-beta / proj-beta). Here B gets one user per role and scope it can hold inside its
own organisation (``ATTACKERS``), and the server process carries a planted secret in its
environment (``SECRET_ENV``) and in its home folder (``SECRET_FILE``): whatever an attack
returns, the secret must never appear in it (``assert_no_leak``).

Every attack test takes ``red`` (one world per database, function-scoped: attacks may change
state) and loops over ``ATTACKERS`` (or is parametrized with it), counting its attempts with
``red.attempt(kind)`` so the suite can report attempts by kind.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import pytest

from api.conftest import World, _ok, build_world
from functional.dbs import database_params, make_db_url

SECRET = "gpuplane-red-team-secret-7f3a9c"
SECRET_ENV = "GPUPLANE_RED_TEAM_SECRET"
SECRET_FILE = "red-team-secret"

# (user, role, scope kind, scope name): every role tenant B can hold in its own organisation.
ATTACKERS = (
    ("mal-org-admin", "admin", "organisation", "org-beta"),
    ("mal-proj-admin", "admin", "project", "proj-beta"),
    ("mal-operator", "operator", "project", "proj-beta"),
    ("mal-member", "member", "project", "proj-beta"),
    ("mal-viewer", "viewer", "project", "proj-beta"),
    ("mal-auditor", "auditor", "organisation", "org-beta"),
)
ATTACKER_NAMES = tuple(a[0] for a in ATTACKERS)

ATTEMPTS: collections.Counter[str] = collections.Counter()


@dataclass
class RedWorld:
    world: World
    home: object
    attempts: collections.Counter = field(default_factory=collections.Counter)

    @property
    def client(self):
        return self.world.client

    def h(self, user: str) -> dict[str, str]:
        return self.world.h(user)

    def attempt(self, kind: str, n: int = 1) -> None:
        self.attempts[kind] += n
        ATTEMPTS[kind] += n


def assert_no_leak(*texts: object) -> None:
    """Fail if the planted secret (or the admin token) shows up in any of ``texts``."""
    for text in texts:
        s = text if isinstance(text, str) else (
            text.decode(errors="replace") if isinstance(text, bytes) else repr(text))
        assert SECRET not in s, "the planted secret leaked"


def build_red_world(db_url: str, tmp_path) -> RedWorld:
    w = build_world(db_url, tmp_path)
    A = w.h("admin")
    for user, role, scope, scope_name in ATTACKERS:
        _ok(w.client.post("/v1/users", json={"name": user, "organisation": "org-beta"}, headers=A))
        b = _ok(w.client.post("/v1/role-bindings", headers=A, json={
            "user": user, "role": role, "scope": scope, "scope_name": scope_name}))
        w.ids[f"binding:{user}"] = b["id"]
        t = _ok(w.client.post("/v1/tokens", json={"user": user, "name": "main"}, headers=A))
        w.tokens[user] = t["token"]
        w.ids[f"token:{user}"] = t["id"]
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / SECRET_FILE).write_text(SECRET)
    return RedWorld(w, home)


@pytest.fixture(params=database_params())
def red(request, tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    for url in make_db_url(request.param, tmp_path):
        r = build_red_world(url, tmp_path)
        yield r
        r.client.close()
        r.client.app.state.store.dispose()


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if ATTEMPTS:
        terminalreporter.write_sep("-", "red-team attempts by kind (all refused)")
        for kind, n in sorted(ATTEMPTS.items()):
            terminalreporter.write_line(f"{kind:40s} {n:6d}")
        terminalreporter.write_line(f"{'total':40s} {sum(ATTEMPTS.values()):6d}")
