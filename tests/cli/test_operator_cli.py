"""The operator habits against the real app (the CLI's client talks to it in-process):
cordon/uncordon/drain, whoami, token create/list/revoke, shell completion, and refusals without
a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpuplane.cli import operator

from api.conftest import build_world
from cli.inprocess import in_process_cli


@pytest.fixture
def cli(tmp_path, monkeypatch):
    world = build_world(f"sqlite:///{tmp_path / 'gpuplane.db'}", tmp_path)

    invoke = in_process_cli(monkeypatch, world.client.app, world.tokens, (operator,))
    invoke.world = world
    yield invoke
    world.client.close()
    world.client.app.state.store.dispose()


def test_cordon_drain_uncordon_and_who_may(cli):
    assert "cordoned" in cli("admin", "cordon", "gpu-1").stdout
    assert "draining" in cli("admin", "drain", "gpu-1").stdout
    assert "ready" in cli("admin", "uncordon", "gpu-1").stdout
    refused = cli("alice-alpha", "cordon", "gpu-1")
    assert refused.exit_code != 0 and "forbidden" in refused.output
    assert "Traceback" not in refused.output


def test_whoami_and_tokens(cli):
    me = cli("alice-alpha", "whoami")
    assert "alice-alpha" in me.stdout and "member" in me.stdout
    made = cli("alice-alpha", "token", "create", "--name", "laptop")
    assert made.exit_code == 0 and made.stdout.strip().startswith("gp")
    listed = cli("alice-alpha", "token", "list", "-o", "json")
    assert "laptop" in listed.stdout and made.stdout.strip() not in listed.stdout
    token_id = next(t["id"] for t in __import__("json").loads(listed.stdout)
                    if t["name"] == "laptop")
    assert cli("alice-alpha", "token", "revoke", str(token_id)).exit_code == 0
    r = cli.world.client.get("/v1/whoami",
                             headers={"Authorization": f"Bearer {made.stdout.strip()}"})
    assert r.status_code == 401


def test_completion_scripts_complete_commands():
    for shell in ("bash", "zsh", "fish"):
        out = subprocess.run([sys.executable, "-m", "gpuplane", "completion", shell],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "_GPUPLANE_COMPLETE" in out.stdout, out.stderr
    env = {**os.environ, "COMP_WORDS": "gpuplane tok", "COMP_CWORD": "1",
           "_GPUPLANE_COMPLETE": "complete_bash"}
    script = os.path.join(os.path.dirname(sys.executable), "gpuplane")  # the console script
    out = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["token"], out.stdout + out.stderr
    bad = subprocess.run([sys.executable, "-m", "gpuplane", "completion", "tcsh"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "bash, zsh or fish" in bad.stderr


def test_quotas_are_named_by_project_resource_and_flavor(cli, monkeypatch):
    from gpuplane.cli import resources

    monkeypatch.setattr(resources, "make_client", operator.make_client)
    shown = cli("admin", "describe", "quota", "proj-alpha/gpu", "-o", "json")
    assert shown.exit_code == 0 and '"guaranteed": 4' in shown.stdout, shown.output
    missing = cli("admin", "delete", "quota", "proj-alpha/cpu")
    assert missing.exit_code != 0 and "gpuplane get quotas" in missing.output
    assert cli("admin", "delete", "quota", "proj-alpha").exit_code == 0
    assert cli.world.client.get("/v1/quotas", headers=cli.world.h("admin")).json()["items"] == []
