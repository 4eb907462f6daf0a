from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from functional.dbs import database_params, make_db_url

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



@pytest.fixture(params=database_params())
def db_url(request, tmp_path) -> Iterator[str]:
    yield from make_db_url(request.param, tmp_path)


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


def load_benchmark(name: str):  # noqa: ANN201 - a module
    """Import ``benchmarks/<name>.py`` (the live-replay harnesses the tests share with their
    benchmarks)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod
