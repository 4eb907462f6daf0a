"""Red-team: the edge. Every attacker role of tenant B tries, on both databases:

- control characters (NUL first) in commands, args, env, names, labels, selectors, tolerations
  and every other string a request carries, bodies and query strings alike: 422, naming the
  field (never a 201 that would stall the control loop, never a 500 from the database);
- environment names the runtime owns (PATH, LD_*, GPUPLANE_*, NVIDIA_*, CUDA_VISIBLE_DEVICES)
  and names that are not environment names: 422 with the reason;
- reserved ``gpuplane.io/`` labels and taints on its workloads and on hosts and sites (only
  gpuplane and global admins may set them; a global operator may not);
- integers beyond 64 bits (and below zero) in every integer path, query and body parameter of
  the OpenAPI document, and in list cursors: 422, never 500;
- reading events, pending reasons, workloads and audit entries after a workload of tenant A
  preempted one of B's: nothing names A's objects (every name of A contains "alpha");
- security headers on every answer; /docs and the dashboard load nothing from elsewhere;
- the modes of gpuplane's state in its home folder (0700 folders, 0600 files).
"""

from __future__ import annotations

import base64
import os
import re
import stat
import tempfile


from api.conftest import _ok
from gpuplane.api import create_app
from gpuplane.control.embedded import secure_home
from gpuplane.control.loop import ControlLoop
from gpuplane.drivers.sim import SimDriver
from gpuplane.settings import Settings
from security.conftest import ATTACKER_NAMES, assert_no_leak

MEMBER = "mal-member"


def _wl(name: str = "edge", labels: dict | None = None, **group) -> dict:
    return {"name": name, "project": "proj-beta", "labels": labels or {},
            "tasks": [{"command": ["true"], **group}]}


def _refused_422(resp, loc: str | None = None) -> dict:
    assert resp.status_code == 422, (resp.status_code, resp.text)
    body = resp.json()
    assert body["code"] == "gpuplane.input.invalid", body
    if loc is not None:
        locs = [e["loc"] for e in body["errors"]]
        assert any(lc.startswith(loc) for lc in locs), (loc, locs)
    assert_no_leak(resp.text)
    return body


# -- control characters ---------------------------------------------------------------------
CONTROL_WORKLOADS = [
    (_wl(command=["sh", "-c", "echo\x00hi"]), "tasks[0].command"),
    (_wl(command=["sh\r"]), "tasks[0].command"),
    (_wl(args=["ok", "a\x00"]), "tasks[0].args"),
    (_wl(args=["\x1b]0;owned\x07"]), "tasks[0].args"),
    (_wl(args=["\x85"]), "tasks[0].args"),
    (_wl(env={"A": "x\x00y"}), "tasks[0].env"),
    (_wl(env={"A\x00B": "x"}), "tasks[0].env"),
    (_wl(env={"A": "\x7f"}), "tasks[0].env"),
    (_wl(selector={"k": "v\x00"}), "tasks[0].selector"),
    (_wl(selector={"k\n": "v"}), "tasks[0].selector"),
    (_wl(tolerations=[{"key": "k\x00"}]), "tasks[0].tolerations[0].key"),
    (_wl(tolerations=[{"key": "k", "value": "\t"}]), "tasks[0].tolerations[0].value"),
    ({**_wl(), "tasks": [{"name": "ma\x00in"}]}, "tasks[0].name"),
    (_wl(resources={"gpu_models": ["H100-80GB\x00"]}), "tasks[0].resources.gpu_models"),
    ({**_wl(), "name": "edge\x00"}, "name"),
    ({**_wl(), "project": "proj-beta\x00"}, "project"),
    (_wl(labels={"team": "x\x00"}), "labels"),
    (_wl(labels={"te\tam": "x"}), "labels"),
    ({**_wl(), "residency": {"classification": "secret\x00"}}, "residency.classification"),
]

