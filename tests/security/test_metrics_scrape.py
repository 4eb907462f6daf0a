"""/metrics against every role of the attacker tenant: its per-tenant series carry organisation
and project names and use, so a scrape with any of B's tokens must hold nothing of tenant A
(every name of A contains "alpha"), while A's series are there for a global reader."""

from __future__ import annotations

from .conftest import ATTACKER_NAMES, assert_no_leak


def test_no_attacker_role_reads_the_victims_series(red):
    full = red.client.get("/metrics", headers=red.h("admin")).text
    assert 'project="proj-alpha"' in full  # the victim's series exist: the check below bites
    for headers in ({}, {"Authorization": "Bearer gp-not-a-token"},
                    {"X-Auth-Token": "gp-not-a-token"}):
        red.attempt("metrics.anonymous")
        r = red.client.get("/metrics", headers=headers)
        assert r.status_code == 401 and "alpha" not in r.text
    for user in ATTACKER_NAMES:
        red.attempt("metrics.scrape")
        r = red.client.get("/metrics", headers=red.h(user))
        assert r.status_code == 200, (user, r.text)
        assert "alpha" not in r.text, user
        assert_no_leak(r.text)
