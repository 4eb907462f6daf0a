""""Did you mean" against the real app (the CLI's client talks to it in-process): misspelled
fields of a YAML document (named by the API's problem details), GPU models, priority classes,
jurisdictions, projects and objects named on the command line each get the nearest real value
and the `gpuplane` command that lists them, never a name of another tenant; and `gpuplane
explain` lists the fields."""

from __future__ import annotations

import pytest

from gpuplane.cli import explain, resources
from gpuplane.domain.errors import nearest_name

from api.conftest import build_world
from cli.inprocess import in_process_cli

JOB = """kind: Job
name: typo
project: {project}
tasks:
  - command: [echo, hi]
    resources: {resources}
"""


@pytest.fixture
def cli(tmp_path, monkeypatch):
    world = build_world(f"sqlite:///{tmp_path / 'gpuplane.db'}", tmp_path)

    invoke = in_process_cli(monkeypatch, world.client.app, world.tokens, (resources, explain))

    def apply(user, text):
        f = tmp_path / "doc.yaml"
        f.write_text(text)
        return invoke(user, "apply", "-f", str(f))
    invoke.apply = apply
    invoke.world = world
    yield invoke
    world.client.close()
    world.client.app.state.store.dispose()


@pytest.mark.parametrize(("value", "choices", "meant"), [
    ("gpus_per_tsk", ["cpu", "memory", "gpus", "gpu_milli", "mig_profile", "gpu_models"], "gpus"),
    ("visoin", ["vision", "nlp", "default"], "vision"),
    ("H100-80G", ["H100-80GB", "A100-40GB"], "H100-80GB"),
    ("Vision", ["vision", "nlp"], "vision"),
    ("colour", ["name", "replicas", "resources", "command"], None),
], ids=["a misspelled field with a suffix", "swapped letters", "a missing letter",
        "another case", "nothing near"])
def test_the_nearest_name_is_the_one_meant(value, choices, meant):
    assert nearest_name(value, choices) == meant


def test_a_misspelled_field_names_the_nearest_real_one_and_explain(cli):
    res = cli.apply("alice-alpha", JOB.format(project="proj-alpha",
                                              resources="{gpus_per_tsk: 1}"))
    assert res.exit_code == 2
    assert ("tasks[0].resources.gpus_per_tsk: unknown field 'gpus_per_tsk'; did you mean "
            "'gpus'? (list them: gpuplane explain workload.tasks.resources)") in res.output
    far = cli.apply("alice-alpha", JOB.format(project="proj-alpha", resources="{}")
                    .replace("tasks:", "colour: red\ntasks:"))
    assert "colour: unknown field 'colour'; fields here: name, project, kind, tasks" \
        in far.output and "gpuplane explain workload)" in far.output


def test_the_api_problem_names_the_field_and_the_nearest_one(cli):
    w = cli.world
    r = w.client.post("/v1/workloads", headers=w.h("alice-alpha"), json={
        "name": "x", "project": "proj-alpha",
        "tasks": [{"command": ["true"], "replica": 2}]})
    assert r.status_code == 422
    [err] = r.json()["errors"]
    assert err["loc"] == "tasks[0].replica"
    assert err["msg"].startswith("unknown field 'replica'; did you mean 'replicas'?")
    # a free-form mapping takes any key: no suggestion is made up for it
    r = w.client.put("/v1/quotas", headers=w.h("admin"), json={
        "project": "proj-alpha", "resource": "gpu", "guaranteed": 1, "gaurantee": 2})
    assert r.json()["errors"][0]["msg"].startswith("unknown field 'gaurantee'; did you mean "
                                                   "'guaranteed'? (list them: gpuplane "
                                                   "explain quota)")


def test_an_unknown_project_names_the_nearest_visible_one(cli):
    res = cli.apply("alice-alpha", JOB.format(project="proj-alpah", resources="{gpus: 1}"))
    assert res.exit_code == 2
    assert ("unknown project 'proj-alpah'; did you mean 'proj-alpha'? (list them: gpuplane "
            "get projects)") in res.output
    # bob (org-beta) cannot see proj-alpha: never suggested to him
    other = cli.apply("bob-beta", JOB.format(project="proj-alph", resources="{gpus: 1}"))
    assert "unknown project 'proj-alph'" in other.output and "proj-alpha" not in other.output
    described = cli("alice-alpha", "describe", "project", "proj-alpah")
    assert described.exit_code == 4 and "did you mean 'proj-alpha'?" in described.output
    listed = cli("alice-alpha", "get", "workloads", "-p", "proj-alpah")
    assert "did you mean 'proj-alpha'? (list them: gpuplane get projects)" in listed.output


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("resources", "{gpus: 1, gpu_models: [H100-80G]}",
     "tasks[0].resources.gpu_models[0]: unknown GPU model 'H100-80G'; did you mean "
     "'H100-80GB'? (list them: gpuplane get gpus)"),
    ("priority_class", "standrd",
     "priority_class: unknown priority class 'standrd'; did you mean 'standard'? (list them: "
     "gpuplane get priorityclasses)"),
    ("residency", "{jurisdictions: [EU/DF]}",
     "residency.jurisdictions[0]: unknown jurisdiction 'EU/DF'; did you mean 'EU/DE'? (list "
     "them: gpuplane get sites)"),
], ids=["a GPU model", "a priority class", "a jurisdiction"])
def test_unknown_names_in_a_document_get_the_nearest_and_the_command(cli, field, value,
                                                                     expected):
    doc = JOB.format(project="proj-alpha", resources="{gpus: 1}")
    if field == "resources":
        doc = JOB.format(project="proj-alpha", resources=value)
    else:
        doc = doc.replace("tasks:", f"{field}: {value}\ntasks:")
    res = cli.apply("alice-alpha", doc)
    assert res.exit_code == 2 and expected in res.output, res.output


def test_objects_named_on_the_command_line_get_the_nearest_one(cli):
    res = cli("alice-alpha", "describe", "workload", "job-alpah", "-p", "proj-alpha")
    assert res.exit_code == 4
    assert ("unknown workload 'job-alpah'; did you mean 'job-alpha'? (list them: gpuplane get "
            "workloads -p proj-alpha)") in res.output
    host = cli("admin", "get", "gpus", "gpu-2")
    assert "unknown host 'gpu-2'; did you mean 'gpu-1'? (list them: gpuplane get hosts)" \
        in host.output
    site = cli("admin", "delete", "site", "eu-de-2")
    assert site.exit_code == 4 and "did you mean 'eu-de-1'?" in site.output
    assert "Traceback" not in res.output + host.output + site.output


def test_explain_lists_the_fields_of_a_kind_and_of_a_field(cli):
    res = cli("alice-alpha", "explain", "workload.tasks.resources")
    assert res.exit_code == 0, res.output
    for field in ("cpu", "memory", "gpus", "gpu_milli", "mig_profile", "gpu_models"):
        assert f"\n{field} " in res.output
    job = cli("alice-alpha", "explain", "job")
    assert "tasks" in job.output and "[]TaskGroup" in job.output
    typo = cli("alice-alpha", "explain", "workload.tasks.resourcs")
    assert typo.exit_code == 2 and "did you mean 'resources'?" in typo.output
    kind = cli("alice-alpha", "explain", "worklaod")
    assert kind.exit_code == 2 and "did you mean 'workload'?" in kind.output
