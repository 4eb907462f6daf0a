"""CLI and client pieces that need no server: YAML loading, kinds, error mapping, output."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from gpuplane.cli.kinds import enrich, kind_named
from gpuplane.cli.main import _register, app
from gpuplane.cli.resources import load_documents, request_body
from gpuplane.client import Client
from gpuplane.domain.errors import Conflict, InvalidInput, NotFound


def test_yaml_syntax_errors_name_line_and_column(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("kind: Job\nname: x\ntasks: [\n  - a: b\n")
    with pytest.raises(InvalidInput) as err:
        load_documents(f)
    assert "line" in err.value.detail and err.value.errors[0].loc.startswith("bad.yaml:")


def test_every_document_problem_is_reported_not_just_the_first(tmp_path):
    f = tmp_path / "docs.yaml"
    f.write_text("kind: Job\nname: a\n---\n- not a mapping\n---\nkind: Nope\n---\nname: nokind\n")
    with pytest.raises(InvalidInput) as err:
        load_documents(f)
    assert [e.loc for e in err.value.errors] == ["documents[1]", "documents[2].kind",
                                                 "documents[3].kind"]


def test_workload_kinds_become_the_spec_kind():
    kind, body = request_body({"kind": "Service", "apiVersion": "v1", "name": "s", "tasks": []})
    assert kind.path == "/v1/workloads" and body == {"name": "s", "tasks": [], "kind": "service"}


def test_unknown_kinds_list_the_valid_ones():
    assert kind_named("wl").name == "workload" and kind_named("GPUS").name == "gpu"
    with pytest.raises(InvalidInput, match="valid kinds: site, host"):
        kind_named("pods")


def test_enrich_summarises_tasks_and_hosts():
    wl = {"status": {"tasks": [
        {"phase": "Running", "placement": {"host": "h1"}, "simulated": True},
        {"phase": "Pending", "placement": None, "simulated": False}]}}
    row = enrich(kind_named("workload"), wl)
    assert row["task_summary"] == "1 Running 1 Pending" and row["where"] == "h1 (simulated)"
    wl["status"]["tasks"][0]["placement"]["borrowed"] = True     # may be reclaimed: says so
    assert enrich(kind_named("workload"), wl)["where"] == "h1 (simulated, borrowed)"


def _client(status: int, body: dict) -> Client:
    return Client("http://x", "t", transport=httpx.MockTransport(
        lambda req: httpx.Response(status, json=body,
                                   headers={"content-type": "application/problem+json"})))


@pytest.mark.parametrize("status,cls", [(404, NotFound), (409, Conflict), (422, InvalidInput)],
                         ids=["404 is NotFound", "409 is Conflict", "422 is InvalidInput"])
def test_problem_json_becomes_the_domain_error_with_its_fields(status, cls):
    body = {"code": "gpuplane.x.y", "detail": "bad", "errors": [{"loc": "a.b", "msg": "no"}]}
    with pytest.raises(cls) as err:
        _client(status, body).get_json("/v1/x")
    assert err.value.code == "gpuplane.x.y"
    if cls is InvalidInput:
        assert err.value.errors[0].loc == "a.b"


def test_an_unreachable_server_is_one_clear_error_without_traceback():
    _register()
    res = CliRunner().invoke(app, ["get", "hosts", "--url", "http://127.0.0.1:9"])
    assert res.exit_code != 0
    assert "cannot reach gpuplane" in res.output and "Traceback" not in res.output


def test_registering_twice_adds_no_command_twice():
    _register()
    before = (len(app.registered_commands), len(app.registered_groups))
    _register()
    assert (len(app.registered_commands), len(app.registered_groups)) == before
