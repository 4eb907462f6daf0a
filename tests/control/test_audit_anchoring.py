"""Signed checkpoints from the leader, anchored: a second gpuplane installation witnesses them
(C2SP tlog-witness over its real API) and an RFC 3161 authority (a real ``openssl ts`` TSA behind
an in-process HTTP transport) timestamps them; a forked log is refused by the witness."""

from __future__ import annotations

import base64
import shutil

import httpx
import pytest
from fastapi.testclient import TestClient

from gpuplane.api.app import create_app
from gpuplane.control.governing import AuditSigning
from gpuplane.control.loop import ControlLoop
from gpuplane.drivers.sim import SimDriver
from gpuplane.governance import anchoring, audit, checkpoints, note
from gpuplane.governance.timestamp import verify_timestamp
from gpuplane.service import Services
from gpuplane.service.authz import Principal
from gpuplane.settings import Settings
from gpuplane.store.db import Store

from governance.tsa import Tsa

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
ADMIN = Principal.system()
ORIGIN = "gpuplane.test/log-a"


@pytest.fixture
def witness(tmp_path):
    home = tmp_path / "witness"
    home.mkdir()
    settings = Settings(home=home)
    app = create_app(settings)
    with TestClient(app) as client:
        yield app, client, settings


def _log(tmp_path, name, key, witnesses, http, tsa_url=None):
    store = Store(f"sqlite:///{tmp_path / (name + '.db')}")
    store.migrate()
    svc = Services(store)
    svc.bootstrap_admin()
    signing = AuditSigning(key, ORIGIN, every_s=0.0, witnesses=witnesses, tsa_url=tsa_url,
                           http=http)
    loop = ControlLoop(store, {"sim": SimDriver(tmp_path / name)}, holder=name, audit=signing)
    return store, svc, loop


def test_witness_cosigns_consistent_checkpoints_and_refuses_a_fork(tmp_path, witness):
    app, wclient, wsettings = witness
    (tmp_path / "tsa").mkdir()
    tsa = Tsa(tmp_path / "tsa")
    key = checkpoints.load_or_create_key(tmp_path / "a-key.pem")
    # the witness follows log A (a global admin sets its witness policy)
    app.state.services.governance.set_policy(ADMIN, "witness", {"logs": [
        {"origin": ORIGIN, "keys": [note.verifier_key(ORIGIN, key.public_key())]}]})
    vkey = wclient.get("/witness/key").text.strip()
    w = anchoring.parse_witnesses(f"{vkey.split('+')[0]}=http://witness/witness/"
                                  f"add-checkpoint={vkey}")[0]

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "witness":
            r = wclient.post(request.url.path, content=request.content)
            return httpx.Response(r.status_code, content=r.content, headers=r.headers)
        return httpx.Response(200, content=tsa.reply(request.content))

    http = httpx.Client(transport=httpx.MockTransport(route))
    store, svc, loop = _log(tmp_path, "a", key, [w], http, tsa_url="http://tsa/")
    try:
        for round_ in range(3):
            audit_entry(store, f"r{round_}")
            loop.tick()
            with store.read() as tx:
                cp = tx.checkpoints.latest()
            assert note.verify_cosignature(cp.note, w.verifier) > 0, cp.note
            body = note.unverified_text(cp.note).encode()
            verify_timestamp(base64.b64decode(cp.timestamp_token), body, [tsa.root.read_bytes()])
        # the export verifies offline with the log key, the witness cosignatures ride along
        log = audit.parse_log(svc.audit.export(ADMIN))
        result = audit.verify_log(log, [note.make_verifier(ORIGIN, key.public_key())],
                                  tsa_roots=[tsa.root.read_bytes()])
        assert result.ok, result.problems
        assert len(result.timestamped) == 3
    finally:
        loop.release()
        store.dispose()
    # a fork: the same origin and key, another history -> the witness refuses to cosign it
    fork, _, floop = _log(tmp_path, "fork", key, [w], http)
    try:
        for i in range(9):
            audit_entry(fork, f"f{i}")
        floop.tick()
        with fork.read() as tx:
            cp = tx.checkpoints.latest()
        assert cp is not None and "\u2014 " + w.name not in cp.note
    finally:
        floop.release()
        fork.dispose()


def audit_entry(store, tag):
    with store.write() as tx:
        audit.record(tx, at=1.0, actor="test", action="test.entry", object_kind="test",
                     object_id=tag)
