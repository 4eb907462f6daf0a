"""/v1/stream and /v1/stream/tickets over a real HTTP server (uvicorn in a thread): the ticket
is required, single use and short-lived; a tenant's stream carries only its own data, and
pushes a change without being asked."""

from __future__ import annotations

import httpx
import pytest

from api.conftest import build_world
from gpuplane.api.routers.console import TICKET_TTL_S, StreamBook

from .conftest import read_events, serve


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    world = build_world(f"sqlite:///{tmp / 'gpuplane.db'}", tmp)
    app = world.client.app
    app.state.console_poll_s = 0.1
    clock = Clock()
    app.state.stream_book = StreamBook(clock=clock)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield world, c, clock
    world.client.close()


def _ticket(c, world, user: str) -> str:
    r = c.post("/v1/stream/tickets", headers=world.h(user))
    assert r.status_code == 201, r.text
    assert r.json()["expires_in"] == TICKET_TTL_S
    return r.json()["ticket"]


def _unauthenticated(r) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "gpuplane.auth.unauthenticated"


def test_a_ticket_needs_a_token(live):
    world, c, _ = live
    _unauthenticated(c.post("/v1/stream/tickets"))
    _unauthenticated(c.post("/v1/stream/tickets", headers={"Authorization": "Bearer gpp_nope"}))


def test_no_unknown_expired_or_reused_ticket_streams(live):
    world, c, clock = live
    _unauthenticated(c.get("/v1/stream"))
    _unauthenticated(c.get("/v1/stream", params={"ticket": "gpt_made-up"}))
    # the bearer token itself is not a ticket
    _unauthenticated(c.get("/v1/stream", params={"ticket": world.tokens["bob-beta"]}))
    expired = _ticket(c, world, "bob-beta")
    clock.t += TICKET_TTL_S + 0.1
    _unauthenticated(c.get("/v1/stream", params={"ticket": expired}))
    used = _ticket(c, world, "bob-beta")
    with c.stream("GET", "/v1/stream", params={"ticket": used}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert read_events(r, until=lambda e: len(e) >= 1)
    _unauthenticated(c.get("/v1/stream", params={"ticket": used}))


def _views(c, world, user: str, until=None) -> list[dict]:
    ticket = _ticket(c, world, user)
    with c.stream("GET", "/v1/stream", params={"ticket": ticket}) as r:
        assert r.status_code == 200
        return read_events(r, until=until or (lambda e: len({x["event"] for x in e}) >= 5))


def test_a_tenants_stream_carries_only_its_own_data(live):
    world, c, _ = live
    events = _views(c, world, "bob-beta")
    assert {e["event"] for e in events} == {"whoami", "fleet", "workloads", "tenancy", "history"}
    text = "".join(str(e["data"]) for e in events)
    assert "beta" in text  # its own workload and project are there ...
    assert "alpha" not in text.replace("eu-de-1", "")  # ... and nothing of tenant A
    names = {w["name"] for e in events if e["event"] == "workloads" for w in e["data"]["items"]}
    assert names == {"job-beta"}


def test_the_stream_pushes_what_changed(live):
    world, c, _ = live
    ticket = _ticket(c, world, "alice-alpha")
    with c.stream("GET", "/v1/stream", params={"ticket": ticket}) as r:
        first = read_events(r, until=lambda e: len({x["event"] for x in e}) >= 5)
        assert {e["event"] for e in first} == {"whoami", "fleet", "workloads", "tenancy",
                                               "history"}
        sub = c.post("/v1/workloads", headers=world.h("alice-alpha"), json={
            "name": "pushed-alpha", "project": "proj-alpha", "tasks": [{"command": ["true"]}]})
        assert sub.status_code == 201, sub.text
        more = read_events(r, until=lambda e: any(
            x["event"] == "workloads" and any(w["name"] == "pushed-alpha"
                                              for w in x["data"]["items"]) for x in e))
    assert more and more[-1]["event"] == "workloads"
    assert all(e["event"] != "fleet" for e in more)  # unchanged views are not sent again
