"""The console's history (GET /v1/history, ``event: history``) and its stream (fleet view,
workloads as changes) against every role of the attacker tenant: the victim's job runs on the
shared pool, so the pool's totals may show it, but no name of tenant A (all contain "alpha")
may reach any of B's tokens -- over REST or on a stream B opened with its own ticket."""

from __future__ import annotations

import httpx

from gpuplane.control.loop import ControlLoop
from gpuplane.drivers.sim import SimDriver
from web.conftest import history_served, read_events

from .conftest import ATTACKER_NAMES, assert_no_leak


def test_no_attacker_role_sees_the_victim_in_history_or_on_the_stream(red, tmp_path):
    app = red.client.app
    loop = ControlLoop(app.state.store, {"sim": SimDriver(tmp_path / "sim")}, holder="t",
                       lease_ttl_s=60)
    for _ in range(3):                      # job-alpha starts: the victim holds GPUs
        loop.tick()
    loop.release()
    with history_served(app) as c:
        full = c.get("/v1/history", headers=red.h("admin")).json()
        assert "proj-alpha" in full["samples"][-1]["tenants"]   # the check below bites
        assert "alpha" in repr(_stream(c, red.h("admin")))         # and there too
        for user in ATTACKER_NAMES:
            red.attempt("history.read")
            r = c.get("/v1/history", headers=red.h(user))
            assert r.status_code == 200, (user, r.text)
            assert "alpha" not in r.text, user
            assert_no_leak(r.text)
            red.attempt("stream.read")
            events = _stream(c, red.h(user))
            assert {"history", "fleet"} <= {e["event"] for e in events}, (user, events)
            text = repr(events)
            assert "alpha" not in text, (user, text[:2000])
            assert_no_leak(text)


def _stream(c: httpx.Client, headers: dict[str, str]) -> list[dict]:
    """The events of a stream opened with a ticket of ``headers``' user, until a history sample
    has come (the fleet view and the workloads come before it)."""
    ticket = c.post("/v1/stream/tickets", headers=headers).json()["ticket"]
    with c.stream("GET", "/v1/stream", params={"ticket": ticket}) as s:
        return read_events(s, lambda ev: any(
            e["event"] == "history" and e["data"]["samples"] for e in ev))
