"""Nova for the tests of ``drivers/openstack/nova.py``: a live Nova, and recorded responses.

* ``nova_stack`` (session): its own Placement (``placement.sh``, SQLite) and Nova + Glance +
  RabbitMQ (``scripts/openstack/nova.sh``; Nova's databases in ``$GPUPLANE_TEST_PG_URL``'s
  server when set, else in a throwaway PostgreSQL), stopped at the end. Only when
  ``GPUPLANE_TEST_NOVA=1`` (the harness costs ~2.7 min on a clean machine; docs/openstack.md,
  "Nova"); otherwise the live tests skip and say how to run them. With ``GPUPLANE_TEST_NOVA=1``
  an install or start failure FAILS them. ``GPUPLANE_TEST_NOVA_URL`` + ``..._IMAGE_ID`` (+
  ``..._PLACEMENT_URL``, ``..._TOKEN``) point them at a running Nova instead.
* ``Replay``: a loopback WSGI server answering with the exchanges of a file under
  ``recorded/nova/`` (no new dependency, and openstacksdk runs unchanged: keystoneauth talks
  real HTTP to it). Each exchange says where it came from: ``live`` (recorded from Nova 34.0.0
  by ``Recorder``) or ``api-ref`` (written from the Compute API reference where Nova without
  Neutron cannot answer).
* ``Recorder``: a loopback proxy in front of the live Nova; with ``GPUPLANE_NOVA_RECORD=DIR`` the
  live tests write every exchange to ``DIR/<test>.json``, the raw material of ``recorded/nova``.

Fixtures are imported by the test modules that use them (``from conftest_nova import ...``).
"""

from __future__ import annotations

import http.client
import json
import os
import socketserver
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "openstack"
RECORDED = Path(__file__).resolve().parent / "recorded" / "nova"
KEPT_HEADERS = ("content-type", "openstack-api-version", "x-openstack-nova-api-version",
                "location", "vary")
BASE = "{base}"  # recorded bodies hold this in place of the recorded service's scheme://host:port


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _serve(app: Any) -> tuple[str, Any]:
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def _body(environ: dict[str, Any]) -> bytes:
    n = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(n) if n else b""


# -- replay ------------------------------------------------------------------------------------
@dataclass
class Replay:
    """Serves ``recorded/nova/<name>.json``. The n-th request for (method, path, query) gets the
    n-th exchange recorded for it, the last one again after that (polling). Unmatched requests
    get a 501 and are listed in ``misses``."""

    name: str
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    bodies: list[tuple[str, str, Any]] = field(default_factory=list)
    url: str = ""
    _server: Any = None
    _seen: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        doc = json.loads((RECORDED / f"{self.name}.json").read_text())
        self.exchanges = doc["exchanges"]
        root, self._server = _serve(self._app)
        self.root = root
        self.url = root + doc.get("prefix", "/v2.1")

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        raw_in = _body(environ)
        with self._lock:
            self.requests.append((method, path + ("?" + query if query else "")))
            self.bodies.append((method, path, json.loads(raw_in) if raw_in else None))
            key = (method, path, query)
            matching = [e for e in self.exchanges
                        if (e["method"], e["path"], e.get("query", "")) == key]
            if not matching:
                self.misses.append(f"{method} {path}?{query}")
                start_response("501 Not Recorded", [("Content-Type", "application/json")])
                return [json.dumps({"notRecorded": {"code": 501, "message":
                                    f"{method} {path}?{query}"}}).encode()]
            n = self._seen.get(key, 0)
            self._seen[key] = n + 1
            ex = matching[min(n, len(matching) - 1)]
        body = ex.get("body")
        raw = b"" if body is None else json.dumps(body).replace(BASE, self.root).encode()
        headers = [(k, v.replace(BASE, self.root)) for k, v in ex.get("headers", {}).items()]
        if raw:
            headers.append(("Content-Length", str(len(raw))))
        status = ex["status"]
        start_response(f"{status} {http.client.responses.get(status, 'X')}", headers)
        return [raw]

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def replay() -> Iterator[Any]:
    """``replay(name)`` -> a started ``Replay`` of ``recorded/nova/<name>.json``."""
    started: list[Replay] = []

    def start(name: str) -> Replay:
        r = Replay(name)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


