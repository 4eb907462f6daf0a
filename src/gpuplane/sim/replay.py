"""Dynamic simulator: a virtual clock replays job arrivals and completions through ``run_cycle``.

The simulator owns the state a control loop would keep in its store (pending queues, running
tasks, the snapshot, decayed usage) and calls the same :func:`gpuplane.scheduling.cycle.run_cycle`
as the live loop. Cycles run on a fixed virtual period (``cycle_s``) whenever something changed
(an arrival or a completion), like a control loop that wakes on events but at most once a period.

Preemption protocol: the victim is signalled and given ``grace_s`` to checkpoint and exit; the
beneficiary starts when the grace period is over. With ``checkpoint_on_signal`` the victim
acknowledges (checkpoints within the grace) and loses nothing; otherwise the grace times out and
the work since its last periodic checkpoint is lost (checkpoints every ``checkpoint_s`` of run
time; ``None`` = never, all its progress is lost). Acknowledgements, timeouts and lost GPU-time are
recorded. The victim returns to its queue with its original submit time, needing the rest of its
work. (The victim's GPUs are counted as free from the signal on.)

The scheduler is told each job's remaining run time as its ``expected_duration`` (as if users
declared exact maximum run times); only backfill uses it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuplane.domain.tenancy import QuotaTree
from gpuplane.scheduling.admission.fairshare import UsageHistory
from gpuplane.scheduling.cycle import CycleOptions, run_cycle
from gpuplane.scheduling.queueing import PendingQueues, PendingWorkload, RunningTask
from gpuplane.scheduling.snapshot import ClusterSnapshot


@dataclass(frozen=True)
class SimJob:
    """A job to replay: ``tasks`` are ``TaskRequest`` (a gang when more than one)."""

    id: str
    tenant: str
    submit: float
    duration: float
    tasks: tuple[Any, ...]
    priority: int = 0

    @property
    def gpus(self) -> int:
        return sum(getattr(t, "gpus", 0) for t in self.tasks)


@dataclass
class JobOutcome:
    job: SimJob
    first_start: float | None = None
    end: float | None = None
    preemptions: int = 0
    lost_gpu_s: float = 0.0
    done_s: float = 0.0           # work kept so far
    run_start: float = 0.0


@dataclass(frozen=True)
class ReplayConfig:
    options: CycleOptions = field(default_factory=CycleOptions)
    cycle_s: float = 10.0
    checkpoint_s: float | None = 3600.0
    grace_s: float = 30.0
    checkpoint_on_signal: bool = False
    half_life_s: float = 7 * 24 * 3600.0
    sample_s: float = 3600.0
    seed: int = 0


@dataclass
class ReplayResult:
    outcomes: dict[str, JobOutcome]
    samples: list[tuple[float, float, dict[str, float]]]   # (t, allocated GPUs, per tenant)
    alloc_gpu_s: dict[str, float]                            # tenant -> GPU-seconds held
    cycles: int
    wall_s: float = 0.0
    preemptions: int = 0
    lost_gpu_s: float = 0.0
    acks: int = 0
    timeouts: int = 0
    grace_gpu_s: float = 0.0    # GPU-time booked for beneficiaries while their victims' grace ran


def replay(jobs: Sequence[SimJob], hosts: Sequence[Any], quotas: QuotaTree, config: ReplayConfig,
           *, window: tuple[float, float] | None = None,
           progress: Callable[[float, float], None] | None = None) -> ReplayResult:
    """Replay ``jobs`` on ``hosts`` until every job has finished (or can never start).

    ``window`` restricts the allocation integrals (``alloc_gpu_s``) to ``[start, end)``;
    ``progress(t, t_last_arrival)`` is called now and then with the virtual time.
    """
    sim = _Sim(jobs, hosts, quotas, config, window)
    return sim.run(progress)


class _Sim:
    def __init__(self, jobs: Sequence[SimJob], hosts: Sequence[Any], quotas: QuotaTree,
                 config: ReplayConfig, window: tuple[float, float] | None) -> None:
        self.jobs = sorted(jobs, key=lambda j: (j.submit, j.id))
        self.snap = ClusterSnapshot.build(hosts)
        self.quotas = quotas
        self.cfg = config
        self.rng = np.random.default_rng(config.seed)
        self.history = UsageHistory(config.half_life_s)
        self.queues = PendingQueues()
        self.running: dict[str, list[RunningTask]] = {}
        self.out = {j.id: JobOutcome(j) for j in self.jobs}
        self.ends: list[tuple[float, str, int]] = []   # (end, job id, epoch)
        self.epoch: dict[str, int] = {}
        self.holding: dict[str, float] = {}           # tenant -> GPUs held now
        self.alloc_gpu_s: dict[str, float] = {}
        self.window = window
        self.t_acc = jobs[0].submit if jobs else 0.0
        self.samples: list[tuple[float, float, dict[str, float]]] = []
        self.next_sample = window[0] if window is not None else self.t_acc
        self.cycles = 0
        self.acks = 0
        self.timeouts = 0
        self.grace_gpu_s = 0.0
        self.profile = self._profile()

    def _profile(self) -> Any:
        opts = self.cfg.options
        if opts.profile is None or isinstance(opts.profile, str):
            from gpuplane.scheduling.placement import profiles

            return profiles.get(opts.profile) if opts.profile else profiles.get()
        return opts.profile

    # -- time accounting ----------------------------------------------------------------------
    def _advance(self, t: float) -> None:
        """Integrate holdings from ``t_acc`` to ``t`` and emit samples on the way."""
        while self.next_sample <= t:
            self._integrate(self.next_sample)
            per = {k: v for k, v in self.holding.items() if v}
            self.samples.append((self.next_sample, sum(per.values()), per))
            self.next_sample += self.cfg.sample_s
        self._integrate(t)

    def _integrate(self, t: float) -> None:
        a, b = self.t_acc, t
        if self.window is not None:
            a, b = max(a, self.window[0]), min(b, self.window[1])
        if b > a:
            for k, v in self.holding.items():
                if v:
                    self.alloc_gpu_s[k] = self.alloc_gpu_s.get(k, 0.0) + v * (b - a)
        if t > self.t_acc:
            if self.cfg.options.fair_share and self.cfg.half_life_s > 0:
                self.history.advance(t, {k: (v * 1000.0, 0.0, 0.0)
                                         for k, v in self.holding.items()})
            self.t_acc = t

    # -- main loop ------------------------------------------------------------------------------
    def run(self, progress: Callable[[float, float], None] | None) -> ReplayResult:
        jobs, i, n = self.jobs, 0, len(self.jobs)
        period = self.cfg.cycle_s
        last_arrival = jobs[-1].submit if jobs else 0.0
        t_prev_report = -math.inf
        while i < n or self.ends:
            t_event = min(jobs[i].submit if i < n else math.inf,
                          self.ends[0][0] if self.ends else math.inf)
            t = math.ceil(t_event / period) * period if period > 0 else t_event
            while self.ends and self.ends[0][0] <= t:
                end, jid, ep = heapq.heappop(self.ends)
                if self.epoch.get(jid, 0) == ep:
                    self._advance(end)
                    self._complete(jid, end)
            self._advance(t)
            while i < n and jobs[i].submit <= t:
                self._arrive(jobs[i])
                i += 1
            if len(self.queues):
                self._cycle(t)
            if progress is not None and t - t_prev_report >= 6 * 3600:
                progress(t, last_arrival)
                t_prev_report = t
            if i >= n and not self.ends and len(self.queues):
                break   # nothing runs and nothing arrives: the rest can never start
        if progress is not None:
            progress(last_arrival, last_arrival)
        return ReplayResult(self.out, self.samples, self.alloc_gpu_s, self.cycles,
                            preemptions=sum(o.preemptions for o in self.out.values()),
                            lost_gpu_s=sum(o.lost_gpu_s for o in self.out.values()),
                            acks=self.acks, timeouts=self.timeouts,
                            grace_gpu_s=self.grace_gpu_s)

    def _workload(self, o: JobOutcome) -> PendingWorkload:
        j = o.job
        return PendingWorkload(j.id, j.tenant, j.tasks, priority=j.priority, submitted_at=j.submit,
                               gang=True, expected_duration=max(0.0, j.duration - o.done_s))

    def _arrive(self, job: SimJob) -> None:
        self.queues.add(self._workload(self.out[job.id]))

    def _complete(self, jid: str, t: float) -> None:
        o = self.out[jid]
        tasks = self.running.pop(jid)
        for rt in tasks:
            self.snap.release(rt.task, rt.placement)
        o.end = t
        o.done_s = o.job.duration
        self._hold(o.job, -1)

    def _hold(self, job: SimJob, sign: int) -> None:
        self.holding[job.tenant] = self.holding.get(job.tenant, 0.0) + sign * job.gpus

    def _running_view(self, t: float) -> list[RunningTask]:
        ck = self.cfg.checkpoint_s
        out: list[RunningTask] = []
        for tasks in self.running.values():
            if ck and self.cfg.options.preemption:
                s = tasks[0].started_at
                c = s + math.floor((t - s) / ck) * ck
                out.extend(RunningTask(r.id, r.workload_id, r.project, r.task, r.placement,
                                       r.started_at, r.priority, r.preemptible, c, r.expected_end)
                           for r in tasks)
            else:
                out.extend(tasks)
        return out

    def _cycle(self, t: float) -> None:
        self.cycles += 1
        result = run_cycle(self.snap, self.queues, self._running_view(t), self.quotas, t,
                           self.rng, options=self.cfg.options, history=self.history)
        for wid in sorted({p.workload_id for p in result.preemptions}):
            self._preempted(wid, t)
        for a in result.placements:
            # a beneficiary of preemption starts once its victims' grace period is over
            wait = self.cfg.grace_s if a.after else 0.0
            self.grace_gpu_s += wait * self.out[a.workload_id].job.gpus
            self._started(a.workload_id, a.placements, t + wait)

    def _preempted(self, jid: str, t: float) -> None:
        o = self.out[jid]
        self.running.pop(jid)          # run_cycle already released its tasks in the snapshot
        self.epoch[jid] = self.epoch.get(jid, 0) + 1
        ran = max(0.0, t - o.run_start)
        ck = self.cfg.checkpoint_s
        if self.cfg.checkpoint_on_signal:
            kept = ran                      # acknowledged: checkpointed within the grace
            self.acks += 1
        else:
            kept = min(math.floor(ran / ck) * ck if ck else 0.0, ran)
            self.timeouts += 1
        o.lost_gpu_s += (ran - kept) * o.job.gpus
        o.done_s += kept
        o.preemptions += 1
        self._hold(o.job, -1)
        self.queues.add(self._workload(o))

    def _started(self, jid: str, placements: tuple, t: float) -> None:
        o = self.out[jid]
        self.queues.remove(jid)
        if o.first_start is None:
            o.first_start = t
        o.run_start = t
        remaining = max(0.0, o.job.duration - o.done_s)
        ep = self.epoch.get(jid, 0)
        self.running[jid] = [
            RunningTask(f"{jid}/{k}", jid, o.job.tenant, task, p, started_at=t,
                        priority=o.job.priority, expected_end=t + remaining)
            for k, (task, p) in enumerate(zip(o.job.tasks, placements))]
        heapq.heappush(self.ends, (t + remaining, jid, ep))
        self._hold(o.job, +1)
