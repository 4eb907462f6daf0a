"""Bad input gets problem+json naming the field; never a 5xx, never a traceback."""

from __future__ import annotations

import base64

import pytest


def _problem(resp, status, code):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["code"] == code and body["status"] == status
    assert body["type"] == f"urn:gpuplane:problem:{code}"
    assert "Traceback" not in resp.text
    return body


def _locs(body):
    return {e["loc"] for e in body["errors"]}


def _submit(world, body, user="alice-alpha", **kw):
    return world.client.post("/v1/workloads", json=body, headers=world.h(user), **kw)


def wl(**kw):
    body = {"name": "bad", "project": "proj-alpha", "tasks": [{"command": ["true"]}]}
    body.update(kw)
    return body


def test_unknown_fields_are_rejected_with_their_path(world):
    body = wl(tasks=[{"command": ["true"], "resources": {"gpu": 1}}], colour="blue")
    p = _problem(_submit(world, body), 422, "gpuplane.input.invalid")
    assert _locs(p) == {"tasks[0].resources.gpu", "colour"}
    assert all("unknown field" in e["msg"] for e in p["errors"])


@pytest.mark.parametrize(("resources", "loc"), [
    ({"gpus": -1}, "tasks[0].resources.gpus"),
    ({"gpus": 100000}, "tasks[0].resources.gpus"),
    ({"cpu": 0}, "tasks[0].resources.cpu"),
    ({"cpu": 1e12}, "tasks[0].resources.cpu"),
    ({"memory": "12 parsecs"}, "tasks[0].resources.memory"),
    ({"memory": -5}, "tasks[0].resources.memory"),
    ({"gpus": 2, "gpu_milli": 500}, "tasks[0].resources"),
    ({"gpus": 1, "mig_profile": "9g.999gb"}, "tasks[0].resources.mig_profile"),
], ids=["negative gpus", "absurd gpus", "zero cpu", "absurd cpu", "unreadable memory",
        "negative memory", "share of several gpus", "no such mig profile"])
def test_negative_or_absurd_amounts_name_the_field(world, resources, loc):
    body = wl(tasks=[{"command": ["true"], "resources": resources}])
    p = _problem(_submit(world, body), 422, "gpuplane.input.invalid")
    assert loc in _locs(p), p


def test_absurd_replica_counts_and_names(world):
    p = _problem(_submit(world, wl(tasks=[{"replicas": 10**6}])), 422, "gpuplane.input.invalid")
    assert _locs(p) == {"tasks[0].replicas"}
    p = _problem(_submit(world, wl(name="Not A Name!")), 422, "gpuplane.input.invalid")
    assert _locs(p) == {"name"}


