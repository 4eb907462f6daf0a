"""Cheap denial of service (issue 7, item 4): bad-token floods and log follow streams.

Deterministic: the clock of the failed-login ledger is the world's FakeClock, and follow streams
are driven through raw ASGI calls whose disconnect the test sends itself, so nothing here
asserts on elapsed time (waits have generous timeouts only so a bug cannot hang the suite).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from gpuplane.api.follow import FollowSlots
from gpuplane.service import Principal
from gpuplane.service.logs import LogChunk
from gpuplane.service.login_failures import AUDIT_EVERY_S

from security.conftest import ATTACKERS, assert_no_leak

BAD = "gpp_" + "x" * 43
WAIT_S = 30.0  # generous bound for a stream to end; never reached unless something is broken


@pytest.fixture(autouse=True)
def no_tarpit(red):
    """Throttled answers are normally delayed (GPUPLANE_AUTH_THROTTLE_DELAY_S, real time);
    these tests count answers, not seconds."""
    app = red.client.app
    base = app.state.settings
    app.state.settings = base.model_copy(update={"auth_throttle_delay_s": 0.0})
    yield
    app.state.settings = base


def _svc(red):
    return red.client.app.state.services


def _clock(red):
    return _svc(red).clock


def _failed_rows(red) -> list:
    entries, _ = _svc(red).audit.list_entries(Principal.system(), None, 100_000,
                                              action="auth.login_failed")
    return entries


def _from(red, host: str) -> TestClient:
    return TestClient(red.client.app, raise_server_exceptions=False, client=(host, 40000))


# -- failed authentication: throttle ---------------------------------------------------------

def test_bad_tokens_are_throttled_per_source(red):
    limit = red.client.app.state.settings.auth_fail_limit
    attacker = _from(red, "203.0.113.7")
    for _ in range(limit):
        r = attacker.get("/v1/whoami", headers={"Authorization": f"Bearer {BAD}"})
        red.attempt("auth.brute_force")
        assert r.status_code == 401, r.text
    r = attacker.get("/v1/whoami", headers={"Authorization": f"Bearer {BAD}"})
    red.attempt("auth.brute_force")
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "gpuplane.auth.throttled"
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= math.ceil(red.client.app.state.settings.auth_fail_window_s)
    assert_no_leak(r.text, r.headers)
    # the throttled source is refused before its token is looked at: valid tokens too
    for user, *_ in ATTACKERS:
        r = attacker.get("/v1/whoami", headers=red.h(user))
        red.attempt("auth.brute_force")
        assert r.status_code == 429, r.text
    # every other source, and the victim tenant, are not affected
    other = _from(red, "198.51.100.4")
    assert other.get("/v1/whoami", headers=red.h("alice-alpha")).status_code == 200
    r = other.post("/v1/workloads", headers=red.h("alice-alpha"), json={
        "name": "still-works", "project": "proj-alpha", "tasks": [{"command": ["true"]}]})
    assert r.status_code == 201, r.text
    assert red.client.get("/v1/whoami", headers=red.h("alice-alpha")).status_code == 200
    # after Retry-After the source may try again
    _clock(red).advance(retry)
    assert attacker.get("/v1/whoami", headers=red.h("mal-viewer")).status_code == 200


def test_ipv6_sources_are_throttled_by_their_64(red):
    limit = red.client.app.state.settings.auth_fail_limit
    for i in range(limit):
        r = _from(red, f"2001:db8:1:2::{i + 1:x}").get(
            "/v1/whoami", headers={"Authorization": f"Bearer {BAD}"})
        red.attempt("auth.brute_force")
        assert r.status_code == 401
    r = _from(red, "2001:db8:1:2:ffff::1").get("/v1/whoami",
                                                headers={"Authorization": f"Bearer {BAD}"})
    red.attempt("auth.brute_force")
    assert r.status_code == 429
    assert _from(red, "2001:db8:1:3::1").get("/v1/whoami",
                                             headers=red.h("mal-viewer")).status_code == 200


def test_x_forwarded_for_is_not_believed(red):
    limit = red.client.app.state.settings.auth_fail_limit
    attacker = _from(red, "203.0.113.9")
    for i in range(limit + 5):
        r = attacker.get("/v1/whoami", headers={"Authorization": f"Bearer {BAD}",
                                                "X-Forwarded-For": f"10.1.{i}.1"})
        red.attempt("auth.brute_force")
    assert r.status_code == 429


# -- failed authentication: aggregated audit --------------------------------------------------

@pytest.mark.parametrize("sources", [1, 5])
def test_a_flood_adds_at_most_one_audit_row_per_source_per_minute(red, sources):
    clock, svc = _clock(red), _svc(red)
    clients = [_from(red, f"192.0.2.{k + 10}") for k in range(sources)]
    before = len(_failed_rows(red))
    start = clock()
    burst, step = 500, 0.5
    statuses = set()
    for i in range(burst):
        r = clients[i % sources].get("/v1/workloads",
                                     headers={"Authorization": f"Bearer gpp_bad{i}"})
        red.attempt("auth.flood")
        statuses.add(r.status_code)
        assert_no_leak(r.text)
        if i % 25 == 0:
            svc.auth.flush_failed_logins()  # what the periodic flusher does
        clock.advance(step)
    assert statuses == {401, 429}
    minutes = math.floor((clock() - start) / AUDIT_EVERY_S) + 1
    during = len(_failed_rows(red)) - before
    assert during <= sources * minutes, (during, sources, minutes)
    svc.auth.flush_failed_logins(everything=True)  # shutdown
    rows = _failed_rows(red)[before:]
    assert len(rows) <= sources * (minutes + 1)
    # every refused attempt is in the audit, in aggregate (DESIGN invariant 6)
    assert sum(e.detail["count"] for e in rows) == burst
    assert {e.detail["source"] for e in rows} == {f"192.0.2.{k + 10}" for k in range(sources)}
    for e in rows:
        assert e.outcome == "denied" and e.object_kind == "source"
        assert sum(e.detail["reasons"].values()) == e.detail["count"]
        assert e.detail["window_start"] <= e.detail["window_end"]
        assert "gpp_bad" not in str(e.detail)  # never the token itself
    # per source: rows at least a minute apart
    for k in range(sources):
        ats = [e.at for e in rows if e.detail["source"] == f"192.0.2.{k + 10}"][:-1]
        assert all(b - a >= AUDIT_EVERY_S for a, b in zip(ats, ats[1:], strict=False))
    assert svc.auth.failures.pending() == 0
    assert svc.audit.verify(Principal.system()) == []


def test_a_single_failure_is_audited_at_once(red):
    before = len(_failed_rows(red))
    r = _from(red, "192.0.2.99").get("/v1/whoami", headers={"Authorization": f"Bearer {BAD}"})
    red.attempt("auth.brute_force")
    assert r.status_code == 401
    rows = _failed_rows(red)[before:]
    assert len(rows) == 1
    assert rows[0].detail["count"] == 1 and rows[0].detail["source"] == "192.0.2.99"
    assert rows[0].detail["reasons"] == {"unknown token": 1}


def test_revoked_token_failures_name_the_user(red):
    svc, admin = _svc(red), red.h("admin")
    tid = red.world.ids["token:mal-member"]
    assert red.client.delete(f"/v1/tokens/{tid}", headers=admin).status_code in (200, 204)
    before = len(_failed_rows(red))
    c = _from(red, "192.0.2.77")
    for _ in range(3):
        assert c.get("/v1/whoami", headers=red.h("mal-member")).status_code == 401
        red.attempt("auth.revoked_token")
    svc.auth.flush_failed_logins(everything=True)
    rows = _failed_rows(red)[before:]
    assert sum(e.detail["count"] for e in rows) == 3
    assert all(e.detail.get("users") == ["mal-member"] for e in rows)


# -- log follow streams -----------------------------------------------------------------------

@dataclass
class Stream:
    status: int
    task: asyncio.Task
    disconnect: asyncio.Event
    body: bytearray = field(default_factory=bytearray)
    headers: dict = field(default_factory=dict)


async def _open(app, path: str, query: str, headers: dict, *, spec: str = "2.3",
                client=("203.0.113.50", 50000)) -> Stream:
    """Start one GET through the ASGI app; returns once the response has started."""
    disconnect = asyncio.Event()
    started: asyncio.Future = asyncio.get_running_loop().create_future()
    stream: dict = {"body": bytearray(), "headers": {}}
    asked = False

    async def receive() -> dict:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            stream["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
            if not started.done():
                started.set_result(message["status"])
        elif message["type"] == "http.response.body":
            stream["body"] += message.get("body", b"")

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec},
             "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"testserver"), *raw], "client": client,
             "server": ("testserver", 80)}
    task = asyncio.create_task(app(scope, receive, send))
    done, _ = await asyncio.wait({task, started}, timeout=WAIT_S,
                                 return_when=asyncio.FIRST_COMPLETED)
    assert started.done(), "the response never started"
    s = Stream(started.result(), task, disconnect, stream["body"], stream["headers"])
    if s.status != 200:
        await asyncio.wait_for(task, WAIT_S)
    return s


async def _close(s: Stream) -> None:
    s.disconnect.set()
    await asyncio.wait_for(s.task, WAIT_S)


@pytest.fixture
def beta_log(red, monkeypatch):
    """job-beta (tenant B's own workload) with a log that never completes, so follow
    streams stay open until closed or timed out."""
    r = red.client.get("/v1/workloads/job-beta", headers=red.h("bob-beta"),
                       params={"project": "proj-beta"})
    wid = r.json()["id"]
    red.world.logs.logs[(wid, 0)] = b"beta log line\n"
    original = red.world.logs.read_log

    def endless(ref, offset, limit):  # noqa: ANN001, ANN202
        chunk = original(ref, offset, limit)
        return None if chunk is None else LogChunk(chunk.data, chunk.next_offset, complete=False)

    monkeypatch.setattr(red.world.logs, "read_log", endless)
    return wid


def _path(wid: str) -> str:
    return f"/v1/workloads/{wid}/logs"


def test_follow_streams_over_the_per_user_limit_get_429_for_every_role(red, beta_log):
    app = red.client.app
    slots: FollowSlots = app.state.log_follow
    per_user = app.state.settings.log_follow_per_user

    async def scenario() -> None:
        opened: list[Stream] = []
        for user, role, _scope, _name in ATTACKERS:
            h = red.h(user)
            if role == "auditor":  # may not read logs at all
                s = await _open(app, _path(beta_log), "follow=true", h)
                red.attempt("logs.follow_flood")
                assert s.status == 403
                continue
            for _ in range(per_user):
                s = await _open(app, _path(beta_log), "follow=true", h)
                red.attempt("logs.follow_flood")
                assert s.status == 200, bytes(s.body)
                opened.append(s)
            for _ in range(3):
                s = await _open(app, _path(beta_log), "follow=true", h)
                red.attempt("logs.follow_flood")
                assert s.status == 429, bytes(s.body)
                assert s.headers["content-type"].startswith("application/problem+json")
                assert int(s.headers["retry-after"]) >= 1
                assert b"gpuplane.logs.follow_limit" in s.body
                assert_no_leak(bytes(s.body))
            assert slots.active() == len(opened)
        # a non-follow read still works while the limit is reached
        r = red.client.get(_path(beta_log), headers=red.h("mal-viewer"))
        assert r.status_code == 200 and r.text == "beta log line\n"
        for s in opened:
            assert bytes(s.body).startswith(b"beta log line\n")
            assert_no_leak(bytes(s.body))
            await _close(s)
        assert slots.active() == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_global_limit_holds_and_a_disconnected_stream_releases_its_slot(red, beta_log, spec):
    app = red.client.app
    app.state.log_follow = slots = FollowSlots(per_user=4, total=6)
    users = [a[0] for a in ATTACKERS if a[1] != "auditor"]

    async def scenario() -> None:
        opened = []
        for user in users:  # 5 users x up to 4 each, but only 6 in all
            for _ in range(2):
                s = await _open(app, _path(beta_log), "follow=true", red.h(user), spec=spec)
                red.attempt("logs.follow_flood")
                opened.append(s)
        assert [s.status for s in opened].count(200) == 6
        assert all(s.status == 429 for s in opened[6:])
        assert slots.active() == 6
        # the client goes away: the stream ends and gives its slot back
        first = opened[0]
        await _close(first)
        assert slots.active() == 5
        s = await _open(app, _path(beta_log), "follow=true", red.h(users[-1]), spec=spec)
        assert s.status == 200
        opened.append(s)
        for s in opened[1:]:
            if s.status == 200:
                await _close(s)
        assert slots.active() == 0

    asyncio.run(scenario())


def test_follow_streams_do_not_starve_healthz(red, beta_log):
    app = red.client.app
    app.state.log_follow = slots = FollowSlots(per_user=100, total=100)

    async def scenario() -> None:
        opened = [await _open(app, _path(beta_log), "follow=true", red.h("mal-viewer"))
                  for _ in range(60)]
        assert all(s.status == 200 for s in opened) and slots.active() == 60
        for _ in range(3):  # more than the threadpool has threads, and /healthz still answers
            h = await _open(app, "/healthz", "", {})
            assert h.status == 200 and b'"database":true' in bytes(h.body)
        for s in opened:
            await _close(s)
        assert slots.active() == 0

    asyncio.run(scenario())


def test_idle_and_too_long_streams_end_by_themselves(red, beta_log):
    app = red.client.app
    slots: FollowSlots = app.state.log_follow
    base = app.state.settings

    async def scenario() -> None:
        for update in ({"log_follow_idle_s": 0.2}, {"log_follow_max_s": 0.2}):
            app.state.settings = base.model_copy(update=update)
            s = await _open(app, _path(beta_log), "follow=true", red.h("mal-member"))
            red.attempt("logs.follow_flood")
            assert s.status == 200
            await asyncio.wait_for(s.task, WAIT_S)  # no disconnect sent: it ended itself
            assert slots.active() == 0

    try:
        asyncio.run(scenario())
    finally:
        app.state.settings = base


def test_following_another_tenants_log_is_still_404(red, beta_log):
    app = red.client.app
    slots: FollowSlots = app.state.log_follow
    victim = red.world.ids["workload"]

    async def scenario() -> None:
        for user, role, *_ in ATTACKERS:
            for query in ("follow=true", "follow=true&project=proj-alpha"):
                s = await _open(app, _path(victim), query, red.h(user))
                red.attempt("logs.follow_other_tenant")
                assert s.status == 404, (user, role, bytes(s.body))
                assert b"alpha-secret" not in bytes(s.body)
                assert_no_leak(bytes(s.body))
        assert slots.active() == 0

    asyncio.run(scenario())


def test_throttled_answers_are_tarpitted_without_a_thread(red, monkeypatch):
    import gpuplane.api.deps as deps

    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(deps.asyncio, "sleep", fake_sleep)
    app = red.client.app
    app.state.settings = app.state.settings.model_copy(update={"auth_throttle_delay_s": 1.0})
    attacker = _from(red, "203.0.113.11")
    for _ in range(app.state.settings.auth_fail_limit):
        assert attacker.get("/v1/whoami", headers={"Authorization": f"Bearer {BAD}"}
                            ).status_code == 401
        red.attempt("auth.brute_force")
    assert slept == []
    r = attacker.get("/v1/whoami", headers={"Authorization": f"Bearer {BAD}"})
    red.attempt("auth.brute_force")
    assert r.status_code == 429 and slept == [1.0]