# (method, path, body, field) for the other request bodies.
CONTROL_BODIES = [
    ("POST", "/v1/projects", {"name": "p-edge", "organisation": "org-beta",
                              "display_name": "x\x00"}, "display_name"),
    ("PATCH", "/v1/projects/proj-beta", {"display_name": "\x1b[2J"}, "display_name"),
    ("POST", "/v1/organisations", {"name": "o-edge", "display_name": "\x00"}, "display_name"),
    ("POST", "/v1/users", {"name": "u-edge", "organisation": "org-beta", "email": "a\x00@b"},
     "email"),
    ("POST", "/v1/tokens", {"name": "t\x00"}, "name"),
    ("PUT", "/v1/quotas", {"project": "proj-beta", "resource": "gpu", "guaranteed": 1,
                           "flavor": "H100\x00"}, "flavor"),
    ("POST", "/v1/priority-classes", {"name": "pc-edge", "value": 1,
                                      "description": "\x00"}, "description"),
    ("POST", "/v1/sites", {"name": "s-edge", "region": "eu\x00"}, "region"),
    ("POST", "/v1/sites", {"name": "s-edge", "labels": {"k": "\x00"}}, "labels"),
    ("POST", "/v1/hosts", {"name": "h-edge", "site": "eu-de-1", "cpu": 1, "memory": 1,
                           "rack": "r\x00"}, "rack"),
    ("POST", "/v1/hosts", {"name": "h-edge", "site": "eu-de-1", "cpu": 1, "memory": 1,
                           "taints": [{"key": "k", "value": "\x00"}]}, "taints[0].value"),
    ("POST", "/v1/hosts", {"name": "h-edge", "site": "eu-de-1", "cpu": 1, "memory": 1,
                           "gpus": [{"index": 0, "model": "X", "memory_mib": 1,
                                     "uuid": "GPU-\x00"}]}, "gpus[0].uuid"),
]

CONTROL_QUERIES = [("/v1/audit", "action"), ("/v1/gpus", "model")]


def test_control_characters_are_refused_everywhere(red):
    c = red.client
    for user in ATTACKER_NAMES:
        h = red.h(user)
        for body, loc in CONTROL_WORKLOADS:
            red.attempt("control-characters")
            _refused_422(c.post("/v1/workloads", json=body, headers=h), loc)
        for method, path, body, loc in CONTROL_BODIES:
            red.attempt("control-characters")
            _refused_422(c.request(method, path, json=body, headers=h), loc)
        for path, param in CONTROL_QUERIES:
            red.attempt("control-characters")
            _refused_422(c.get(path, params={param: "x\x00"}, headers=h), f"query.{param}")
    # nothing of it was stored
    items = c.get("/v1/workloads?project=proj-beta", headers=red.h("admin")).json()["items"]
    assert [w["name"] for w in items] == ["job-beta"]


def test_multi_line_scripts_still_work(red):
    """Tab and newline stay allowed in commands, args and env values (a ``sh -c`` script)."""
    r = red.client.post("/v1/workloads", headers=red.h(MEMBER), json=_wl(
        command=["sh", "-c", "set -e\n\techo one\necho two\n"], env={"PEM": "a\nb"}))
    assert r.status_code == 201, r.text


# -- environment names ----------------------------------------------------------------------
FORBIDDEN_ENV = ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GPUPLANE_HOME",
                 "GPUPLANE_RED_TEAM_SECRET", "NVIDIA_VISIBLE_DEVICES",
                 "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES"]
NOT_ENV_NAMES = ["A=B", "1A", "A-B", "A B", "Ä"]


def test_reserved_and_invalid_env_names_are_refused(red):
    c = red.client
    for user in ATTACKER_NAMES:
        for key in FORBIDDEN_ENV + NOT_ENV_NAMES:
            red.attempt("env-names")
            body = _refused_422(c.post("/v1/workloads", headers=red.h(user),
                                       json=_wl(env={"OK": "1", key: "x"})), "tasks[0].env")
            msg = " ".join(e["msg"] for e in body["errors"])
            assert ("reserved" in msg) if key in FORBIDDEN_ENV else (
                "not an environment variable name" in msg), (key, msg)
    # the environment is case-sensitive: these are ordinary names
    r = c.post("/v1/workloads", headers=red.h(MEMBER),
               json=_wl(env={"Path": "x", "ld_preload": "y"}))
    assert r.status_code == 201, r.text


