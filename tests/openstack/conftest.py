"""A real OpenStack Placement for the tests of ``drivers/openstack`` (docs/openstack.md).

Session fixtures start Placement 16.x with ``scripts/openstack/placement.sh`` (its own
virtualenv under ``$GPUPLANE_OPENSTACK_HOME/placement``, default ``.openstack/placement/``:
~20 s the first time, ~2 s after) and stop it when the session ends:

- ``placement_url``: SQLite, one serial gunicorn worker;
- ``placement_pg_url``: PostgreSQL (a database in ``$GPUPLANE_TEST_PG_URL`` when set, else a
  throwaway cluster from ``scripts/pg-start.sh``) with ``allocation_conflict_retry_count = 1``.

``GPUPLANE_TEST_PLACEMENT_URL`` (and ``GPUPLANE_TEST_PLACEMENT_TOKEN``, default ``admin``) runs
the same tests against that Placement instead, e.g. an operator's test cloud. Every test works
under its own marker trait and host names and deletes its providers at the end, so it never
touches providers gpuplane manages there. (No ``__init__.py`` here: a package named ``openstack`` on ``sys.path`` would shadow
openstacksdk.) Nothing is skipped: when PyPI cannot be reached the
fixtures fail and say how to point the tests at a running Placement.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.openstack.sync import PlacementSync

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "openstack" / "placement.sh"
EXTERNAL = os.environ.get("GPUPLANE_TEST_PLACEMENT_URL", "").strip()
TOKEN = os.environ.get("GPUPLANE_TEST_PLACEMENT_TOKEN", "admin")


def _start(db: str, state: Path) -> str:
    args = [str(SCRIPT), "start", "--db", db, "--state", str(state)]
    if db == "postgresql" and os.environ.get("GPUPLANE_TEST_PG_URL"):
        args += ["--pg-url", os.environ["GPUPLANE_TEST_PG_URL"]]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.fail("cannot install openstack-placement from PyPI for the OpenStack tests "
                    "(is PyPI reachable, or PIP_INDEX_URL set?). To run them against a "
                    "Placement that is already running, set GPUPLANE_TEST_PLACEMENT_URL.\n"
                    + proc.stderr[-3000:], pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/openstack/placement.sh start --db {db} failed "
                    f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def _stop(db: str, state: Path) -> None:
    subprocess.run([str(SCRIPT), "stop", "--db", db, "--state", str(state)],
                   capture_output=True, text=True, timeout=120)


def _serve(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if EXTERNAL:
        yield EXTERNAL
        return
    state = tmp_path_factory.mktemp(f"placement-{db}")
    try:
        yield _start(db, state)
    finally:
        _stop(db, state)


@pytest.fixture(scope="session")
def placement_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a live Placement on SQLite (one serial worker)."""
    yield from _serve("sqlite", tmp_path_factory)


@pytest.fixture(scope="session")
def placement_pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a live Placement on PostgreSQL (several workers)."""
    yield from _serve("postgresql", tmp_path_factory)


@pytest.fixture
def placement(placement_url: str) -> Iterator[PlacementClient]:
    with PlacementClient(placement_url, TOKEN) as client:
        yield client


@pytest.fixture
def placement_pg(placement_pg_url: str) -> Iterator[PlacementClient]:
    with PlacementClient(placement_pg_url, TOKEN) as client:
        yield client


@pytest.fixture
def scope() -> str:
    """A unique suffix for this test's host names and marker trait."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def marker(scope: str) -> str:
    return f"CUSTOM_GPUPLANE_TEST_{scope.upper()}"


@pytest.fixture
def cleanup() -> Iterator[Callable[[PlacementClient, str], None]]:
    """Register (client, marker): every provider under that marker is deleted at the end,
    with the consumers allocated on it."""
    todo: list[tuple[PlacementClient, str]] = []
    yield lambda client, marker: todo.append((client, marker))
    for client, marker in todo:
        for rp in client.list_resource_providers(required=marker):  # claims block deletion
            for consumer in client.provider_allocations(rp.uuid)[1]:
                client.delete_allocations(consumer)
        PlacementSync(client, marker=marker).sync([])
        client.delete_trait(marker)


@pytest.fixture
def plane(tmp_path: Path, scope: str, marker: str, placement: PlacementClient,
          placement_url: str, cleanup: Callable[[PlacementClient, str], None]) -> Iterator[Any]:
    """A store with three hosts and a control loop keeping ``placement_url`` (live_plane.py)."""
    from live_plane import Plane

    cleanup(placement, marker)
    p = Plane(tmp_path, scope, marker, placement_url)
    yield p
    p.close()


@pytest.fixture
def fleet_docs(scope: str) -> list[dict[str, Any]]:
    """Three hosts on two sites, as Host documents: whole GPUs on two NUMA nodes with SEV-SNP,
    shared GPUs with TDX, MIG GPUs (two layouts and one without instances)."""
    return [
        {"name": f"w-{scope}", "site": f"site-a-{scope}", "cpu": 64, "memory": "512Gi",
         "tee": "sev-snp",
         "gpus": [{"index": i, "model": "H100-80GB", "memory_mib": 81920, "numa": i // 2,
                   "mode": "whole"} for i in range(4)]},
        {"name": f"s-{scope}", "site": f"site-b-{scope}", "cpu": 32, "memory": 262144,
         "tee": "tdx",
         "gpus": [{"index": i, "model": "L40S", "memory_mib": 49152, "numa": 0,
                   "mode": "shared"} for i in range(2)]},
        {"name": f"m-{scope}", "site": f"site-a-{scope}", "cpu": 96, "memory": "1Ti",
         "gpus": [
             {"index": 0, "model": "A100-80GB", "memory_mib": 81920, "numa": 0, "mode": "mig",
              "mig_layout": [{"profile": "3g.40gb", "start": 0},
                             {"profile": "3g.40gb", "start": 4}]},
             {"index": 1, "model": "A100-80GB", "memory_mib": 81920, "numa": 1, "mode": "mig",
              "mig_layout": [{"profile": "1g.10gb", "start": s} for s in range(7)]},
             {"index": 2, "model": "A100-80GB", "memory_mib": 81920, "numa": 1, "mode": "mig"},
         ]},
    ]
