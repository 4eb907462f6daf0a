from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpuplane.control.loop import ControlLoop
from gpuplane.domain.workloads import WorkloadSpec
from gpuplane.drivers.local import LocalDriver
from gpuplane.drivers.sim import SimDriver
from gpuplane.service.auth import AuthService
from gpuplane.service.authz import Principal
from gpuplane.service.inventory import InventoryService
from gpuplane.service.specs import HostSpec, SiteSpec
from gpuplane.service.workloads import WorkloadService
from gpuplane.store.db import Store

PY = sys.executable


def database_urls() -> list[Any]:
    urls: list[Any] = ["sqlite"]
    if os.environ.get("GPUPLANE_TEST_PG_URL"):
        urls.append(pytest.param("postgresql", marks=pytest.mark.postgres))
    return urls


@pytest.fixture(params=database_urls())
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gpuplane.db'}"
        return
    import uuid

    import psycopg

    base = os.environ["GPUPLANE_TEST_PG_URL"]
    name = f"t_{uuid.uuid4().hex[:12]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Plane:
    """A store with a site, a real local host and two simulated hosts, plus a loop."""

    store: Store
    home: Path
    loop: ControlLoop
    workloads: WorkloadService

    def submit(self, **spec: Any):
        spec.setdefault("project", "default")
        return self.workloads.submit_workload(Principal.system(), WorkloadSpec(**spec))

    def get(self, uid: str):
        return self.workloads.get_workload(Principal.system(), uid)

    def run_until(self, uid: str, phases: set[str], timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.loop.tick()
            w = self.get(uid)
            if w.phase.value in phases:
                return w
            time.sleep(0.05)
        raise AssertionError(f"workload {uid} still {self.get(uid).phase.value}: "
                             f"{self.get(uid).pending_reason}")


def make_plane(db_url: str, home: Path, holder: str = "test-holder") -> Plane:
    store = Store(db_url)
    store.migrate()
    AuthService(store).bootstrap_admin()
    inv = InventoryService(store)
    system = Principal.system()
    from gpuplane.domain.errors import Conflict

    try:
        inv.create_site(system, SiteSpec(name="here", jurisdiction="CH"))
        inv.register_host(system, HostSpec(name="local", site="here", cpu=4, memory="8Gi",
                                           driver="local", simulated=False))
        for i in range(2):
            inv.register_host(system, HostSpec(
                name=f"sim-{i}", site="here", cpu=32, memory="256Gi", driver="sim",
                gpus=[{"index": g, "model": "H100-80GB", "memory_mib": 81920, "mode": "shared"}
                      for g in range(4)]))
    except Conflict:
        pass
    drivers = {"local": LocalDriver(home, host="local"), "sim": SimDriver(home)}
    loop = ControlLoop(store, drivers, holder=holder, local_host="local", lease_ttl_s=5,
                       stop_grace_s=1.0)
    return Plane(store, home, loop, WorkloadService(store))


@pytest.fixture
def plane(db_url, tmp_path) -> Plane:
    p = make_plane(db_url, tmp_path)
    yield p
    p.loop.release()
    p.store.dispose()
