"""The five-minute tour, end to end: `gpuplane up`, apply the quickstart job, logs."""

from __future__ import annotations

import json
import stat
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_quickstart_job_succeeds_on_the_real_host_and_its_logs_are_shown(make_server, db_url):
    srv = make_server(db_url, relative_home=True).start()
    assert httpx.get(f"{srv.url}/healthz").json()["status"] == "ok"
    token_file = srv.home / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert str(token_file) in srv.log.read_text()  # `up` says where the token is

    applied = srv.cli("apply", "-f", "examples/quickstart-job.yaml")
    assert applied.returncode == 0, applied.stderr
    assert "job/hello created" in applied.stdout

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = srv.cli("get", "workload", "hello", "-o", "json")
        assert got.returncode == 0, got.stderr
        wl = json.loads(got.stdout)
        if wl["status"]["phase"] in ("Succeeded", "Failed", "Lost", "Cancelled"):
            break
        time.sleep(0.3)
    assert wl["status"]["phase"] == "Succeeded", wl
    task = wl["status"]["tasks"][0]
    assert task["placement"]["host"] == "e2e-local" and not task["simulated"]

    logs = srv.cli("logs", "hello")
    assert logs.returncode == 0, logs.stderr
    assert "hello from gpuplane" in logs.stdout
    follow = srv.cli("logs", "hello", "-f", timeout=30)  # ended: -f returns at once
    assert "hello from gpuplane" in follow.stdout

    described = srv.cli("describe", "workload", "hello")
    assert described.returncode == 0 and "Started" in described.stdout


def test_the_demo_fleet_is_simulated_and_the_dashboard_is_served(make_server):
    srv = make_server().start()
    with srv.client() as c:
        hosts = c.get("/v1/hosts", params={"limit": 500}).json()["items"]
    sim = [h for h in hosts if h["simulated"]]
    real = [h for h in hosts if not h["simulated"]]
    assert len(sim) == 20 and {h["jurisdiction"] for h in sim} == {"EU/DE", "EU/FR", "CH"}
    assert [h["name"] for h in real] == ["e2e-local"]
    page = httpx.get(f"{srv.url}/")
    assert page.status_code == 200 and "/ui/console/main.js" in page.text
    assert "cdn" not in page.text.lower()
    assert httpx.get(f"{srv.url}/ui/console/main.js").status_code == 200
    top = srv.cli("top")
    assert top.returncode == 0 and "GPUs allocated" in top.stdout


BAD = {
    "malformed YAML": ("kind: Job\nname: x\n tasks: [\n", "line 3"),
    "unknown field": ("kind: Job\nname: x\ntasks:\n  - command: [echo]\n    colour: red\n",
                      "tasks[0].colour"),
    "negative amount": ("kind: Job\nname: x\ntasks:\n  - command: [echo]\n"
                        "    resources: {gpus: -1}\n", "tasks[0].resources.gpus"),
    "absurd amount": ("kind: Job\nname: x\ntasks:\n  - command: [echo]\n"
                      "    resources: {cpu: 1000000}\n", "tasks[0].resources.cpu"),
    "unknown GPU model": ("kind: Job\nname: x\ntasks:\n  - command: [echo]\n"
                          "    resources: {gpus: 1, gpu_models: [H100-80G]}\n",
                          "tasks[0].resources.gpu_models[0]"),
    "unknown kind": ("kind: Bogus\nname: x\n", "documents[0].kind"),
}


def test_bad_input_is_named_by_field_without_a_traceback(make_server, tmp_path):
    srv = make_server(args=("--no-demo",)).start()
    for case, (text, field) in BAD.items():
        path = tmp_path / f"{case.replace(' ', '-')}.yaml"
        path.write_text(text)
        res = srv.cli("apply", "-f", str(path))
        assert res.returncode != 0, case
        assert field in res.stderr, (case, res.stderr)
        assert "Traceback" not in res.stderr + res.stdout, case
    for args in (("get", "nothing"), ("logs", "no-such-workload"), ("describe", "host", "nope")):
        res = srv.cli(*args)
        assert res.returncode != 0 and res.stderr.startswith("error: "), args
        assert "Traceback" not in res.stderr