@pytest.mark.parametrize(("group", "loc", "words"), [
    ({"command": ["echo", "a\x00b"]}, "tasks[0].command", "U+0000"),
    ({"args": ["\x1b[2J"]}, "tasks[0].args", "U+001B"),
    ({"env": {"X": "a\x00b"}}, "tasks[0].env", "U+0000"),
    ({"selector": {"k": "a\nb"}}, "tasks[0].selector", "U+000A"),
    ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "tasks[0].env", "reserved"),
    ({"env": {"PATH": "/tmp"}}, "tasks[0].env", "reserved"),
    ({"env": {"GPUPLANE_HOME": "/"}}, "tasks[0].env", "reserved"),
    ({"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "tasks[0].env", "reserved"),
    ({"env": {"CUDA_VISIBLE_DEVICES": "0"}}, "tasks[0].env", "reserved"),
    ({"env": {"A=B": "x"}}, "tasks[0].env", "not an environment variable name"),
    ({"tolerations": [{"key": "gpuplane.io/unschedulable"}]}, "tasks[0].tolerations[0].key",
     "cannot be tolerated"),
], ids=["nul in command", "escape in args", "nul in env value", "newline in selector",
        "LD_PRELOAD", "PATH", "GPUPLANE_*", "NVIDIA_*", "CUDA_VISIBLE_DEVICES", "not a name",
        "reserved taint"])
def test_control_characters_and_runtime_env_names_are_refused(world, group, loc, words):
    p = _problem(_submit(world, wl(tasks=[{"command": ["true"], **group}])), 422,
                 "gpuplane.input.invalid")
    assert _locs(p) == {loc} and words in p["errors"][0]["msg"], p


def test_reserved_labels_and_unbounded_integers(world):
    c, A = world.client, world.h("admin")
    p = _problem(_submit(world, wl(labels={"gpuplane.io/in.CH": "true"})), 422,
                 "gpuplane.input.invalid")
    assert _locs(p) == {"labels"} and "set by gpuplane" in p["errors"][0]["msg"]
    p = _problem(c.put("/v1/quotas", headers=A, json={
        "project": "proj-alpha", "resource": "gpu", "guaranteed": 1, "generation": 2**64}),
        422, "gpuplane.input.invalid")
    assert _locs(p) == {"generation"}
    p = _problem(_submit(world, wl(tasks=[{"resources": {"memory": 10**400}}])), 422,
                 "gpuplane.input.invalid")
    assert _locs(p) == {"tasks[0].resources.memory"}


def test_unknown_gpu_model_names_the_field(world):
    body = wl(tasks=[{"resources": {"gpus": 1, "gpu_models": ["H100-80G"]}}])
    p = _problem(_submit(world, body), 422, "gpuplane.workload.unsatisfiable")
    (e,) = p["errors"]
    assert e["loc"] == "tasks[0].resources.gpu_models[0]" and "H100-80GB" in e["msg"]


def test_malformed_json_and_yaml_bodies(world):
    for raw in (b"{not json", b"name: job\ntasks:\n  - command: [true]\n"):
        p = _problem(world.client.post("/v1/workloads", content=raw, headers={
            **world.h("alice-alpha"), "content-type": "application/json"}),
            400, "gpuplane.input.malformed")
        assert _locs(p) == {"body"} and "YAML is read by the CLI" in p["detail"]


def test_oversized_bodies_are_refused_before_parsing(world):
    big = wl(labels={f"k{i}": "v" * 200 for i in range(400)})  # ~90 kB > 64 KiB limit
    p = _problem(_submit(world, big), 413, "gpuplane.request.too_large")
    assert _locs(p) == {"body"}

    def chunks():
        for _ in range(100):
            yield b" " * 1024

    resp = world.client.post("/v1/workloads", content=chunks(), headers={
        **world.h("alice-alpha"), "content-type": "application/json"})
    _problem(resp, 413, "gpuplane.request.too_large")


def test_wrong_types_in_query_and_path(world):
    c, A = world.client, world.h("admin")
    p = _problem(c.get("/v1/workloads?limit=0", headers=A), 422, "gpuplane.input.invalid")
    assert _locs(p) == {"query.limit"}
    p = _problem(c.get("/v1/workloads?cursor=garbage!", headers=A), 422,
                 "gpuplane.input.invalid")
    assert _locs(p) == {"query.cursor"}
    beyond = base64.urlsafe_b64encode(f"v1:{2**64}".encode()).decode()
    p = _problem(c.get(f"/v1/workloads?cursor={beyond}", headers=A), 422,
                 "gpuplane.input.invalid")
    assert _locs(p) == {"query.cursor"}
    p = _problem(c.get("/v1/quotas/abc", headers=A), 422, "gpuplane.input.invalid")
    assert _locs(p) == {"path.quota_id"}
    _problem(c.get("/v1/nothing-here", headers=A), 404, "gpuplane.route.not_found")
    _problem(c.put("/v1/workloads", headers=A, json={}), 405, "gpuplane.method.not_allowed")


def test_conflicts_are_409_with_stable_codes(world):
    c = world.client
    _problem(_submit(world, wl(name="job-alpha")), 409, "gpuplane.workload.exists")
    wid = world.ids["workload"]
    _problem(c.delete(f"/v1/workloads/{wid}", headers=world.h("alice-alpha")), 409,
             "gpuplane.workload.active")
    quota = c.get(f"/v1/quotas/{world.ids['quota']}", headers=world.h("admin")).json()
    body = {"project": "proj-alpha", "resource": "gpu", "guaranteed": 5,
            "generation": quota["generation"]}
    assert c.put("/v1/quotas", json=body, headers=world.h("admin")).status_code == 200
    _problem(c.put("/v1/quotas", json=body, headers=world.h("admin")), 409,
             "gpuplane.generation.conflict")


def test_pagination_pages_through_everything(world):
    c, A = world.client, world.h("alice-alpha")
    for i in range(5):
        assert _submit(world, wl(name=f"p{i}")).status_code == 201
    names, cursor = [], None
    while True:
        q = "/v1/workloads?project=proj-alpha&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = c.get(q, headers=A).json()
        names += [w["name"] for w in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert names == ["job-alpha", "p0", "p1", "p2", "p3", "p4"]


def test_logs_are_paged_by_offset(world):
    c, wid = world.client, world.ids["workload"]
    r = c.get(f"/v1/workloads/{wid}/logs?offset=6&limit=3", headers=world.h("alice-alpha"))
    assert r.text == "sec" and r.headers["x-gpuplane-next-offset"] == "9"
    r = c.get(f"/v1/workloads/{wid}/logs?task=5", headers=world.h("alice-alpha"))
    assert _locs(_problem(r, 422, "gpuplane.input.invalid")) == {"task"}


def test_health_needs_no_token_and_metrics_show_a_tenant_only_its_own(world):
    c = world.client
    assert c.get("/healthz").json()["database"] is True
    assert c.get("/openapi.json").json()["components"]["schemas"]["Problem"]
    _problem(c.get("/metrics"), 401, "gpuplane.auth.unauthenticated")
    full = c.get("/metrics", headers=world.h("admin")).text
    assert 'gpuplane_workloads{phase="Pending"} 2.0' in full
    assert "gpuplane_http_requests_total" in full
    assert 'project="proj-alpha"' in full  # proj-alpha has a quota (series), proj-beta none
    alice = c.get("/metrics", headers=world.h("alice-alpha")).text
    assert 'organisation="org-alpha",project="proj-alpha"} 4.0' in alice
    bob = c.get("/metrics", headers=world.h("bob-beta")).text
    assert "alpha" not in bob  # no name of the other tenant, in any series
    assert "gpuplane_gpu_capacity" in bob and "gpuplane_tenant_used_gpus" in bob  # HELP, pool


def test_gpu_list_shows_allocation_without_tenants(world):
    c = world.client
    items = c.get("/v1/gpus", headers=world.h("bob-beta")).json()["items"]
    assert len(items) == 8 and {i["model"] for i in items} == {"H100-80GB"}
    assert all(i["allocated"] == 0 and i["host"] == "gpu-1" for i in items)
    assert c.get("/v1/gpus?model=A100", headers=world.h("bob-beta")).json()["items"] == []


def test_priority_class_rename_through_put_is_refused(world):
    r = world.client.put("/v1/priority-classes/standard", headers=world.h("admin"),
                         json={"name": "other", "value": 3})
    assert _locs(_problem(r, 422, "gpuplane.input.invalid")) == {"name"}


def test_follow_streams_until_the_log_is_complete(world):
    wid = world.ids["workload"]
    r = world.client.get(f"/v1/workloads/{wid}/logs?follow=true&limit=4",
                         headers=world.h("alice-alpha"))
    assert r.status_code == 200 and r.text == "alpha-secret\n"