# -- reserved labels ------------------------------------------------------------------------
RESERVED_ON_WORKLOADS = [
    (_wl(labels={"gpuplane.io/in.CH": "true"}), "labels"),
    (_wl(labels={"gpuplane.io/driver": "local"}), "labels"),
    (_wl(tolerations=[{"key": "gpuplane.io/unschedulable"}]), "tasks[0].tolerations[0].key"),
    (_wl(tolerations=[{"key": "gpuplane.io/quarantined"}]), "tasks[0].tolerations[0].key"),
]
HOST = {"name": "h-claim", "site": "eu-de-1", "cpu": 4, "memory": 1024}


def test_reserved_labels_are_refused_on_workloads(red):
    for user in ATTACKER_NAMES:
        for body, loc in RESERVED_ON_WORKLOADS:
            red.attempt("reserved-labels")
            _refused_422(red.client.post("/v1/workloads", json=body, headers=red.h(user)), loc)
    # the one a workload may carry (read by the simulator), and selecting by them is fine
    r = red.client.post("/v1/workloads", headers=red.h(MEMBER), json=_wl(
        labels={"gpuplane.io/sim-duration-s": "5"}, selector={"gpuplane.io/in.EU": "true"}))
    assert r.status_code == 201, r.text


def test_reserved_labels_on_hosts_and_sites_need_a_global_admin(red):
    c, A = red.client, red.h("admin")
    claims = [("POST", "/v1/hosts", {**HOST, "labels": {"gpuplane.io/in.CH": "true"}}),
              ("POST", "/v1/hosts", {**HOST, "taints": [{"key": "gpuplane.io/x"}]}),
              ("POST", "/v1/sites", {"name": "s-claim", "labels": {"gpuplane.io/in.CH": "1"}}),
              ("PUT", "/v1/hosts/gpu-1", {"name": "gpu-1", "site": "eu-de-1", "cpu": 64,
                                          "memory": "512Gi",
                                          "labels": {"gpuplane.io/in.CH": "true"}})]
    for user in ATTACKER_NAMES:
        for method, path, body in claims:
            red.attempt("reserved-labels")
            r = c.request(method, path, json=body, headers=red.h(user))
            assert r.status_code in (403, 404), (user, path, r.text)
            assert_no_leak(r.text)
    # a global operator may register hosts, but not with reserved keys
    _ok(c.post("/v1/users", json={"name": "ops-global"}, headers=A))
    _ok(c.post("/v1/role-bindings", headers=A, json={"user": "ops-global", "role": "operator",
                                                    "scope": "global"}))
    ops = {"Authorization": "Bearer " + _ok(c.post(
        "/v1/tokens", json={"user": "ops-global"}, headers=A))["token"]}
    for method, path, body in claims:
        red.attempt("reserved-labels")
        r = c.request(method, path, json=body, headers=ops)
        assert r.status_code == 403, (path, r.text)
        if path == "/v1/sites":  # sites carry the jurisdiction: a global admin's alone
            assert "needs a global admin role" in r.json()["detail"]
            continue
        assert "gpuplane.io/" in r.json()["detail"] and "reserved" in r.json()["detail"]
    _ok(c.post("/v1/hosts", json={**HOST, "labels": {"rack-row": "3"}}, headers=ops))
    # a global admin may; an operator may then resend the host unchanged
    host = {**HOST, "name": "h-admin", "labels": {"gpuplane.io/in.CH": "true"}}
    _ok(c.post("/v1/hosts", json=host, headers=A))
    _ok(c.put("/v1/hosts/h-admin", json={**host, "cpu": 8}, headers=ops))
    r = c.put("/v1/hosts/h-admin", json={**host, "labels": {"gpuplane.io/in.US": "true"}},
              headers=ops)
    assert r.status_code == 403, r.text


# -- integers beyond 64 bits ----------------------------------------------------------------
HUGE = (2**64, 10**30, 10**400, -(2**64))


def _openapi() -> dict:
    url = f"sqlite:///{tempfile.gettempdir()}/gpuplane-openapi-unused.db"
    return create_app(Settings(db_url=url), migrate=False).openapi()


DOC = _openapi()
PATH_VALUES = {"workload": "job-beta", "project": "proj-beta", "organisation": "org-beta",
               "user": "mal-member", "site": "eu-de-1", "host": "gpu-1",
               "priority_class": "standard", "name": "swagger-ui.css"}
