"""Contexts (named servers with a token file) and where a token comes from: a 401 names the
server and the token's source; the ./.gpuplane admin token is only used with a note."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gpuplane.cli import common
from gpuplane.cli.main import _register, app
from gpuplane.domain.errors import GpuplaneError


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("GPUPLANE_TOKEN", "GPUPLANE_URL", "OS_CLOUD", "OS_AUTH_URL", "OS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GPUPLANE_CONFIG", str(tmp_path / "cfg" / "config.yaml"))
    monkeypatch.setenv("GPUPLANE_HOME", str(tmp_path / "nohome"))
    monkeypatch.setattr("sys.argv", ["gpuplane", "get", "hosts"])
    _register()
    return tmp_path


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_contexts_are_saved_listed_and_switched(env):
    (env / "lab.token").write_text("gp-lab\n")
    assert run("config", "set-context", "lab", "--url", "http://lab:8080",
               "--token-file", str(env / "lab.token")).exit_code == 0
    assert run("config", "set-context", "prod", "--url", "https://prod:8443").exit_code == 0
    assert run("config", "current-context").stdout.strip() == "lab"
    assert (env / "cfg" / "config.yaml").stat().st_mode & 0o777 == 0o600
    missing = run("config", "use-context", "nope")
    assert missing.exit_code != 0 and "known: lab, prod" in missing.output
    assert run("config", "use-context", "prod").exit_code == 0
    listed = run("config", "get-contexts").stdout
    assert "* prod" in listed and "  lab" in listed


def test_the_client_takes_the_context_server_and_token(env):
    (env / "lab.token").write_text("gp-lab\n")
    run("config", "set-context", "lab", "--url", "http://127.0.0.1:9", "--token-file",
        str(env / "lab.token"))
    client = common.make_client(common.DEFAULT_URL, None)
    assert client.url == "http://127.0.0.1:9"
    assert client._http.headers["Authorization"] == "Bearer gp-lab"
    assert "context 'lab'" in client.auth_source
    # an explicit token wins, and says where it came from
    other = common.make_client(common.DEFAULT_URL, "gp-flag")
    assert other._http.headers["Authorization"] == "Bearer gp-flag"
    assert other.auth_source == "--token"


def test_a_401_names_the_server_and_the_token_source(env):
    import httpx

    from gpuplane.client import Client

    def answer(request):
        return httpx.Response(401, json={"code": "gpuplane.auth.unauthenticated",
                                         "detail": "invalid token", "status": 401})

    client = Client("http://srv:1", "gp-x", transport=httpx.MockTransport(answer),
                    auth_source="context 'lab' (/x/lab.token)")
    with pytest.raises(GpuplaneError) as err:
        client.get_json("/v1/whoami")
    assert "server http://srv:1" in str(err.value) and "context 'lab'" in str(err.value)


def test_the_local_admin_token_is_used_only_with_a_note(env, capsys):
    (env / "nohome").mkdir()
    (env / "nohome" / "admin-token").write_text("gp-admin\n")
    client = common.make_client(common.DEFAULT_URL, None)
    assert client._http.headers["Authorization"] == "Bearer gp-admin"
    assert "note: using the admin token in" in capsys.readouterr().err
