"""Governance in the live control loop (DESIGN invariant 4), on a real store with the ``sim``
driver and a virtual clock:

- a property test: under random appraisals (passing or failing, of random lifetimes), clock
  jumps, residency policies and confidential / classified submissions, no confidential task ever
  starts without a passing, unexpired, fresh CPU and GPU appraisal of its host, and no task is
  ever placed outside the jurisdictions its classification allows;
- expiry of a running task's appraisal evicts it (policy ``evict``) or flags it (``flag``);
- pending reasons name the rule.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuplane.control.loop import ControlLoop, TickReport
from gpuplane.domain.workloads import Phase, WorkloadSpec
from gpuplane.drivers.sim import SimDriver
from gpuplane.governance import policies
from gpuplane.service import Services
from gpuplane.service.authz import Principal
from gpuplane.service.specs import HostSpec, SiteSpec
from gpuplane.store.db import Store

SITES = {"fra": "EU/DE", "par": "EU/FR", "zrh": "CH"}
HOSTS = {"fra-1": "fra", "fra-2": "fra", "par-1": "par", "zrh-1": "zrh"}
RESIDENCY = {"classifications": {"eu-personal": {"jurisdictions": ["EU"]},
                                 "swiss-bank": {"jurisdictions": ["CH"]},
                                 "german-health": {"jurisdictions": ["EU/DE"]}}}
ADMIN = Principal.system()


class World:
    def __init__(self, home: Path, on_expiry: str = "flag") -> None:
        self.t = [1_000_000.0]
        self.store = Store(f"sqlite:///{home / 'g.db'}")
        self.store.migrate()
        self.svc = Services(self.store, clock=self.now)
        self.svc.bootstrap_admin()
        for name, j in SITES.items():
            self.svc.inventory.create_site(ADMIN, SiteSpec(name=name, jurisdiction=j))
        for name, site in HOSTS.items():
            self.svc.inventory.register_host(ADMIN, HostSpec(
                name=name, site=site, cpu=64, memory="512Gi", driver="sim", tee="sev-snp",
                gpus=[{"index": g, "model": "H100-80GB", "memory_mib": 81920} for g in range(4)]))
        self.svc.governance.set_policy(ADMIN, "residency", RESIDENCY)
        self.svc.governance.set_policy(ADMIN, "attestation", {
            "lifetime_s": 600, "fresh_s": 300, "on_expiry": on_expiry})
        self.loop = ControlLoop(self.store, {"sim": SimDriver(home, clock=self.now)},
                                holder="gov", lease_ttl_s=3600, clock=self.now)
        self.n = 0

    def now(self) -> float:
        return self.t[0]

    def appraise(self, host: str, kind: str, passed: bool, lifetime: float) -> None:
        with self.store.write() as tx:
            tx.attestation.add_result(host, kind, passed, "affirming" if passed else
                                      "contraindicated", [] if passed else ["test.failed"],
                                      {"chip_id": f"{host}-chip"}, {}, self.now(),
                                      self.now() + lifetime)

    def submit(self, confidential: bool, classification: str | None, gpus: int) -> str:
        self.n += 1
        spec = WorkloadSpec(name=f"w{self.n}", confidential=confidential,
                            residency={"classification": classification},
                            labels={"gpuplane.io/sim-duration-s": "100000"},
                            tasks=[{"command": ["train"], "resources": {"gpus": gpus}}])
        return self.svc.workloads.submit_workload(ADMIN, spec).id

    def check_invariant(self) -> None:
        """Every started confidential task had a fresh valid CPU+GPU appraisal of its host at
        its start; every placed task is inside its classification's jurisdictions."""
        with self.store.read() as tx:
            history = {h: tx.attestation.history(h, 10_000) for h in HOSTS}
            att = policies.AttestationPolicy.model_validate(
                tx.policy_docs.get("attestation").data)
            for w in tx.workloads.list_active():
                for t in w.tasks:
                    if t.placement is None:
                        continue
                    host = t.placement.host
                    if w.spec.residency.classification:
                        allowed = RESIDENCY["classifications"][
                            w.spec.residency.classification]["jurisdictions"]
                        j = SITES[HOSTS[host]]
                        assert any(j == a or j.startswith(a + "/") for a in allowed), (w, host)
                    if w.spec.confidential and t.started_at is not None:
                        s = t.started_at
                        for kinds in (("sev-snp", "tdx"), ("nvidia-cc",)):
                            assert any(r.kind in kinds and r.passed and r.appraised_at <= s
                                       < r.expires_at and s - r.appraised_at <= att.fresh_s
                                       for r in history[host]), (w.id, host, s)