BODY_BASES = {
    "SiteSpec": {"name": "s-int"}, "HostStateSpec": {"state": "cordoned"},
    "HostSpec": {"name": "gpu-1", "site": "eu-de-1", "cpu": 8, "memory": 1024},
    "OrganisationSpec": {"name": "o-int"}, "ProjectUpdate": {"weight": 2},
    "ProjectSpec": {"name": "p-int", "organisation": "org-beta"},
    "UserSpec": {"name": "u-int", "organisation": "org-beta"},
    "RoleBindingSpec": {"user": "mal-viewer", "role": "viewer", "scope": "project",
                        "scope_name": "proj-beta"},
    "TokenSpec": {"name": "t-int"},
    "QuotaSpec": {"project": "proj-beta", "resource": "gpu", "guaranteed": 1},
    "PriorityClassSpec": {"name": "standard", "value": 1},
    "WorkloadSpec": _wl("w-int"),
    "EvidenceIn": {"kind": "software", "nonce": "00" * 32, "evidence": "e30="},
    "PolicyDocumentIn": {"classifications": {}},
}


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _is_int(schema: dict) -> bool:
    schema = _resolve(schema)
    return schema.get("type") == "integer" or any(_is_int(s) for s in schema.get("anyOf", []))


def _int_paths(schema: dict, path: tuple = ()) -> list[tuple]:
    """Paths (keys and list indices) of every integer field inside a body schema."""
    schema = _resolve(schema)
    if _is_int(schema):
        return [path]
    out: list[tuple] = []
    for alt in schema.get("anyOf", []):
        out += [p for p in _int_paths(alt, path) if p not in out]
    for name, sub in schema.get("properties", {}).items():
        out += _int_paths(sub, (*path, name))
    if schema.get("type") == "array" and "items" in schema:
        out += _int_paths(schema["items"], (*path, 0))
    return out


def _set(body: dict, path: tuple, value: int) -> dict:
    import copy

    out = copy.deepcopy(body)
    node = out
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, list):
            while len(node) <= key:
                node.append({})
            node = node[key]
            continue
        if key not in node or not isinstance(node[key], (dict, list)):
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append(None)
    node[last] = value
    return out