# -- recording ---------------------------------------------------------------------------------
class Recorder:
    """A loopback proxy to ``target`` (``http://host:port``) that keeps every exchange."""

    def __init__(self, target: str) -> None:
        self.target = urllib.parse.urlsplit(target)
        self.exchanges: list[dict[str, Any]] = []
        self.url, self._server = _serve(self._app)
        self._lock = threading.Lock()

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        body = _body(environ)
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items()
                   if k.startswith("HTTP_") and k not in ("HTTP_HOST", "HTTP_CONNECTION")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        conn = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=120)
        conn.request(method, path + ("?" + query if query else ""), body=body or None,
                     headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        base = f"{self.target.scheme}://{self.target.netloc}"
        text = raw.decode("utf-8", "replace")
        with self._lock:
            self.exchanges.append({
                "origin": "live", "method": method, "path": path, "query": query,
                "request_body": json.loads(body) if body else None,
                "status": resp.status,
                "headers": {k: v.replace(base, BASE) for k, v in resp.getheaders()
                            if k.lower() in KEPT_HEADERS},
                "body": json.loads(text.replace(base, BASE)) if text.strip() else None})
        out = raw.replace(base.encode(), self.url.encode())
        start_response(f"{resp.status} {resp.reason}",
                       [(k, v.replace(base, self.url)) for k, v in resp.getheaders()
                        if k.lower() not in ("content-length", "connection",
                                             "transfer-encoding")]
                       + [("Content-Length", str(len(out)))])
        return [out]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"prefix": "/v2.1", "exchanges": self.exchanges}, indent=1))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the live stack ----------------------------------------------------------------------------
@dataclass
class NovaStack:
    url: str
    image_id: str
    placement_url: str
    host: str = ""
    node_uuid: str = ""
    start_s: float | None = None  # None: an operator's Nova
    token: str = "admin"


def _run(args: list[str], what: str, timeout: int = 900) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish within {timeout} s", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit {proc.returncode}; 3 = cannot install from PyPI or "
                    f"Debian):\n{proc.stderr[-4000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def nova_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NovaStack]:
    url = os.environ.get("GPUPLANE_TEST_NOVA_URL", "").strip()
    if url:
        if not os.environ.get("GPUPLANE_TEST_NOVA_IMAGE_ID"):
            pytest.fail("GPUPLANE_TEST_NOVA_URL is set but GPUPLANE_TEST_NOVA_IMAGE_ID is not: "
                        "the tests boot servers from that Glance image", pytrace=False)
        yield NovaStack(url, os.environ["GPUPLANE_TEST_NOVA_IMAGE_ID"],
                        os.environ.get("GPUPLANE_TEST_NOVA_PLACEMENT_URL", ""),
                        token=os.environ.get("GPUPLANE_TEST_NOVA_TOKEN", "admin"))
        return
    if os.environ.get("GPUPLANE_TEST_NOVA") != "1":
        pytest.skip("live Nova tests run with GPUPLANE_TEST_NOVA=1 (make test-nova): the "
                    "harness (Nova, Glance, RabbitMQ) costs ~2.5 min on a clean machine; the "
                    "recorded-response tests always run")
    state = tmp_path_factory.mktemp("nova-stack")
    t0 = time.monotonic()
    placement = _run([str(SCRIPTS / "placement.sh"), "start", "--state", str(state / "placement")],
                     "scripts/openstack/placement.sh start")
    try:
        pg = os.environ.get("GPUPLANE_TEST_PG_URL", "").strip()
        _run([str(SCRIPTS / "nova.sh"), "start", "--placement-url", placement,
              "--state", str(state / "nova"), *(["--pg-url", pg] if pg else [])],
             "scripts/openstack/nova.sh start")
        env = dict(line.split("=", 1) for line in
                   (state / "nova" / "env").read_text().splitlines() if "=" in line)
        yield NovaStack(env["NOVA_URL"], env["NOVA_IMAGE_ID"], placement, env["NOVA_HOST"],
                        env["NOVA_NODE_UUID"], start_s=time.monotonic() - t0)
    finally:
        subprocess.run([str(SCRIPTS / "nova.sh"), "stop", "--state", str(state / "nova")],
                       capture_output=True, timeout=120)
        subprocess.run([str(SCRIPTS / "placement.sh"), "stop", "--state",
                        str(state / "placement")], capture_output=True, timeout=120)


@pytest.fixture
def nova_endpoint(nova_stack: NovaStack, request: pytest.FixtureRequest) -> Iterator[str]:
    """The compute URL the test's client uses: the live Nova, or a ``Recorder`` in front of it
    when ``GPUPLANE_NOVA_RECORD=DIR`` (the exchanges go to ``DIR/<test name>.json``)."""
    out = os.environ.get("GPUPLANE_NOVA_RECORD", "").strip()
    if not out:
        yield nova_stack.url
        return
    parts = urllib.parse.urlsplit(nova_stack.url)
    rec = Recorder(f"{parts.scheme}://{parts.netloc}")
    try:
        yield rec.url + parts.path
    finally:
        rec.save(Path(out) / f"{request.node.name}.json")
        rec.close()
