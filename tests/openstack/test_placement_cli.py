"""``gpuplane openstack sync | check | import`` against a live Placement (the exact contract)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpuplane.cli import openstack as openstack_cli
from gpuplane.cli.main import _register, app
from gpuplane.drivers.openstack import tree
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.sync import PlacementSync
from gpuplane.service.specs import HostSpec, SiteSpec

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "fleet-demo.yaml"


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register()
    return CliRunner()


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_sync_check_and_import_of_the_demo_fleet(runner, placement_url, placement, marker,
                                                  cleanup):
    cleanup(placement, marker)
    base = ["--placement-url", placement_url, "--token", "admin", "--fleet", str(DEMO),
            "--marker", marker]
    first = invoke(runner, "openstack", "sync", *base, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    demo = [d for d in yaml.safe_load_all(DEMO.read_text()) if d["kind"] == "Host"]
    assert report["providers"] == len(tree.fleet_tree(demo)) == 196
    assert report["writes"] > report["providers"] and report["problems"] == []

    second = json.loads(invoke(runner, "openstack", "sync", *base, "--json").stdout)
    assert (second["writes"], second["drift"], second["providers"]) == (0, 0, 196)
    check = json.loads(invoke(runner, "openstack", "check", *base, "--json").stdout)
    assert (check["drift"], check["writes"]) == (0, 0)

    # drift behind gpuplane's back shows in the human output and the exit code
    gpu = tree.provider_uuid("par1-l40s-0/gpu1")
    placement.delete_resource_provider(gpu)
    human = invoke(runner, "openstack", "check", *base, "--exit-code")
    assert human.exit_code == 1
    assert "create" in human.stdout and "par1-l40s-0/gpu1" in human.stdout
    assert "would change 3" in human.stdout  # create, inventory, traits

    imported = invoke(runner, "openstack", "import", "--placement-url", placement_url,
                      "--fleet", str(DEMO), "-o", "yaml")
    assert imported.exit_code == 0, imported.output
    docs = list(yaml.safe_load_all(imported.stdout))
    hosts = {d["name"]: d for d in docs if d["kind"] == "Host"}
    assert set(hosts) >= {d["name"] for d in demo}
    assert len(hosts["par1-l40s-0"]["gpus"]) == 3  # the deleted GPU is gone from Placement
    mig = hosts["fra1-h100-mig-0"]["gpus"][1]
    assert mig["mode"] == "mig" and len(mig["mig_layout"]) == 7
    for d in docs:  # every document is one `gpuplane apply -f` takes
        body = {k: v for k, v in d.items() if k != "kind"}
        (HostSpec if d["kind"] == "Host" else SiteSpec).model_validate(body)


def test_sync_reads_the_hosts_of_the_gpuplane_api(runner, placement_url, placement, marker,
                                                 cleanup, monkeypatch, tmp_path, scope):
    """Without --fleet the hosts come from GET /v1/hosts (the real app, in process)."""
    from fastapi.testclient import TestClient

    from gpuplane.api import create_app
    from gpuplane.client import Client
    from gpuplane.settings import Settings

    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'gpuplane.db'}")
    api = create_app(settings)
    headers = {"Authorization": f"Bearer {api.state.services.bootstrap_admin()}"}
    http = TestClient(api, raise_server_exceptions=False, headers=headers)
    assert http.post("/v1/sites", json={"name": "eu-de-1"}).status_code == 201
    host = {"name": f"api-{scope}", "site": "eu-de-1", "cpu": 64, "memory": "512Gi",
            "gpus": [{"index": i, "model": "H100-80GB", "memory_mib": 81920, "numa": i // 4}
                     for i in range(8)]}
    assert http.post("/v1/hosts", json=host).status_code == 201

    def make_client(url, token):
        client = Client("http://testserver", None)
        client._http = http
        return client

    monkeypatch.setattr(openstack_cli, "make_client", make_client)
    cleanup(placement, marker)
    out = invoke(runner, "openstack", "sync", "--placement-url", placement_url, "--json",
                 "--marker", marker)
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["hosts"] == 1 and report["providers"] == 1 + 2 + 8  # 8 GPUs on 2 NUMA nodes
    root = placement.get_resource_provider(tree.provider_uuid(f"api-{scope}"))
    assert root is not None and root.name == f"api-{scope}"
    assert placement.get_inventories(root.uuid)[1]["VCPU"].total == 64


def test_errors_are_one_line_without_a_traceback(runner, tmp_path):
    bad = tmp_path / "fleet.yaml"
    bad.write_text("kind: Host\nname: BAD NAME\nsite: x\ncpu: 0\nmemory: 1\n")
    out = invoke(runner, "openstack", "check", "--placement-url", "http://127.0.0.1:9",
                 "--fleet", str(bad))
    assert out.exit_code == 2
    assert "documents[0].name" in out.output and "Traceback" not in out.output
    ok = tmp_path / "ok.yaml"
    ok.write_text("kind: Host\nname: h\nsite: x\ncpu: 1\nmemory: 1\n")
    out = invoke(runner, "openstack", "check", "--placement-url", "http://127.0.0.1:9",
                 "--fleet", str(ok))
    assert out.exit_code != 0
    assert "cannot reach Placement at http://127.0.0.1:9" in out.output
    assert "gpuplane.openstack.unreachable" in out.output


def test_the_placement_client_reports_its_traffic(placement_url):
    with PlacementClient(placement_url) as client:
        client.list_resource_classes()
        client.ensure_trait("CUSTOM_GPUPLANE_CLI_PROBE")
        assert (client.reads, client.writes) == (1, 1)
        client.delete_trait("CUSTOM_GPUPLANE_CLI_PROBE")
        assert client.writes == 2


def test_cleanup_of_a_marker_leaves_nothing(placement, fleet_docs, marker):
    desired = tree.fleet_tree(fleet_docs, marker=marker)
    PlacementSync(placement, marker=marker).sync(desired)
    report = PlacementSync(placement, marker=marker).sync([])
    assert report.providers == 0 and report.problems == []
    assert placement.list_resource_providers(required=marker) == []
    placement.delete_trait(marker)