def _loc(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _int_attacks() -> list[tuple[str, str, dict, dict | None, str]]:
    """(method, url, query, body, loc of the huge integer) for every integer parameter."""
    attacks = []
    for path, item in sorted(DOC["paths"].items()):
        if not path.startswith("/v1/"):
            continue
        for method, op in sorted(item.items()):
            params = op.get("parameters", [])
            ref = (op.get("requestBody", {}).get("content", {}).get("application/json", {})
                   .get("schema", {}).get("$ref"))
            body_name = ref.rsplit("/", 1)[1] if ref else None
            base = BODY_BASES.get(body_name) if body_name else None
            if body_name:
                assert base is not None, f"add a base body for {body_name} to BODY_BASES"
            values = {p["name"]: PATH_VALUES.get(p["name"], 1) for p in params
                      if p["in"] == "path"}
            for p in params:
                if not _is_int(p["schema"]):
                    continue
                for v in HUGE:
                    if p["in"] == "path":
                        url = path.format(**{**values, p["name"]: v})
                        attacks.append((method, url, {}, base, f"path.{p['name']}"))
                    elif p["in"] == "query":
                        attacks.append((method, path.format(**values), {p["name"]: v}, base,
                                        f"query.{p['name']}"))
            if base is not None:
                for ipath in _int_paths(ref and {"$ref": ref}):
                    for v in HUGE:
                        attacks.append((method, path.format(**values), {},
                                        _set(base, ipath, v), _loc(ipath)))
    return attacks


INT_ATTACKS = _int_attacks()


def test_the_generated_integer_attacks_cover_the_api():
    locs = {a[4] for a in INT_ATTACKS}
    for expected in ("path.quota_id", "path.token_id", "path.binding_id", "query.limit",
                     "query.offset", "query.task", "query.generation", "generation",
                     "tasks[0].replicas", "tasks[0].resources.gpus", "retries.limit",
                     "gpus[0].index", "value"):
        assert expected in locs, (expected, sorted(locs))


def test_integers_beyond_64_bits_are_422_never_500(red):
    c = red.client
    for user in ATTACKER_NAMES:
        h = red.h(user)
        for method, url, query, body, loc in INT_ATTACKS:
            red.attempt("huge-integers")
            kw = {"json": body} if body is not None else {}
            r = c.request(method, url, params=query, headers=h, **kw)
            assert r.status_code == 422, (user, method, url, query, loc, r.status_code, r.text)
            errors = r.json()["errors"]
            assert any(e["loc"] == loc or e["loc"].startswith(loc + ".") for e in errors), \
                (loc, errors)
            assert_no_leak(r.text)
        for value in ("v1:" + str(2**64), "v1:" + "9" * 400, "v1:-1"):
            red.attempt("huge-integers")
            cursor = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
            r = c.get("/v1/workloads", params={"cursor": cursor}, headers=h)
            assert r.status_code == 422, r.text
            assert [e["loc"] for e in r.json()["errors"]] == ["query.cursor"]


# -- events and reasons name no other tenant ------------------------------------------------
def _preempt_b_for_a(red) -> tuple[str, str]:
    """Tenant B borrows every GPU A lends; A's new work reclaims them. Returns the ids of B's
    preempted workload and A's beneficiary."""
    c, A = red.client, red.h("admin")
    for p in ("proj-alpha", "proj-beta"):
        _ok(c.patch(f"/v1/projects/{p}", json={"cohort": "shared"}, headers=A))
    _ok(c.put("/v1/quotas", json={"project": "proj-beta", "resource": "gpu", "guaranteed": 0},
              headers=A))
    hog = _ok(c.post("/v1/workloads", headers=red.h(MEMBER), json={
        "name": "hog-beta", "project": "proj-beta", "preemptible": True,
        "labels": {"gpuplane.io/sim-duration-s": "36000"},
        "tasks": [{"command": ["true"], "resources": {"gpus": 3}}]}))
    store = c.app.state.store
    loop = ControlLoop(store, {"sim": SimDriver(red.home)}, holder="red", local_host="none",
                       preempt_grace_s=0.0)
    try:
        for _ in range(4):
            loop.tick()
        hog_now = c.get(f"/v1/workloads/{hog['id']}", headers=A).json()
        assert hog_now["status"]["phase"] == "Running", hog_now["status"]
        rush = _ok(c.post("/v1/workloads", headers=red.h("alice-alpha"), json={
            "name": "rush-alpha", "project": "proj-alpha",
            "labels": {"gpuplane.io/sim-duration-s": "36000"},
            "tasks": [{"command": ["true"], "resources": {"gpus": 3}}]}))
        for _ in range(6):
            loop.tick()
    finally:
        loop.release()
    return hog["id"], rush["id"]


def test_events_and_reasons_never_name_another_tenant(red):
    hog, rush = _preempt_b_for_a(red)
    c, A = red.client, red.h("admin")
    # the global admin sees who preempted whom, in full
    full = c.get(f"/v1/workloads/{hog}/events", headers=A).text
    assert "rush-alpha" in full or rush in full, full
    said_other = False
    for user in (*ATTACKER_NAMES, "bob-beta"):
        h = red.h(user)
        reads = [f"/v1/workloads/{hog}", f"/v1/workloads/{hog}/events",
                 f"/v1/workloads/{hog}/pending", "/v1/workloads", "/v1/events",
                 "/v1/events?project=proj-beta", "/v1/audit", "/v1/usage"]
        for path in reads:
            red.attempt("cross-tenant-names")
            r = c.get(path, headers=h)
            assert r.status_code in (200, 403), (user, path, r.text)
            text = r.text.replace("eu-de-1", "")
            assert "alpha" not in text and rush not in text, (user, path, text)
            said_other |= "another project" in text
            assert_no_leak(text)
    assert said_other, "the preemption was not visible to tenant B at all"


# -- headers, docs, dashboard ---------------------------------------------------------------
NON_API_GETS = ["/", "/ui/app.js", "/ui/style.css", "/docs", "/docs/init.js",
                "/docs/assets/swagger-ui.css", "/docs/assets/swagger-ui-bundle.js",
                "/openapi.json", "/no/such/route", "/v1/workloads?limit=0"]


def _every_operation() -> list[tuple[str, str]]:
    """(method, path) of every operation of the OpenAPI document, path parameters filled."""
    out = []
    for path, item in sorted(DOC["paths"].items()):
        for name in re.findall(r"{(\w+)}", path):
            path = path.replace("{" + name + "}", str(PATH_VALUES.get(name, 1)))
        out += [(method.upper(), path) for method in sorted(item)]
    return out


def _assert_headers(r) -> None:
    csp = r.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, r.headers
    assert r.headers.get("x-frame-options") == "DENY"
    assert r.headers.get("x-content-type-options") == "nosniff"
    assert r.headers.get("referrer-policy") == "no-referrer"


def test_every_answer_carries_security_headers(red):
    from gpuplane.web import mount_dashboard

    c = red.client
    mount_dashboard(c.app)
    ops = _every_operation()
    gets = [p for m, p in ops if m == "GET"] + NON_API_GETS
    assert len(ops) > 40
    tries = [(user, "GET", p) for user in ATTACKER_NAMES for p in gets]
    tries += [(None, m, p) for m, p in ops] + [(None, "GET", p) for p in NON_API_GETS]
    for user, method, path in tries:
        red.attempt("security-headers")
        r = c.request(method, path, headers=red.h(user) if user else {})
        assert r.status_code < 500, (method, path, r.text)
        _assert_headers(r)
        if not path.startswith(("/ui/", "/docs/assets/")):
            assert r.headers.get("cache-control") == "no-store", path
    big = c.post("/v1/workloads", content=b"{" + b" " * 200_000, headers={
        **red.h(MEMBER), "content-type": "application/json"})
    assert big.status_code == 413
    _assert_headers(big)


def _refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


def test_docs_and_dashboard_load_nothing_from_elsewhere(red):
    from gpuplane.web import STATIC

    c = red.client
    page = c.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    refs = _refs(page.text)
    assert refs and all(r.startswith("/") and not r.startswith("//") for r in refs), refs
    for ref in refs:
        assert c.get(ref).status_code == 200, ref
    assert "<script>" not in page.text.replace(" ", "")   # no inline script: the CSP holds
    init = c.get("/docs/init.js").text
    assert "http" not in init and "/openapi.json" in init and "validatorUrl: null" in init
    assert c.get("/redoc").status_code == 404
    assert c.get("/docs/assets/index.html").status_code == 404
    dash = (STATIC / "index.html").read_text()
    assert all(r.startswith("/") and not r.startswith("//") for r in _refs(dash))
    assert "<script>" not in dash and "style=" not in dash
    for js in STATIC.rglob("*.js"):
        assert "style=" not in js.read_text(), js   # inline styles break the CSP


# -- file modes -----------------------------------------------------------------------------
def test_secure_home_makes_state_owner_only(tmp_path):
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "local" / "task-1").mkdir(parents=True)
    for f in ("gpuplane.db", "gpuplane.db-wal", "gpuplane.db-shm", "admin-token", "lease.log",
              "logs/wl-1-0.log", "local/task-1/state.json"):
        (home / f).write_text("x")
        os.chmod(home / f, 0o644)
    for d in (home, home / "logs", home / "local", home / "local" / "task-1"):
        os.chmod(d, 0o755)
    os.chmod(home / "local" / "task-1" / "state.json", 0o755)
    assert secure_home(home) == []
    for p in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            assert mode == 0o700, (p, oct(mode))
        else:
            assert mode & 0o077 == 0 and mode & 0o600 == 0o600, (p, oct(mode))
    assert stat.S_IMODE((home / "local" / "task-1" / "state.json").stat().st_mode) == 0o700