ops = st.lists(st.one_of(
    st.tuples(st.just("appraise"), st.sampled_from(sorted(HOSTS)),
              st.sampled_from(["sev-snp", "nvidia-cc"]), st.booleans(),
              st.sampled_from([60.0, 600.0])),
    st.tuples(st.just("submit"), st.booleans(),
              st.sampled_from([None, "eu-personal", "swiss-bank", "german-health"]),
              st.integers(1, 4)),
    st.tuples(st.just("advance"), st.sampled_from([10.0, 200.0, 400.0, 700.0])),
), min_size=4, max_size=24)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops)
def test_no_confidential_start_without_valid_appraisal_and_none_outside_residency(steps):
    with tempfile.TemporaryDirectory() as d:
        world = World(Path(d))
        try:
            for h in HOSTS:  # start with every host attested, so confidential work runs
                _both(world, h)
            for op in steps:
                if op[0] == "appraise":
                    world.appraise(*op[1:])
                elif op[0] == "submit":
                    world.submit(*op[1:])
                else:
                    world.t[0] += op[1]
                world.loop.tick()
                world.check_invariant()
        finally:
            world.loop.release()
            world.store.dispose()


def _both(world: World, host: str, lifetime: float = 600.0) -> None:
    world.appraise(host, "sev-snp", True, lifetime)
    world.appraise(host, "nvidia-cc", True, lifetime)


@contextmanager
def _running_confidential(tmp_path: Path, on_expiry: str, classification: str | None = None,
                          gpus: int = 1) -> Iterator[tuple[World, str]]:
    """A world whose hosts all passed a fresh appraisal, running one confidential workload
    (yielded with its id); released afterwards."""
    world = World(tmp_path, on_expiry=on_expiry)
    try:
        for h in HOSTS:
            _both(world, h)
        uid = world.submit(True, classification, gpus)
        world.loop.tick()
        world.loop.tick()
        yield world, uid
    finally:
        world.loop.release()
        world.store.dispose()


def test_pending_reasons_name_the_rule(tmp_path):
    world = World(tmp_path)
    try:
        secret = world.submit(True, None, 1)
        world.loop.tick()
        w = world.svc.workloads.get_workload(ADMIN, secret)
        assert w.pending_reason.code == "attestation.no_attested_host"
        with world.store.write() as tx:  # no host left in CH: the bank's work waits
            tx.hosts.delete("zrh-1")
        bank = world.submit(False, "swiss-bank", 1)
        world.svc.governance.set_policy(ADMIN, "residency", {"classifications": {}})
        world.loop.tick()
        w = world.svc.workloads.get_workload(ADMIN, bank)
        assert w.phase is Phase.PENDING
        assert w.pending_reason.code == "residency.unknown_classification"
        assert "swiss-bank" in w.pending_reason.message
    finally:
        world.loop.release()
        world.store.dispose()


def test_expiry_evicts_running_confidential_work_when_the_policy_says_so(tmp_path):
    with _running_confidential(tmp_path, "evict", "german-health", 2) as (world, uid):
        w = world.svc.workloads.get_workload(ADMIN, uid)
        assert w.phase is Phase.RUNNING and w.tasks[0].placement.host.startswith("fra")
        world.t[0] += 700  # every appraisal expired
        world.loop.tick()
        t = world.svc.workloads.get_workload(ADMIN, uid).tasks[0]
        assert t.preemption and t.preemption["code"] == "attestation.expired"
        for _ in range(3):
            world.t[0] += 40
            world.loop.tick()
        w = world.svc.workloads.get_workload(ADMIN, uid)
        assert w.tasks[0].phase is Phase.PENDING  # requeued, waits for a fresh appraisal
        assert w.pending_reason.code == "attestation.no_attested_host"
        entries, _ = world.svc.audit.list_entries(ADMIN, None, 1000, "workload.preempt")
        assert entries and entries[-1].detail.get("code") == "attestation.expired"


def test_expiry_flags_running_confidential_work_once(tmp_path):
    with _running_confidential(tmp_path, "flag") as (world, uid):
        world.t[0] += 700
        for _ in range(3):
            world.loop.tick()
        w = world.svc.workloads.get_workload(ADMIN, uid)
        assert w.phase is Phase.RUNNING
        entries, _ = world.svc.audit.list_entries(ADMIN, None, 1000, "task.attestation_expired")
        assert len(entries) == 1 and entries[0].outcome == "flag"


def test_a_task_that_ended_since_the_loop_read_it_is_neither_evicted_nor_flagged(tmp_path):
    with _running_confidential(tmp_path, "evict") as (world, uid):
        with world.store.read() as tx:  # what the observe step of a tick read ...
            seen = (tx.workloads.list_active(), tx.hosts.list_all())
        task = seen[0][0].tasks[0]
        assert task.phase is Phase.RUNNING
        with world.store.write() as tx:  # ... then the task ended
            tx.tasks.update(task.id, task.generation, phase=Phase.SUCCEEDED)
        world.t[0] += 700  # and every appraisal expired
        world.loop._saw(*seen)  # as if an earlier step of the tick had read it
        world.loop.recheck_attestation(TickReport())
        t = world.svc.workloads.get_workload(ADMIN, uid).tasks[0]
        assert t.phase is Phase.SUCCEEDED and t.preemption is None and t.reason is None
        entries, _ = world.svc.audit.list_entries(ADMIN, None, 1000, "task.attestation_expired")
        assert entries == []
