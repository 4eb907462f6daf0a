"""The web console in a real browser: Debian's Chromium driven by Playwright, against `gpuplane
up` with the demo fleet (fixtures in conftest.py). Every request the page makes must go to the
plane itself (the `page` fixture aborts and reports any other)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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

    # tenancy: each project's fair-share standing beside its quota and use
    page.get_by_role("link", name="Tenancy").click()
    page.locator("#tenancy tr", has_text="default").get_by_text(re.compile("weight")).wait_for(
        timeout=TIMEOUT)

    # charts from the server's history (sampled when the server started, then every 10 s)
    page.get_by_role("link", name="Charts").click()
    chart = page.locator("#chart-allocation")
    chart.wait_for(timeout=TIMEOUT)
    assert int(chart.get_attribute("data-points")) >= 1
    assert page.locator("#chart-allocation path.line, #chart-allocation circle.pt").count() >= 1

    # audit view with its verification state (admin is global)
    page.get_by_role("link", name="Audit").click()
    page.locator("#audit-verify").wait_for(timeout=TIMEOUT)
    assert "intact" in page.locator("#audit-verify").inner_text()

    # dark theme toggle
    page.get_by_role("button", name=re.compile("Colour theme")).click()
    page.get_by_role("button", name=re.compile("Colour theme")).click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"


def test_a_cli_submission_appears_runs_finishes_and_shows_its_log_without_reload(
        page, plane, tmp_path):
    """The operator's everyday loop: `gpuplane apply` in a terminal, the console open beside
    it. The job runs for real on the local host (the quickstart's selector)."""
    url, token = plane["url"], plane["token"]
    shots = Path(os.environ.get("GPUPLANE_TEST_OUTPUT", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    login(page, url, token)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    page.get_by_role("link", name="Running", exact=True).click()
    page.locator("#running").wait_for(timeout=TIMEOUT)

    spec = tmp_path / "job.yaml"
    spec.write_text("kind: Job\nname: cli-e2e\nproject: default\ntasks:\n  - name: main\n"
                    "    command: [sh, -c, 'echo started-cli-e2e; sleep 4; echo finished-cli-e2e']\n"
                    "    resources: {cpu: 0.5, memory: 256Mi}\n"
                    "    selector: {gpuplane.io/driver: local}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPLANE_")}
    env.update(GPUPLANE_URL=url, GPUPLANE_TOKEN=token, HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "gpuplane", "apply", "-f", str(spec)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    running = page.locator("#running tr", has_text="cli-e2e")
    running.locator(".phase-Running").wait_for(timeout=TIMEOUT)
    page.screenshot(path=str(shots / "cli-e2e-running.png"), full_page=True)
    running.get_by_role("link", name="cli-e2e").click()
    log = page.locator("#workload pre.log")
    # (locators, not wait_for_function: the console's CSP forbids string evaluation)
    page.locator("#workload pre.log", has_text="started-cli-e2e").wait_for(timeout=TIMEOUT)
    page.locator("#workload > p > .phase-Succeeded").wait_for(timeout=TIMEOUT)
    page.locator("#workload pre.log", has_text="finished-cli-e2e").wait_for(timeout=TIMEOUT)
    assert log.inner_text().strip() == "started-cli-e2e\nfinished-cli-e2e"  # once
    assert page.locator("#workload button", has_text="Cancel").count() == 0  # it has finished
    page.screenshot(path=str(shots / "cli-e2e-finished-with-log.png"), full_page=True)
    assert page.evaluate("window.__sameDocument") is True  # pushed, never reloaded


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
    for view in ("Overview", "GPU map", "Queue", "Running", "Tenancy", "Charts"):
        page.get_by_role("link", name=view, exact=True).click()
        page.wait_for_timeout(300)
        page.locator("#view > *").first.wait_for(timeout=TIMEOUT)
        texts.append(page.locator("body").inner_text())
        # no cancel buttons (the GPU map's pager only turns pages)
        assert page.locator("#view button:not(.pager button)").count() == 0, view
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
