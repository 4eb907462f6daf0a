"""gpuplane's state is its owner's only: a fresh `gpuplane up` home, after a real task ran,
holds folders 0700 and files without group or other bits (gpuplane.db and its -wal/-shm,
admin-token, lease.log, logs/, local/ and the task's files); a home left world-readable by an
older version is tightened at the next start."""

from __future__ import annotations

import os
import stat
import time

import pytest

pytestmark = pytest.mark.slow


def _modes(home):
    return {p: stat.S_IMODE(p.lstat().st_mode) for p in [home, *home.rglob("*")]
            if not p.is_symlink()}


def _run_task(srv) -> None:
    with srv.client() as c:
        r = c.post("/v1/workloads", json={
            "name": "modes", "project": "default",
            "tasks": [{"command": ["sh", "-c", "echo hi > out.txt; echo done"],
                       "resources": {"cpu": 0.1, "memory": 64},
                       "selector": {"gpuplane.io/driver": "local"}}]})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            phase = c.get("/v1/workloads/modes").json()["status"]["phase"]
            if phase in ("Succeeded", "Failed", "Lost", "Cancelled"):
                break
            time.sleep(0.2)
        assert phase == "Succeeded", c.get("/v1/workloads/modes").text


def test_a_fresh_home_is_owner_only(make_server):
    srv = make_server(args=("--no-demo",))
    os.chmod(srv.home, 0o755)
    srv.start()
    _run_task(srv)
    modes = _modes(srv.home)
    names = {p.name for p in modes}
    assert {"gpuplane.db", "admin-token", "logs"} <= names, names
    for p, mode in modes.items():
        assert mode & 0o077 == 0, (str(p), oct(mode))
    assert modes[srv.home] == 0o700
    assert modes[srv.home / "gpuplane.db"] == 0o600
    assert modes[srv.home / "admin-token"] == 0o600
    srv.stop()

    # an older home, world-readable: the next start tightens what gpuplane owns there
    mine = [p for p in [srv.home, *srv.home.rglob("*")]
            if not p.is_symlink() and p.lstat().st_uid == os.geteuid()]
    for p in mine:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    srv.start()
    for p in mine:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode & 0o077 == 0, (str(p), oct(mode))
