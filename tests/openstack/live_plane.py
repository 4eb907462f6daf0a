"""A gpuplane store, services and control loop on a virtual clock that keeps a live Placement
(the plane the reconcile and claim tests drive). Not a test module: imported by them."""

from __future__ import annotations

import os
from pathlib import Path

from gpuplane.control.loop import ControlLoop
from gpuplane.control.placement_sync import PlacementReconciler
from gpuplane.drivers.openstack import tree
from gpuplane.drivers.openstack.placement import PlacementClient
from gpuplane.drivers.sim import SimDriver
from gpuplane.service import Services
from gpuplane.service.authz import Principal
from gpuplane.service.specs import HostSpec, SiteSpec
from gpuplane.store import Store

TOKEN = os.environ.get("GPUPLANE_TEST_PLACEMENT_TOKEN", "admin")
ADMIN = Principal.system()
INTERVAL = 30.0


class Plane:
    """A SQLite store with two sites and three hosts (whole GPUs with SEV-SNP, shared GPUs,
    MIG GPUs), a residency policy (so entries carry a policy hash), a loop on a virtual clock
    that syncs ``url`` under this test's marker."""

    def __init__(self, home: Path, scope: str, marker: str, url: str) -> None:
        self.t = [1_000_000.0]
        self.store = Store(f"sqlite:///{home / 'g.db'}")
        self.store.migrate()
        self.svc = Services(self.store, clock=lambda: self.t[0])
        self.svc.bootstrap_admin()
        inv = self.svc.inventory
        self.names = (f"w-{scope}", f"s-{scope}", f"m-{scope}")
        for site in (f"site-a-{scope}", f"site-b-{scope}"):
            inv.create_site(ADMIN, SiteSpec(name=site, jurisdiction="CH"))
        inv.register_host(ADMIN, HostSpec(
            name=self.names[0], site=f"site-a-{scope}", cpu=64, memory="512Gi", driver="sim",
            tee="sev-snp", gpus=[{"index": i, "model": "H100-80GB", "memory_mib": 81920,
                                  "numa": i // 2} for i in range(4)]))
        inv.register_host(ADMIN, HostSpec(
            name=self.names[1], site=f"site-b-{scope}", cpu=32, memory="256Gi", driver="sim",
            gpus=[{"index": i, "model": "L40S", "memory_mib": 49152, "mode": "shared"}
                  for i in range(2)]))
        inv.register_host(ADMIN, HostSpec(
            name=self.names[2], site=f"site-a-{scope}", cpu=96, memory="1Ti", driver="sim",
            gpus=[{"index": 0, "model": "A100-80GB", "memory_mib": 81920, "mode": "mig",
                   "mig_layout": [{"profile": "3g.40gb", "start": 0},
                                  {"profile": "3g.40gb", "start": 4}]},
                  {"index": 1, "model": "A100-80GB", "memory_mib": 81920, "numa": 1,
                   "mode": "mig",
                   "mig_layout": [{"profile": "1g.10gb", "start": s} for s in range(7)]}]))
        self.svc.governance.set_policy(ADMIN, "residency", {"classifications": {}})
        self.reconciler = PlacementReconciler(PlacementClient(url, TOKEN, timeout=10),
                                              interval_s=INTERVAL, marker=marker)
        self.loop = ControlLoop(self.store, {"sim": SimDriver(home, clock=self.now)},
                                holder="placement-test", lease_ttl_s=3600, clock=self.now,
                                placement=self.reconciler)

    def now(self) -> float:
        return self.t[0]

    def desired(self, marker: str) -> list:
        with self.store.read() as tx:
            return tree.fleet_tree(tx.hosts.list_all(), marker=marker)

    def entries(self, action: str) -> list:
        with self.store.read() as tx:
            return tx.audit.list(action=action)[0]

    def policy_hash(self) -> str:
        with self.store.read() as tx:
            return tx.audit.list(action="policy.set")[0][-1].policy_hash

    def tick_and_wait(self) -> None:
        self.loop.tick()
        assert self.reconciler.wait(120), "the placement sync did not finish"

    def close(self) -> None:
        self.loop.release()
        self.store.dispose()
