"""`gpuplane up` in a subprocess on a temporary GPUPLANE_HOME and a free port, CLI against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from functional.dbs import database_params, make_db_url

REPO = Path(__file__).resolve().parents[2]
GPUPLANE = [sys.executable, "-m", "gpuplane"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=database_params())
def db_url(request, tmp_path) -> Iterator[str | None]:
    """None for SQLite in GPUPLANE_HOME, else a fresh PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield None
        return
    yield from make_db_url(request.param, tmp_path)


@dataclass
class Server:
    home: Path
    port: int
    db_url: str | None
    args: list[str]
    proc: subprocess.Popen | None = None
    relative_home: bool = False  # run as `make run` does: GPUPLANE_HOME relative to the cwd
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.home / f"up-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.home / "admin-token").read_text().strip()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPLANE_")}
        env.update(GPUPLANE_HOME=self.home.name if self.relative_home else str(self.home),
                   GPUPLANE_LEASE_TTL_S="3",
                   GPUPLANE_CYCLE_INTERVAL_S="0.3", PYTHONUNBUFFERED="1")
        if self.db_url:
            env["GPUPLANE_DB_URL"] = self.db_url
        return env

    def start(self, timeout: float = 60.0) -> Server:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [*GPUPLANE, "up", "--port", str(self.port), "--host-name", "e2e-local",
             "--log-level", "warning", *self.args],
            cwd=self.home.parent if self.relative_home else REPO, env=self.env(), stdout=out,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gpuplane up exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gpuplane up did not answer /healthz:\n{self.log.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPLANE_")}
        env.update(GPUPLANE_URL=self.url, GPUPLANE_TOKEN=self.token)
        return subprocess.run([*GPUPLANE, *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)


@pytest.fixture
def make_server(tmp_path) -> Iterator[Any]:
    started: list[Server] = []

    def make(db_url: str | None = None, args: tuple[str, ...] = (), home: Path | None = None,
             port: int | None = None, relative_home: bool = False) -> Server:
        h = home or tmp_path / f"home{len(started)}"
        h.mkdir(parents=True, exist_ok=True)
        s = Server(h, port or free_port(), db_url, list(args), relative_home=relative_home)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def kill_leftover_tasks(home: Path) -> None:
    """Kill the process groups of local tasks a killed server left behind (by recorded pid)."""
    import json

    for f in (home / "local").glob("*.json"):
        try:
            pid = int(json.loads(f.read_text())["data"]["pid"])
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def wait_phase(c: httpx.Client, ref: str, phases: set[str], timeout: float = 30) -> dict:
    """Workload ``ref`` as soon as its phase is one of ``phases``, or as it is at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        wl = c.get(f"/v1/workloads/{ref}").json()
        if wl["status"]["phase"] in phases or time.monotonic() > deadline:
            return wl
        time.sleep(0.1)
