"""The red world itself: every attacker token authenticates and holds only tenant B's roles."""

from security.conftest import ATTACKERS


def test_every_attacker_token_works_and_is_confined(red):
    for user, role, _scope, _name in ATTACKERS:
        r = red.client.get("/v1/whoami", headers=red.h(user))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["name"] == user
        assert {b["role"] for b in body.get("roles", [])} <= {role}
