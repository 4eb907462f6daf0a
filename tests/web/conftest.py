"""Fixtures of the web console tests: an app served by uvicorn in a thread, an SSE reader, and
`gpuplane up` with the demo fleet plus a Chromium driven by Playwright (tests/web/test_console).

The browser is Debian's Chromium (/usr/bin/chromium; ``scripts/apt-install.sh chromium`` installs
it when missing and the tests run as root), never a download by ``playwright install``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuplane.api.history import History

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("GPUPLANE_TEST_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port, in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def history_served(app: Any) -> Iterator[httpx.Client]:
    """``app`` keeping a fast history (a sample every 0.2 s; the stream polls every 0.1 s),
    served by uvicorn; yields a client of it (10 s timeout: these tests check what is read, not
    how fast). The history is stopped and removed afterwards."""
    app.state.console_poll_s = 0.1
    app.state.history = History(app.state.store, interval_s=0.2, points=50)
    app.state.history.start()
    try:
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as c:
            yield c
    finally:
        app.state.history.stop()
        del app.state.history


def read_events(resp: httpx.Response, until: Any = None, timeout: float = 10.0) -> list[dict]:
    """Server-sent events of a streaming ``resp`` as ``{"event", "data"}`` dicts, until
    ``until(events)`` is true or ``timeout`` seconds passed (the read timeout of the client
    should be shorter than ``timeout``, or about it)."""
    events: list[dict] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    if not hasattr(resp, "sse_lines"):  # one line iterator per response, for repeated reads
        resp.sse_lines = resp.iter_lines()
    try:
        for line in resp.sse_lines:
            if line == "":
                if "event" in current:
                    current["data"] = json.loads(current.get("data") or "null")
                    events.append(current)
                    if until is not None and until(events):
                        return events
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                current[key] = value[1:] if value.startswith(" ") else value
            if time.monotonic() > deadline:
                break
    except httpx.ReadTimeout:
        pass
    return events


# -- gpuplane up + Chromium ---------------------------------------------------------------------

def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        subprocess.run([str(REPO / "scripts" / "apt-install.sh"), "chromium"], check=False)
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/apt-install.sh chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> Iterator[dict]:
    """`gpuplane up` (demo fleet, local host with no GPU) on a temporary home and a free port."""
    import sys

    home = tmp_path_factory.mktemp("console") / "home"
    home.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPLANE_")}
    env.update(GPUPLANE_HOME=str(home), GPUPLANE_CYCLE_INTERVAL_S="0.3",
               GPUPLANE_LEASE_TTL_S="3", PYTHONUNBUFFERED="1")
    log = open(home / "up.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "gpuplane", "up", "--port", str(port),
                             "--host-name", "console-local", "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, (home / "up.log").read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (home / "up.log").read_text()
        time.sleep(0.2)
    try:
        yield {"url": url, "home": home, "token": (home / "admin-token").read_text().strip()}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = _chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, plane, request, tmp_path) -> Iterator[Any]:
    """A fresh browser context whose every request must go to the plane: any other URL is
    aborted and recorded, and the test fails at teardown if there was one."""
    context = browser.new_context()
    outside: list[str] = []
    origin = plane["url"]

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith(origin + "/") or url == origin:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", guard)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    out = Path(os.environ.get("GPUPLANE_TEST_OUTPUT", tmp_path))
    try:
        out.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(out / f"{request.node.name}.png"), full_page=True)
    except Exception:  # noqa: BLE001 - a screenshot is a courtesy, not the test
        pass
    context.close()
    assert not outside, f"the page asked for URLs outside gpuplane: {outside}"
    assert not errors, f"script errors on the page: {errors}"

