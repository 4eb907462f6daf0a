"""The web console in a real browser: Debian's Chromium driven by Playwright, against `gpuplane
up` with the demo fleet (fixtures in conftest.py). Every request the page makes must go to the
plane itself (the `page` fixture aborts and reports any other)."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.slow
TIMEOUT = 15_000  # ms; a state change must reach the page within the stream's poll (1.5 s)


def login(page, url: str, token: str) -> None:
    page.goto(url + "/")
    page.wait_for_selector("#token", state="visible")
    # keyboard: Tab reaches the token field (skip link, header buttons first), Enter submits
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == "token":
            break
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    page.wait_for_selector("#app:not([hidden])", timeout=TIMEOUT)
    page.wait_for_selector("#live[data-status='live']", timeout=TIMEOUT)


def test_admin_sees_fleet_map_submits_and_cancels_live(page, plane):
    url, token = plane["url"], plane["token"]
    login(page, url, token)
    assert token not in page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert page.evaluate("sessionStorage.getItem('gpuplane.console.token')") == token

    # overview: the demo fleet's 136 GPUs (the local host adds none without GPUs)
    tile = page.locator("[data-tile='gpus'] dd")
    tile.wait_for(timeout=TIMEOUT)
    assert int(tile.inner_text()) >= 136
    assert page.get_by_role("cell", name="EU/DE").count() >= 1

    # GPU map: the MIG host draws its instances as slices, not whole GPUs
    page.get_by_role("link", name="GPU map").click()
    mig_host = page.locator("section[data-host='fra1-h100-mig-0']")
    mig_host.wait_for(timeout=TIMEOUT)
    assert mig_host.locator("svg.gpu[data-mode='mig']").count() == 8
    assert mig_host.locator(".mig-slice").count() >= 9  # 2 x 3g.40gb + 7 x 1g.10gb laid out

    # submit from the form; the queue shows it without a reload (pushed by the stream)
    page.get_by_role("link", name="Submit").click()
    spec = page.get_by_label("Workload spec (YAML or JSON)")
    spec.fill("kind: Job\nname: console-e2e\nproject: default\n"
              "tasks:\n  - command: [\"true\"]\n    resources: {cpu: 1, memory: 1Gi}\n"
              "    selector: {console.test/never: \"yes\"}\n")
    page.get_by_role("button", name="Submit workload").click()
    page.locator("#submit-result .ok").wait_for(timeout=TIMEOUT)
    navigations = []
    page.on("framenavigated", lambda f: navigations.append(f.url))
    page.get_by_role("link", name="Queue").click()
    row = page.locator("#queue tr", has_text="console-e2e")
    row.wait_for(timeout=TIMEOUT)
    assert all("#" in u for u in navigations), navigations  # hash changes only, no reload

    # cancel it; the stream takes it out of the queue
    row.get_by_role("button", name="Cancel console-e2e").click()
    row.wait_for(state="detached", timeout=TIMEOUT)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
        phase = c.get("/v1/workloads/console-e2e").json()["status"]["phase"]
    assert phase == "Cancelled"

    # audit view with its verification state (admin is global)
    page.get_by_role("link", name="Audit").click()
    page.locator("#audit-verify").wait_for(timeout=TIMEOUT)
    assert "intact" in page.locator("#audit-verify").inner_text()

    # dark theme toggle
    page.get_by_role("button", name=re.compile("Colour theme")).click()
    page.get_by_role("button", name=re.compile("Colour theme")).click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"


def _tenant(url: str, admin: str) -> dict[str, str]:
    """Two tenants over the API: vera views proj-alpha; proj-beta runs a job named
    job-beta-secret. Returns vera's token."""
    h = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        for org, proj in (("org-alpha", "proj-alpha"), ("org-beta", "proj-beta")):
            assert c.post("/v1/organisations", json={"name": org}).status_code == 201
            assert c.post("/v1/projects", json={"name": proj, "organisation": org}
                          ).status_code == 201
        assert c.post("/v1/users", json={"name": "vera", "organisation": "org-alpha"}
                      ).status_code == 201
        assert c.post("/v1/role-bindings", json={"user": "vera", "role": "viewer",
                                                 "scope": "project", "scope_name": "proj-alpha"}
                      ).status_code == 201
        token = c.post("/v1/tokens", json={"user": "vera", "name": "console"}).json()["token"]
        for name, proj in (("job-alpha-one", "proj-alpha"), ("job-beta-secret", "proj-beta")):
            r = c.post("/v1/workloads", json={
                "name": name, "project": proj, "labels": {"gpuplane.io/sim-duration-s": "600"},
                "tasks": [{"command": ["true"], "resources": {"cpu": 1, "memory": "1Gi",
                                                              "gpus": 1}}]})
            assert r.status_code == 201, r.text
    return {"vera": token}


def test_viewer_sees_no_buttons_and_no_other_tenant(page, plane):
    url = plane["url"]
    vera = _tenant(url, plane["token"])["vera"]
    login(page, url, vera)
    assert vera not in page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    nav = page.locator("#nav").inner_text()
    assert "Submit" not in nav and "Audit" not in nav
    texts = []
    for view in ("Overview", "GPU map", "Queue", "Running", "Tenancy"):
        page.get_by_role("link", name=view, exact=True).click()
        page.wait_for_timeout(300)
        page.locator("#view > *").first.wait_for(timeout=TIMEOUT)
        texts.append(page.locator("body").inner_text())
        assert page.locator("#view button").count() == 0, view  # no cancel buttons
    page.get_by_role("link", name="Running", exact=True).click()
    page.locator("#running", has_text="job-alpha-one").wait_for(timeout=TIMEOUT)
    texts.append(page.locator("body").inner_text())
    whole = "\n".join(texts)
    for other in ("beta", "console-e2e", "default"):
        assert other not in whole, other
    assert "other tenant" in whole
    page.goto(url + "/#/submit")  # typed by hand: the route falls back to the overview
    page.wait_for_selector("#app:not([hidden])", timeout=TIMEOUT)
    assert page.locator("#submit-form").count() == 0
