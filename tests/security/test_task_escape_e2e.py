"""Escapes from inside a task, end to end: every role of tenant B that may submit work runs a
hostile script on the real local host of a `gpuplane up` (SQLite and PostgreSQL).

The server carries a planted secret in its environment and its home; tenant A runs a task of
its own. Each script tries to read the admin token, the database, the secret file, the task
logs and state of gpuplane, the server's /proc and environment, to signal every process it
can reach, and to write outside its scratch folder. Its log (read back through the API with
the attacker's own token) must show every read refused, no secret, a non-root uid when the
server is root, and tenant A's task must still be running afterwards.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
from e2e.conftest import db_url, make_server, wait_phase  # noqa: F401 - fixtures

from gpuplane.drivers.sandbox import find_bwrap
from security.conftest import ATTEMPTS, SECRET, SECRET_FILE

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")]

LOCAL = {"gpuplane.io/driver": "local"}
SUBMITTERS = (("mal-org-admin", "admin", "organisation", "org-beta"),
              ("mal-proj-admin", "admin", "project", "proj-beta"),
              ("mal-operator", "operator", "project", "proj-beta"),
              ("mal-member", "member", "project", "proj-beta"))
REFUSED = ("No such file or directory", "Permission denied", "Read-only file system")

# Each probe prints its marker and the outcome, one line, so the test can read them apart.
PROBES = {
    "read_admin_token": 'cat "$H/admin-token"',
    "read_database": 'head -c 64 "$H/gpuplane.db"',
    "read_planted_secret": f'cat "$H/{SECRET_FILE}"',
    "list_task_logs": 'ls "$H/logs"',
    # the task's own read-only control folder (its stop file) is the one entry it may see
    "list_driver_state": 'ls "$H/local" | grep -vx "$GPUPLANE_TASK_ID.ctl" || echo "No such file or directory: nothing else"',
    "write_system": "{ echo x > /etc/gpuplane-escape; }",
}


def _script(home: str) -> str:
    lines = [f'H="{home}"']
    for kind, cmd in PROBES.items():
        lines.append(f'echo "<{kind}>" $( {cmd} 2>&1 ) "</{kind}>"')
    lines += ['echo "<uid>$(id -u)</uid>"',
              'echo "<procs>$(ls /proc | grep -c "^[0-9]")</procs>"',
              # lands in the task's private mask at worst: checked on the host below
              'echo x > "$H/planted-by-task" 2>&1',
              'env', 'cat /proc/1/environ 2>&1 | tr "\\0" "\\n"', 'kill -9 -1 2>&1; true']
    return "\n".join(lines)


def _between(text: str, tag: str) -> str:
    start = text.index(f"<{tag}>") + len(tag) + 2
    return text[start:text.index(f"</{tag}>", start)].strip()


def test_hostile_tasks_of_every_submitting_role_escape_nothing(make_server, db_url,
                                                               monkeypatch):
    monkeypatch.setenv("RED_TEAM_SECRET", SECRET)
    srv = make_server(db_url, args=("--no-demo",))
    srv.home.mkdir(parents=True, exist_ok=True)
    (srv.home / SECRET_FILE).write_text(SECRET)
    srv.start()
    admin_token = srv.token
    home = str(srv.home.resolve())
    with srv.client() as c:
        for org, project in (("org-alpha", "proj-alpha"), ("org-beta", "proj-beta")):
            assert c.post("/v1/organisations", json={"name": org}).status_code == 201
            assert c.post("/v1/projects", json={"name": project, "organisation": org}
                          ).status_code == 201
        tokens = {}
        for user, role, scope, scope_name in SUBMITTERS:
            assert c.post("/v1/users", json={"name": user, "organisation": "org-beta"}
                          ).status_code == 201
            assert c.post("/v1/role-bindings", json={"user": user, "role": role, "scope": scope,
                                                     "scope_name": scope_name}).status_code == 201
            tokens[user] = c.post("/v1/tokens", json={"user": user, "name": "t"}).json()["token"]
        victim = c.post("/v1/workloads", json={
            "name": "victim", "project": "proj-alpha",
            "tasks": [{"command": ["sh", "-c", "echo victim-$((6*7)) > mine; sleep 600"],
                       "selector": LOCAL}]}).json()["id"]
        assert wait_phase(c, victim, {"Running"})["status"]["phase"] == "Running"

    for user, *_ in SUBMITTERS:
        headers = {"Authorization": f"Bearer {tokens[user]}"}
        with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as mal:
            r = mal.post("/v1/workloads", json={
                "name": f"escape-{user}", "project": "proj-beta",
                "tasks": [{"command": ["sh", "-c", _script(home)], "selector": LOCAL}]})
            assert r.status_code == 201, r.text
            uid = r.json()["id"]
            wl = wait_phase(mal, uid, {"Succeeded", "Failed", "Cancelled", "Lost"})
            assert wl["status"]["phase"] in ("Succeeded", "Failed"), wl
            log = mal.get(f"/v1/workloads/{uid}/logs").text
        for kind in PROBES:
            ATTEMPTS[f"task_e2e.{kind}"] += 1
            outcome = _between(log, kind)
            assert any(word in outcome for word in REFUSED), (kind, outcome)
        ATTEMPTS["task_e2e.read_server_env"] += 1
        ATTEMPTS["task_e2e.read_server_proc"] += 1
        ATTEMPTS["task_e2e.signal_every_process"] += 1
        assert SECRET not in log and admin_token not in log
        assert "GPUPLANE_DB_URL" not in log and "GPUPLANE_HOME=" not in log
        # its own PID namespace: bwrap's init, sh, the $( ) subshell, ls, grep; no server
        assert int(_between(log, "procs")) <= 5
        if os.geteuid() == 0:
            ATTEMPTS["task_e2e.run_as_root"] += 1
            assert _between(log, "uid") != "0"
        ATTEMPTS["task_e2e.write_server_home"] += 1
        assert not (srv.home / "planted-by-task").exists()

    with srv.client() as c:
        assert c.get(f"/v1/workloads/{victim}").json()["status"]["phase"] == "Running"
        assert c.post(f"/v1/workloads/{victim}/cancel").status_code in (200, 202)
        assert wait_phase(c, victim, {"Cancelled"})["status"]["phase"] == "Cancelled"
