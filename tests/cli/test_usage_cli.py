"""``gpuplane usage`` against the real app (the CLI's client talks to it in-process): the table,
JSON, CSV and FOCUS outputs, and input errors without a traceback."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gpuplane.cli import usage as usage_cli
from gpuplane.cli.main import _register, app
from gpuplane.client import Client
from gpuplane.governance import focus
from gpuplane.governance.chargeback import ROW_FIELDS

from api.conftest import build_world
from api.test_chargeback_api import H, T0, seed
from functional.dbs import FakeClock


@pytest.fixture
def cli(tmp_path, monkeypatch):
    clock = FakeClock(T0)
    world = build_world(f"sqlite:///{tmp_path / 'gpuplane.db'}", tmp_path, clock=clock)
    seed(world)
    clock.advance(2 * H)

    def make_client(url, token):
        client = Client("http://testserver", None)
        client._http = TestClient(world.client.app, raise_server_exceptions=False,
                                  headers={"Authorization": f"Bearer {world.tokens[token]}"})
        return client

    monkeypatch.setattr(usage_cli, "make_client", make_client)
    _register()

    def invoke(user, *args):
        return CliRunner().invoke(app, ["usage", "--token", user, "--since", str(T0),
                                        "--until", "2027-01-15T10:00:00Z", *args])
    yield invoke
    world.client.close()
    world.client.app.state.store.dispose()


def test_the_default_table_shows_rows_totals_and_hosts_to_the_admin(cli):
    res = cli("admin")
    assert res.exit_code == 0, res.output
    assert "proj-alpha" in res.stdout and "proj-beta" in res.stdout
    assert "total: 2.75 GPU-hours" in res.stdout and "lost to preemption" in res.stdout
    assert "GPU-hours per host" in res.stdout and "gpu-1" in res.stdout


def test_a_tenant_gets_its_rows_as_csv_json_and_focus(cli):
    rows = list(csv.DictReader(io.StringIO(cli("bob-beta", "-o", "csv").stdout)))
    assert tuple(rows[0]) == ROW_FIELDS and [r["project"] for r in rows] == ["proj-beta"]
    body = json.loads(cli("bob-beta", "-o", "json", "--by", "user").stdout)
    assert [r["user"] for r in body["rows"]] == ["bob-beta"] and body["hosts"] is None
    out = cli("bob-beta", "-o", "focus", "--spread", "proportional").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0]) == focus.COLUMNS and "alpha" not in out
    table = cli("bob-beta", "--by", "org").stdout
    assert "org-beta" in table and "GPU-hours per host" not in table


@pytest.mark.parametrize("args,field", [(["--since", "last tuesday"], "--since"),
                                        (["--until", "1999-01-01"], "query.since")],
                         ids=["a time the CLI cannot read", "an empty period the API refuses"])
def test_bad_times_are_one_error_line_without_a_traceback(cli, args, field):
    res = cli("admin", *args)
    assert res.exit_code == 2, res.output
    assert field in res.stderr and "Traceback" not in res.output
