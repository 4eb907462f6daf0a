"""Live-loop replay of a Philly slice: is what ``gpuplane sim sharing`` measures (mode
``gpuplane``) what the live control plane does?

One multi-tenant job history (``sim.sharing.prepare``: jobs submitted in ``[start, end)`` by the
teams of the quotas file, every team's GPUs scaled by ``--quota-scale``) runs twice:

* **sim**: ``sim.replay`` exactly as ``sim.sharing.run_mode("gpuplane", ...)`` builds it (hosts
  ``team_hosts``, gangs ``gang_tasks``, one cohort with the guarantees as quotas, unservable
  jobs left out, ``mode_config("gpuplane")``); its report is ``sim.sharing.report``.
* **live**: the REAL control loop (``ControlLoop``, a real ``Store`` on SQLite, a ``sim``
  driver) set up through the service layer as an operator would: the same hosts (registered
  in the simulator's order, which is the snapshot's tie rank; 8 GPUs of one model ``gpu``, so
  one flavour), one project per team in the default organisation and cohort ``pool`` with
  its guarantee as a GPU quota, jobs submitted through ``WorkloadService.submit_workload`` at
  their submit times (gangs as in ``gang_tasks``: one task group per task size; priority class
  ``preemptible`` = priority 0, preemptible, as the simulator assumes; ``max_runtime_s`` = the
  job's duration, which is what the loop gives the cycle as ``expected_duration`` and the
  simulator gives it too). ``cycle_options`` = the mode's ``CycleOptions`` with the same
  placement profile object kept across cycles.

Harness rules (what makes the live plane see what the simulator sees):

* One virtual clock for the services, the loop and the driver. The loop ticks exactly when the
  simulator runs a cycle (``replay._Sim.run``): on the ``cycle_s`` grid, at the first grid time
  at or after an arrival or a completion. Arrivals are submitted with the clock at their own
  submit time (their ``submitted_at``, the FIFO key, is the trace's).
* Completions are seen *before* the cycle, as the simulator frees capacity first: the loop's
  own order is observe -> stop -> schedule -> launch, so one ``loop.tick`` per event time is
  the whole harness.
* Preemption follows the simulator's protocol: a victim is signalled, runs out its
  ``grace_s`` and is killed (the ``sim`` driver alone would exit at once), keeping its work
  up to its last hourly checkpoint; the simulator starts the beneficiary when the grace is
  over, without another cycle, so the harness ticks the loop then too (the end of a grace
  period is an event like a completion). The world model lives in :class:`ReplayDriver` (a
  ``SimDriver``): each attempt runs for the job's remaining work and reports the checkpoints
  the simulator assumes (``checkpoint_s`` of run time), so the loop's victim choice sees them.
* Workload uids are ``wl-<trace id>``: the cycle breaks FIFO ties (same submit second) by
  workload id; the simulator's ids are the trace's, the live ones random hex. The seam makes
  the tie order the same (``--random-ids`` measures the loop with its own random ids).
* The lease: ``tick(renew=True)`` re-acquires it each tick, locally valid for 2/3 TTL of the
  virtual clock, and on the database for ``lease_ttl_s`` of real time: a TTL of an hour keeps
  it across virtual jumps of days. The lease log must show one ``acquired`` and no ``lost``.

Reported: per-team p95 wait live vs sim and their ratio, jobs admitted (started) before the
window end in both and the agreement, jobs with equal first start, the first divergence (time,
job, what each side did), preemptions, wall time and load. Writes ``<out>/live_replay_philly.json``
and ``.png``.

    .venv/bin/python benchmarks/live_replay_philly.py [--jobs CSV --quotas CSV]
        [--start 2017-10-16T00:00:00] [--end 2017-10-17T00:00:00] [--teams a,b]
        [--quota-scale 0.1] [--max-jobs N] [--random-ids] [--out benchmarks/results]

``tests/control/test_live_replay_philly.py`` runs the same harness on a small slice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpuplane.drivers.base import DriverHandle, TaskObservation, TaskSpec, TaskState
from gpuplane.drivers.sim import SimDriver
from gpuplane.sim.replay import JobOutcome, ReplayConfig, ReplayResult, SimJob, replay
from gpuplane.sim.sharing import (COHORT, FLAVOR, SharingSetup, gang_tasks, mode_config,
                                  pool_quotas, prepare, report, servable, team_hosts)
from gpuplane.sim.traces import format_time, parse_time, read_jobs, read_quotas

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "philly"
OUT = ROOT / "benchmarks" / "results"
LEASE_TTL_S = 3600.0     #: real seconds; ticks re-acquire, so virtual jumps never matter


# -- input ---------------------------------------------------------------------------------------
def make_setup(jobs_csv: Path, quotas_csv: Path, start: str, end: str, quota_scale: float,
               teams: Sequence[str] = (), max_jobs: int | None = None) -> SharingSetup:
    """``sim.sharing.prepare`` on the teams named (all when empty); ``max_jobs`` keeps the
    first that many jobs of the window (the window itself is unchanged)."""
    _, jobs = read_jobs(jobs_csv)
    _, quotas = read_quotas(quotas_csv)
    if teams:
        quotas = [q for q in quotas if q.tenant in set(teams)]
    setup = prepare(jobs, quotas, start=parse_time(start), end=parse_time(end),
                    quota_scale=quota_scale)
    if max_jobs is not None:
        setup = dataclasses.replace(setup, jobs=setup.jobs[:max_jobs])
    return setup


def sim_jobs(setup: SharingSetup) -> tuple[list[SimJob], list[Any], set[str]]:
    """Jobs, hosts and unservable job ids exactly as ``run_mode("gpuplane", ...)`` builds them."""
    gph = setup.gpus_per_host
    jobs = [SimJob(j.id, j.tenant, j.submit, j.duration, gang_tasks(j.gpus, gph))
            for j in setup.jobs]
    hosts = [h for t in setup.teams for h in team_hosts(t.tenant, t.gpus, gph)]
    unservable = {j.id for j in jobs if not servable(j, hosts)}
    return [j for j in jobs if j.id not in unservable], hosts, unservable


# -- the simulator -------------------------------------------------------------------------------
def run_sim(setup: SharingSetup, config: ReplayConfig,
            progress: Callable[[float, float], None] | None = None) -> dict[str, Any]:
    """``run_mode("gpuplane")`` keeping the per-job outcomes (its report is the same)."""
    jobs, hosts, unservable = sim_jobs(setup)
    quotas = pool_quotas("gpuplane", setup.teams)
    t0 = time.perf_counter()
    r = replay(jobs, hosts, quotas, config, window=setup.window, progress=progress)
    r.wall_s = time.perf_counter() - t0
    return {"result": r, "report": report(setup, r, unservable), "seconds": r.wall_s}


# -- the world model of the live run -------------------------------------------------------------
class ReplayDriver(SimDriver):
    """The ``sim`` driver with the simulator's job model (``sim/replay.py``): an attempt runs for
    the job's remaining work and reports a checkpoint every ``checkpoint_s`` of its run time
    (so the loop's victim choice sees the checkpoints the simulator assumes). A stopped task
    keeps running its grace period and is then killed (``forced``; with ``on_signal`` it
    acknowledges), keeping the work up to its last checkpoint at the signal (all of it with
    ``on_signal``) -- the simulator's protocol, where the beneficiary starts when the grace is
    over. (The plain ``sim`` driver exits at once when signalled.) For the harness it keeps
    every attempt's start and end, each workload's first start, and the workloads waiting."""

    def __init__(self, home: Path, clock: Callable[[], float], work: dict[str, float],
                 checkpoint_s: float | None, on_signal: bool = False) -> None:
        super().__init__(home, clock=clock)
        self.work = work                         # workload uid -> total work (s)
        self.done: dict[str, float] = {}         # workload uid -> work kept so far (s)
        self.checkpoint_s = checkpoint_s
        self.on_signal = on_signal
        self.first_start: dict[str, float] = {}
        self.attempts: dict[str, tuple[str, float, float, int]] = {}  # task -> wl, start, dur, gpus
        self.ended: dict[str, float] = {}        # task id -> end of the attempt
        self.running: dict[str, float] = {}      # task id -> planned end (running its work)
        self.stopping: dict[str, float] = {}     # task id -> end of its grace period
        self.signalled: dict[str, float] = {}    # task id (attempt) -> its stop signal
        #: workloads submitted and not running (the harness adds arrivals; a stop re-adds)
        self.waiting: set[str] = set()
        self._kept: set[tuple[str, float]] = set()
        self.stop_calls = 0
        self._cv = threading.Condition()

    def start(self, task: TaskSpec, placement: Any) -> DriverHandle:
        wid = task.task_id.rsplit(".", 2)[0]     # <workload uid>.<index>.<attempt>
        left = max(0.0, self.work[wid] - self.done.get(wid, 0.0))
        h = super().start(dataclasses.replace(task, duration_s=left), placement)
        now = self.clock()
        self.first_start.setdefault(wid, now)
        self.waiting.discard(wid)
        gpus = len(getattr(placement, "gpu_indices", ()) or ())
        self.attempts[task.task_id] = (wid, now, left, gpus)
        self.running[task.task_id] = now + left
        return h

    def _checkpoint(self, started: float, at: float) -> float:
        ck = self.checkpoint_s
        return started + math.floor((at - started) / ck) * ck if ck else started

    def stop(self, handle: DriverHandle, grace_s: float = 10.0) -> None:
        now = self.clock()
        tid = handle.task_id
        if tid in self.running:                  # the first signal of this attempt
            wid, started, _, _ = self.attempts[tid]
            self.running.pop(tid)
            self.stopping[tid] = now + grace_s
            self.signalled[tid] = now
            self.waiting.add(wid)
            if (wid, started) not in self._kept:     # one gang, one attempt: count once
                self._kept.add((wid, started))
                ran = max(0.0, now - started)
                kept = ran if self.on_signal else self._checkpoint(started, now) - started
                self.done[wid] = self.done.get(wid, 0.0) + kept
        with self._cv:
            self.stop_calls += 1
            self._cv.notify_all()

    def wait_stops(self, n: int, timeout: float = 30.0) -> None:
        """Block until ``n`` stops have run (the loop stops off its thread)."""
        with self._cv:
            if not self._cv.wait_for(lambda: self.stop_calls >= n, timeout):
                raise RuntimeError(f"only {self.stop_calls} of {n} stops ran")

    def observe(self, handles: Sequence[DriverHandle]) -> list[TaskObservation]:
        now = self.clock()
        self.retire(now)
        out = []
        for h in handles:
            tid = h.task_id
            if tid in self.running:
                start = self.attempts[tid][1]
                out.append(TaskObservation(tid, TaskState.RUNNING, checkpointed_at=(
                    self._checkpoint(start, now) if self.checkpoint_s else None)))
            elif tid in self.stopping:           # in its grace period
                out.append(TaskObservation(tid, TaskState.RUNNING))
            elif tid in self.signalled:
                start = self.attempts[tid][1]
                end = self.ended[tid]
                out.append(TaskObservation(
                    tid, TaskState.CANCELLED, message="killed after its grace period"
                    if not self.on_signal else "exited within its grace period",
                    forced=not self.on_signal, signalled_at=self.signalled[tid], ended_at=end,
                    checkpointed_at=self._checkpoint(start, self.signalled[tid])))
            elif tid in self.ended:
                out.append(TaskObservation(tid, TaskState.SUCCEEDED, exit_code=0,
                                           message="simulated run ended"))
            else:
                out.extend(super().observe([h]))   # not started here (not in a replay)
        return out

    def retire(self, now: float) -> None:
        """Book the attempts whose work or grace period is over by ``now`` as ended (the loop
        sees them end at its next observe)."""
        for tid in [k for k, end in self.running.items() if end <= now]:
            self.ended[tid] = self.running.pop(tid)
            wid = self.attempts[tid][0]
            self.done[wid] = self.work[wid]
        for tid in [k for k, end in self.stopping.items() if end <= now]:
            self.ended[tid] = self.stopping.pop(tid)

    def busy(self) -> bool:
        return bool(self.running or self.stopping)

    def next_end(self) -> float:
        return min(min(self.running.values(), default=math.inf),
                   min(self.stopping.values(), default=math.inf))


# -- the live plane --------------------------------------------------------------------------------
def _groups(tasks: Sequence[Any]) -> list[dict[str, Any]]:
    """``gang_tasks`` as task groups, in order: one group per run of equal task sizes."""
    groups: list[dict[str, Any]] = []
    for t in tasks:
        if groups and groups[-1]["resources"]["gpus"] == t.gpus:
            groups[-1]["replicas"] += 1
        else:
            groups.append({"name": f"g{len(groups)}", "replicas": 1, "command": ["philly"],
                           # the simulator's tasks need no CPU or memory; the spec needs some
                           "resources": {"gpus": t.gpus, "cpu": 0.001, "memory": 1}})
    return groups


def run_live(setup: SharingSetup, config: ReplayConfig, home: Path, *, random_ids: bool = False,
             progress: Callable[[float, float], None] | None = None) -> dict[str, Any]:
    """The real control loop on ``setup`` (SQLite under ``home``), ticked at the simulator's
    cycle times. Returns per-job outcomes, a ``sim.sharing.report`` of them, counts, seconds."""
    from gpuplane.control.execution import SIM_DURATION_LABEL
    from gpuplane.control.loop import ControlLoop
    from gpuplane.domain.workloads import WorkloadSpec
    from gpuplane.scheduling.placement import profiles
    from gpuplane.service.auth import AuthService
    from gpuplane.service.authz import Principal
    from gpuplane.service.inventory import InventoryService
    from gpuplane.service.policy import PolicyService
    from gpuplane.service.specs import HostSpec, ProjectSpec, QuotaSpec, SiteSpec
    from gpuplane.service.tenancy import TenancyService
    from gpuplane.service.workloads import WorkloadService
    from gpuplane.store import Store

    jobs, hosts, unservable = sim_jobs(setup)
    jobs.sort(key=lambda j: (j.submit, j.id))          # the simulator's arrival order
    clock = [setup.window[0]]

    def now() -> float:
        return clock[0]

    class ReplayWorkloads(WorkloadService):
        """Deterministic uids (``wl-<trace id>``): FIFO ties break as in the simulator."""

        next_id = ""

        def new_uid(self, prefix: str) -> str:  # type: ignore[override]
            return f"{prefix}-{self.next_id}" if self.next_id else super().new_uid(prefix)

    store = Store(f"sqlite:///{home / 'replay.db'}")
    store.migrate()
    AuthService(store).bootstrap_admin()
    system = Principal.system()
    inv = InventoryService(store, clock=now)
    inv.create_site(system, SiteSpec(name="philly", jurisdiction="US"))
    for h in hosts:   # registration order = store order = the snapshot's tie rank
        inv.register_host(system, HostSpec(
            name=h.name, site="philly", cpu=h.cpu_milli / 1000, memory=h.memory_mib,
            driver="sim", gpus=[{"index": g.index, "model": FLAVOR, "memory_mib": 81920}
                                for g in h.gpus]))
    tenancy, policy = TenancyService(store, clock=now), PolicyService(store, clock=now)
    for team in setup.teams:
        tenancy.create_project(system, ProjectSpec(name=team.tenant, organisation="default",
                                                   cohort=COHORT, weight=team.gpus))
        policy.set_quota(system, QuotaSpec(project=team.tenant, resource="gpu", flavor=FLAVOR,
                                           guaranteed=team.gpus))
    svc = ReplayWorkloads(store, clock=now)
    work: dict[str, float] = {}
    driver = ReplayDriver(home, now, work, config.checkpoint_s, config.checkpoint_on_signal)
    lease_log = home / "lease.log"
    loop = ControlLoop(store, {"sim": driver}, holder="replay", lease_ttl_s=LEASE_TTL_S,
                       clock=now, rng=np.random.default_rng(config.seed), lease_log=lease_log,
                       preempt_grace_s=config.grace_s)
    opts = config.options
    profile = profiles.get(opts.profile) if isinstance(opts.profile, str) else opts.profile
    loop.cycle_options = dataclasses.replace(opts, profile=profile, grace_s=config.grace_s)

    uid_of: dict[str, str] = {}
    period = config.cycle_s
    i, n = 0, len(jobs)
    ticks = stops = preempt_ticks = conflicts = 0
    errors: list[str] = []
    failures: dict[str, int] = {}
    last_arrival = jobs[-1].submit if jobs else 0.0
    t_report = -math.inf
    t0 = time.perf_counter()
    while i < n or driver.busy():
        # the next arrival, completion or end of a grace period (the loop admits the
        # beneficiary of a preemption then; the simulator starts it then without a cycle)
        t_event = min(jobs[i].submit if i < n else math.inf, driver.next_end())
        t = math.ceil(t_event / period) * period if period > 0 else t_event
        while i < n and jobs[i].submit <= t:
            j = jobs[i]
            clock[0] = j.submit
            svc.next_id = "" if random_ids else j.id
            w = svc.submit_workload(system, WorkloadSpec(
                name=j.id, project=j.tenant, kind="job", gang=True, tasks=_groups(j.tasks),
                priority_class="preemptible", max_runtime_s=j.duration if j.duration > 0 else None,
                labels={SIM_DURATION_LABEL: repr(j.duration)}))
            uid_of[j.id] = w.id
            work[w.id] = j.duration
            driver.waiting.add(w.id)
            i += 1
        clock[0] = t
        if not driver.waiting:
            driver.retire(t)              # the simulator runs no cycle: nothing to decide
            continue
        rep = loop.tick()
        ticks += 1
        if not rep.leader or rep.lease_lost:
            raise RuntimeError(f"the loop lost its lease at virtual {format_time(t)}")
        errors += rep.errors
        for stage, k in rep.failures.items():
            failures[stage] = failures.get(stage, 0) + k
        conflicts += rep.conflicts
        if rep.stops:
            stops += rep.stops
            preempt_ticks += 1
            driver.wait_stops(stops)
        if progress is not None and t - t_report >= 3600:
            progress(t, last_arrival)
            t_report = t
        if i >= n and not driver.busy() and driver.waiting:
            break                         # nothing runs and nothing arrives: they never start
    seconds = time.perf_counter() - t0
    if progress is not None:
        progress(last_arrival, last_arrival)
    loop.release()
    store.dispose()
    lease_events = [json.loads(x)["event"] for x in lease_log.read_text().splitlines()]
    outcomes, result = _outcomes(setup, jobs, uid_of, driver)
    result.cycles, result.wall_s = ticks, seconds
    return {"outcomes": outcomes, "result": result, "report": report(setup, result, unservable),
            "ticks": ticks, "stops": stops, "preempting_ticks": preempt_ticks,
            "conflicts": conflicts, "errors": errors[:20], "failures": failures,
            "seconds": seconds,
            "lease_acquired": lease_events.count("acquired"),
            "lease_lost": lease_events.count("lost")}


def _outcomes(setup: SharingSetup, jobs: Sequence[SimJob], uid_of: dict[str, str],
              driver: ReplayDriver) -> tuple[dict[str, JobOutcome], ReplayResult]:
    """What the driver ran, as the simulator's ``JobOutcome``s and ``ReplayResult``: GPU-time
    held in the window (a victim's grace period included, and counted as ``grace_gpu_s`` as
    the simulator counts its beneficiary's wait), hourly samples, preemptions, work lost."""
    lo, hi = setup.window
    by_wid: dict[str, list[tuple[str, float, float, int]]] = {}
    for tid, (wid, start, dur, gpus) in driver.attempts.items():
        end = driver.ended.get(tid, driver.running.get(tid, driver.stopping.get(tid, start + dur)))
        by_wid.setdefault(wid, []).append((tid, start, end, gpus))
    outcomes: dict[str, JobOutcome] = {}
    alloc: dict[str, float] = {}
    changes: list[tuple[float, str, int]] = []
    lost = grace = 0.0
    for j in jobs:
        o = JobOutcome(j)
        o.first_start = driver.first_start.get(uid_of[j.id])
        tasks = by_wid.get(uid_of[j.id], [])
        o.preemptions = len({s for tid, s, _, _ in tasks if tid in driver.signalled})
        last = max(tasks, key=lambda x: x[1], default=None)
        if last is not None and last[0] not in driver.signalled:
            o.end = last[2]
        for tid, s, e, g in tasks:
            a, b = max(s, lo), min(e, hi)
            if b > a:
                alloc[j.tenant] = alloc.get(j.tenant, 0.0) + g * (b - a)
            changes += [(s, j.tenant, g), (e, j.tenant, -g)]
            sig = driver.signalled.get(tid)
            if sig is not None:
                kept = (sig - s) if driver.on_signal else driver._checkpoint(s, sig) - s
                o.lost_gpu_s += (sig - s - kept) * g
                grace += (e - sig) * g
        lost += o.lost_gpu_s
        outcomes[j.id] = o
    samples = _samples(sorted(changes), lo, 3600.0)
    n = sum(o.preemptions for o in outcomes.values())
    r = ReplayResult(outcomes, samples, alloc, 0, preemptions=n, lost_gpu_s=lost,
                     acks=n if driver.on_signal else 0, timeouts=0 if driver.on_signal else n,
                     grace_gpu_s=grace)
    return outcomes, r


def _samples(changes: list[tuple[float, str, int]], t0: float,
             step: float) -> list[tuple[float, float, dict[str, float]]]:
    held: dict[str, float] = {}
    out: list[tuple[float, float, dict[str, float]]] = []
    t, k = t0, 0
    end = changes[-1][0] if changes else t0
    while t <= end:
        while k < len(changes) and changes[k][0] <= t:
            _, who, g = changes[k]
            held[who] = held.get(who, 0.0) + g
            k += 1
        per = {a: v for a, v in held.items() if v}
        out.append((t, sum(per.values()), per))
        t += step
    return out


# -- comparison ------------------------------------------------------------------------------------
def compare(setup: SharingSetup, sim: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """Admitted sets, first starts, per-team p95 waits, the first divergence."""
    so: dict[str, JobOutcome] = sim["result"].outcomes
    lo_: dict[str, JobOutcome] = live["outcomes"]
    hi = setup.window[1]
    adm_s = {k for k, o in so.items() if o.first_start is not None and o.first_start < hi}
    adm_l = {k for k, o in lo_.items() if o.first_start is not None and o.first_start < hi}
    ever_s = {k for k, o in so.items() if o.first_start is not None}
    ever_l = {k for k, o in lo_.items() if o.first_start is not None}
    same_start = [k for k in so if so[k].first_start == lo_[k].first_start]
    diffs = {k: (lo_[k].first_start or math.inf) - (so[k].first_start or math.inf)
             for k in so if so[k].first_start != lo_[k].first_start}
    first = None
    if diffs:
        k = min(diffs, key=lambda k: (min(so[k].first_start or math.inf,
                                          lo_[k].first_start or math.inf), k))
        j = so[k].job
        first = {"job": k, "team": j.tenant, "gpus": j.gpus, "submit": format_time(j.submit),
                 "submit_s": j.submit, "sim_first_start_s": so[k].first_start,
                 "live_first_start_s": lo_[k].first_start,
                 "what": ("the loop started it first" if (lo_[k].first_start or math.inf)
                          < (so[k].first_start or math.inf) else "the simulator started it first")}
    teams = {}
    for t in setup.teams:
        a = sim["report"]["teams"][t.tenant]["p95_wait_s"]
        b = live["report"]["teams"][t.tenant]["p95_wait_s"]
        teams[t.tenant] = {"gpus": t.gpus, "jobs": sim["report"]["teams"][t.tenant]["jobs"],
                           "p95_wait_sim_s": a, "p95_wait_live_s": b,
                           "ratio": (b / a) if a else (1.0 if b == a else math.inf),
                           "within_10pct": abs(b - a) <= 0.10 * a if a else b == a}
    d = np.array([v for v in diffs.values() if math.isfinite(v)])
    return {
        "jobs": len(so),
        "admitted_in_window_sim": len(adm_s), "admitted_in_window_live": len(adm_l),
        "admitted_same_set": adm_s == adm_l,
        "admitted_only_sim": sorted(adm_s - adm_l)[:20],
        "admitted_only_live": sorted(adm_l - adm_s)[:20],
        "started_ever_same_set": ever_s == ever_l,
        "same_first_start": len(same_start),
        "first_start_diff_abs_mean_s": float(np.abs(d).mean()) if d.size else 0.0,
        "first_start_diff_abs_max_s": float(np.abs(d).max()) if d.size else 0.0,
        "first_divergence": first,
        "all_teams_p95_within_10pct": all(v["within_10pct"] for v in teams.values()),
        "teams": teams,
        "preemptions_sim": sim["report"]["preemptions"],
        "preemptions_live": live["report"]["preemptions"],
        "allocation_mean_sim": sim["report"]["allocation_mean"],
        "allocation_mean_live": live["report"]["allocation_mean"],
    }


def run(setup: SharingSetup, home: Path, *, random_ids: bool = False,
        progress: Callable[[str], Callable[[float, float], None] | None] | None = None,
        **config: Any) -> dict[str, Any]:
    """Both runs on ``setup`` with ``mode_config("gpuplane", **config)``, and the comparison."""
    cfg = mode_config("gpuplane", **config)
    sim = run_sim(setup, cfg, progress("sim") if progress else None)
    live = run_live(setup, cfg, home, random_ids=random_ids,
                    progress=progress("live") if progress else None)
    return {"sim": sim, "live": live, "comparison": compare(setup, sim, live)}


# -- output ------------------------------------------------------------------------------------------
def plot(doc: dict[str, Any], sim: dict[str, Any], live: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    c = doc["comparison"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    ax = axes[0]
    teams = list(c["teams"])
    xs = np.arange(len(teams))
    ax.bar(xs - 0.2, [c["teams"][t]["p95_wait_sim_s"] / 3600 for t in teams], 0.4,
           label="sim sharing (gpuplane)")
    ax.bar(xs + 0.2, [c["teams"][t]["p95_wait_live_s"] / 3600 for t in teams], 0.4,
           label="live loop")
    ax.set_xticks(xs, teams, rotation=45, fontsize=8)
    ax.set_ylabel("p95 wait (h)")
    ax.set_title("p95 wait per team")
    ax.legend(fontsize=8)
    ax = axes[1]
    so, lo_ = sim["result"].outcomes, live["outcomes"]
    w_s = [(so[k].first_start - so[k].job.submit) / 3600 for k in so
           if so[k].first_start is not None and lo_[k].first_start is not None]
    w_l = [(lo_[k].first_start - lo_[k].job.submit) / 3600 for k in so
           if so[k].first_start is not None and lo_[k].first_start is not None]
    ax.scatter(w_s, w_l, s=4, alpha=0.5)
    top = max(w_s + w_l + [1e-3])
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlabel("wait in the simulator (h)")
    ax.set_ylabel("wait in the live loop (h)")
    ax.set_title(f"per job: {c['same_first_start']}/{c['jobs']} same first start")
    ax = axes[2]
    for name, r in (("sim", sim["report"]), ("live", live["report"])):
        pts = r["allocation_over_time"]
        if pts:
            ax.plot([(p[0] - pts[0][0]) / 3600 for p in pts], [p[1] for p in pts], label=name,
                    lw=1, ls="-" if name == "sim" else "--")
    ax.set_xlabel("hours since window start")
    ax.set_ylabel("GPUs allocated (% of owned)")
    ax.set_title(f"allocation; quota scale {doc['quota_scale']:g}")
    ax.legend(fontsize=8)
    fig.suptitle(f"Philly {doc['window']['start']} .. {doc['window']['end']}: live loop vs "
                 "simulator", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", default=str(DATA / "philly_pollux.csv"), help="Jobs CSV.")
    ap.add_argument("--quotas", default=str(DATA / "philly_vc_quota.csv"), help="Quotas CSV.")
    ap.add_argument("--start", default="2017-10-16T00:00:00")
    ap.add_argument("--end", default="2017-10-17T00:00:00")
    ap.add_argument("--teams", default="", help="Comma-separated teams (default: all).")
    ap.add_argument("--quota-scale", type=float, default=0.1)
    ap.add_argument("--max-jobs", type=int, default=None)
    ap.add_argument("--random-ids", action="store_true",
                    help="Let the service pick random workload uids (FIFO ties break by them).")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    setup = make_setup(Path(a.jobs), Path(a.quotas), a.start, a.end, a.quota_scale,
                       [t for t in a.teams.split(",") if t], a.max_jobs)
    console = Console()
    console.print(f"{len(setup.jobs)} jobs, {len(setup.teams)} teams, {setup.owned_gpus} GPUs "
                  f"(quota scale {a.quota_scale:g}), {format_time(setup.window[0])} .. "
                  f"{format_time(setup.window[1])}")
    bar = Progress(TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(), console=console)

    def progress(name: str) -> Callable[[float, float], None]:
        task = bar.add_task(f"{name:>5}", total=1.0)
        lo = setup.window[0]

        def cb(t: float, t_last: float) -> None:
            bar.update(task, completed=min(1.0, max(0.0, (t - lo) / max(1.0, t_last - lo))))
        return cb

    wall0 = time.perf_counter()
    with bar, tempfile.TemporaryDirectory() as tmp:
        res = run(setup, Path(tmp), random_ids=a.random_ids, progress=progress)
    wall = time.perf_counter() - wall0
    c = res["comparison"]
    table = Table(title="p95 wait per team: live loop vs simulator")
    for col in ("team", "GPUs", "jobs", "sim p95 (s)", "live p95 (s)", "live/sim"):
        table.add_column(col, justify="right")
    for t, v in c["teams"].items():
        table.add_row(t, str(v["gpus"]), str(v["jobs"]), f"{v['p95_wait_sim_s']:.0f}",
                      f"{v['p95_wait_live_s']:.0f}", f"{v['ratio']:.3f}"
                      + ("" if v["within_10pct"] else " !"))
    console.print(table)
    console.print(
        f"admitted in the window: sim {c['admitted_in_window_sim']}, live "
        f"{c['admitted_in_window_live']}, same set: {c['admitted_same_set']}; same first start "
        f"{c['same_first_start']}/{c['jobs']} (|diff| mean {c['first_start_diff_abs_mean_s']:.0f}"
        f" s, max {c['first_start_diff_abs_max_s']:.0f} s); every team's p95 within 10 %: "
        f"{c['all_teams_p95_within_10pct']}; preemptions sim {c['preemptions_sim']} / live "
        f"{c['preemptions_live']}; allocation sim {c['allocation_mean_sim']:.2f} % / live "
        f"{c['allocation_mean_live']:.2f} %")
    if c["first_divergence"]:
        console.print(f"first divergence: {c['first_divergence']}")
    live = res["live"]
    console.print(f"live: {live['ticks']} ticks, {live['stops']} stops, {live['conflicts']} "
                  f"conflicts, {len(live['errors'])} errors, lease acquired "
                  f"{live['lease_acquired']}x lost {live['lease_lost']}x, {live['seconds']:.1f} s; "
                  f"sim {res['sim']['seconds']:.1f} s; wall {wall:.1f} s; load "
                  f"{os.getloadavg()[0]:.2f}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"window": {"start": format_time(setup.window[0]), "end": format_time(setup.window[1])},
           "jobs": len(setup.jobs), "teams": {t.tenant: t.gpus for t in setup.teams},
           "quota_scale": a.quota_scale, "random_ids": a.random_ids, "comparison": c,
           "sim": res["sim"]["report"], "live": live["report"],
           "live_run": {k: live[k] for k in ("ticks", "stops", "preempting_ticks", "conflicts",
                                             "errors", "failures", "seconds", "lease_acquired",
                                             "lease_lost")},
           "meta": {"wall_s": wall, "sim_s": res["sim"]["seconds"], "load": os.getloadavg(),
                    "python": sys.version.split()[0]}}
    (out / "live_replay_philly.json").write_text(json.dumps(doc, indent=1))
    png = plot(doc, res["sim"], live, out / "live_replay_philly.png")
    console.print(f"wrote {out / 'live_replay_philly.json'}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
