from __future__ import annotations

import pytest

from gpuplane.service import Principal, Services
from gpuplane.service.specs import GpuSpec, HostSpec, SiteSpec
from gpuplane.store import Store

from .dbs import FakeClock, database_params, make_db_url


@pytest.fixture(params=database_params())
def db_url(request, tmp_path):
    yield from make_db_url(request.param, tmp_path)


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def svc(store, clock) -> Services:
    services = Services(store, clock=clock)
    services.bootstrap_admin()
    return services


@pytest.fixture
def admin() -> Principal:
    return Principal.system("admin")


@pytest.fixture
def fleet(svc, admin):
    """One EU/DE site with two hosts: 8x H100-80GB and 4x A100-80GB."""
    svc.inventory.create_site(admin, SiteSpec(name="eu-de-1", jurisdiction="EU/DE"))
    svc.inventory.register_host(admin, HostSpec(
        name="h100-a", site="eu-de-1", cpu=64, memory="512Gi",
        gpus=[GpuSpec(index=i, model="H100-80GB", memory_mib=81920) for i in range(8)]))
    svc.inventory.register_host(admin, HostSpec(
        name="a100-a", site="eu-de-1", cpu=32, memory="256Gi",
        gpus=[GpuSpec(index=i, model="A100-80GB", memory_mib=81920) for i in range(4)]))
    return svc