def test_secure_home_leaves_a_shared_folder_alone(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    (shared / "other").write_text("x")
    os.chmod(shared / "other", 0o644)
    notes = secure_home(shared)
    assert notes and "shared folder" in notes[0]
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "other").stat().st_mode) == 0o644



def test_reservation_and_victim_references_are_unnamed(red):
    """The other texts that point across tenants: a reservation held for a workload of A, a
    wait for A's tasks to stop (task ids in ``detail.victims``), written as the scheduler
    writes them; B reads them unnamed, A's global admin in full."""
    from gpuplane.domain.workloads import PendingReason

    c, A = red.client, red.h("admin")
    alpha = c.get(f"/v1/workloads/{red.world.ids['workload']}", headers=A).json()
    beta = c.get("/v1/workloads/job-beta?project=proj-beta", headers=A).json()
    alpha_task = c.app.state.store
    with alpha_task.read() as tx:
        task_id = tx.workloads.get(alpha["id"]).tasks[0].id
    reasons = [
        PendingReason("capacity.reserved", f"no host fits; free capacity is reserved for "
                      f"{alpha['id']}, which starts by t=100s", {"reserved_for": alpha["id"]}),
        PendingReason("waiting_for_preemption", "waiting for 1 preempted task(s) to stop",
                      {"victims": [str(task_id)]}),
        PendingReason("quota.over_limit", "project proj-alpha would hold 9 GPUs (see "
                      "proj-alpha/job-alpha)", {}),
    ]
    for reason in reasons:
        with c.app.state.store.write() as tx:
            tx.workloads.set_pending_reason(beta["id"], reason)
        full = c.get(f"/v1/workloads/{beta['id']}/pending", headers=A).text
        assert "alpha" in full or str(task_id) in full
        for user in (*ATTACKER_NAMES, "bob-beta"):
            for path in (f"/v1/workloads/{beta['id']}/pending", f"/v1/workloads/{beta['id']}",
                         "/v1/workloads"):
                red.attempt("cross-tenant-names")
                r = c.get(path, headers=red.h(user))
                assert r.status_code == 200, r.text
                assert "alpha" not in r.text and f'"{task_id}"' not in r.text, (user, r.text)
                assert "another project" in r.text


def test_redaction_of_texts_keeps_own_names_and_free_text():
    """The rules of ``service/redact.py`` on the texts the scheduler and loop write, with a
    caller who sees proj-beta only (proj-alpha exists, gone-proj was deleted)."""
    from gpuplane.domain.errors import NotFound
    from gpuplane.service.authz import Grant, Principal
    from gpuplane.service.redact import Redactor

    class Projects:
        def get(self, name):
            if name not in {"proj-alpha": 1, "proj-beta": 2}:
                raise NotFound("no such project")
            return type("P", (), {"id": {"proj-alpha": 1, "proj-beta": 2}[name]})

        def ids_in_orgs(self, orgs):
            return set()

    class Workloads:
        def project_id_of(self, uid):
            ids = {"wl-aaaaaaaaaaaaaaaa": 1, "wl-bbbbbbbbbbbbbbbb": 2}
            if uid not in ids:
                raise NotFound("no such workload")
            return ids[uid]

    tx = type("Tx", (), {"projects": Projects(), "workloads": Workloads()})()
    beta = Redactor(tx, Principal(7, "mal-member", (Grant("member", "project", 2, 9),)))
    cases = {
        "reclaimed by project proj-alpha for wl-aaaaaaaaaaaaaaaa: proj-beta was borrowing "
        "capacity lent by its cohort (for proj-alpha/rush-alpha)":
            "reclaimed by a workload of another project: proj-beta was borrowing capacity lent "
            "by its cohort (for a workload of another project)",
        "preempted for gone-proj/job-x: exited (reclaimed by project gone-proj for "
        "wl-cccccccccccccccc: proj-beta was borrowing)":
            "preempted for a workload of another project: exited (reclaimed by a workload of "
            "another project: proj-beta was borrowing)",
        "no host fits; free capacity is reserved for wl-aaaaaaaaaaaaaaaa, which starts by t=9s":
            "no host fits; free capacity is reserved for a workload of another project, which "
            "starts by t=9s",
        "preempted by higher-priority wl-bbbbbbbbbbbbbbbb (priority 9 > 1)":
            "preempted by higher-priority wl-bbbbbbbbbbbbbbbb (priority 9 > 1)",
        "the project has 3 tasks; see proj-beta/job, gone/x, /dev/nvidia0, gpuplane.io/in.EU":
            "the project has 3 tasks; see proj-beta/job, gone/x, /dev/nvidia0, gpuplane.io/in.EU",
        "project proj-alpha would hold 9 GPUs": "another project would hold 9 GPUs",
    }
    for raw, want in cases.items():
        assert beta.text(raw) == want, raw
    admin = Redactor(tx, Principal.system())
    assert not admin.active and all(admin.text(raw) == raw for raw in cases)
