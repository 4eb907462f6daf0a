"""Dynamic simulator: a virtual clock replays job arrivals and completions through ``run_cycle``.

The simulator owns the state a control loop would keep in its store (pending queues, running
tasks, the snapshot, decayed usage, the running tasks' sums) and calls the same
:func:`gpuplane.scheduling.cycle.run_cycle` as the live loop. Cycles run on a virtual period
(``cycle_s``) whenever something changed (an arrival or a completion), like a control loop that
wakes on events but at most once a period.

Cycles that provably decide nothing are skipped (``ReplayConfig.skip_idle``): when only arrivals
happened since the previous cycle and either (a) every GPU is held (no placement can succeed,
whatever the order or the reservations) and no new arrival may preempt (it would not be within
its project's guarantee, and it has no priority above its project's running work), or (b) the
order is strict FIFO, all jobs have one priority and work was already queued (the head that
could not start still blocks everything behind it). The decisions are the same as with every
cycle run; a test checks it.

Run-time knowledge (``ReplayConfig.runtime_knowledge``): what the scheduler is told as each
workload's ``expected_duration`` and each running task's ``expected_end`` -- only backfill uses
them. ``oracle``: the exact remaining run time. ``requested``: the job's declared limit
(``SimJob.limit``, minus the work kept from earlier runs); a job that reaches its limit is killed
at it, as Slurm does (``JobOutcome.killed``; with limits drawn >= the run time, as
``sim/runtime.py`` does, it never happens). ``none``: nothing -- no running work has an expected
end, so backfill cannot compute a shadow time and makes no reservation: blocked work lets any
later work that fits start (greedy first fit), and large jobs may wait long.

Preemption protocol: the victim is signalled and given ``grace_s`` to checkpoint and exit; the
beneficiary starts when the grace period is over. With ``checkpoint_on_signal`` the victim
acknowledges (checkpoints within the grace) and loses nothing; otherwise the grace times out and
the work since its last periodic checkpoint is lost (checkpoints every ``checkpoint_s`` of run
time; ``None`` = never, all its progress is lost). The victim returns to its queue with its
original submit time, needing the rest of its work, when its grace period is over -- as in the
live loop, where a task cannot start again before its previous attempt has stopped. (Its GPUs
are counted as free from the signal on.)
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuplane.domain.tenancy import QuotaTree
from gpuplane.scheduling.admission.fairshare import UsageHistory
from gpuplane.scheduling.admission.state import RunningTotals, end_of, lent_of
from gpuplane.scheduling.cycle import CycleOptions, run_cycle
from gpuplane.scheduling.queueing import (
    PendingQueues, PendingWorkload, RunningTask, flavor_of, task_units)
from gpuplane.scheduling.snapshot import ClusterSnapshot

RUNTIME_KNOWLEDGE = ("oracle", "requested", "none")


@dataclass(frozen=True)
class SimJob:
    """A job to replay: ``tasks`` are ``TaskRequest`` (a gang when more than one); ``limit`` is
    the user's requested maximum run time in seconds (``None``: not declared)."""

    id: str
    tenant: str
    submit: float
    duration: float
    tasks: tuple[Any, ...]
    priority: int = 0
    limit: float | None = None

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
    killed: bool = False          # reached its requested limit


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
    runtime_knowledge: str = "oracle"
    skip_idle: bool = True


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
    skipped_cycles: int = 0
    killed: int = 0


def replay(jobs: Sequence[SimJob], hosts: Sequence[Any], quotas: QuotaTree, config: ReplayConfig,
           *, window: tuple[float, float] | None = None,
           progress: Callable[[float, float], None] | None = None) -> ReplayResult:
    """Replay ``jobs`` on ``hosts`` until every job has finished (or can never start).

    ``window`` restricts the allocation integrals (``alloc_gpu_s``) to ``[start, end)``;
    ``progress(t, t_last_arrival)`` is called now and then with the virtual time.
    """
    if config.runtime_knowledge not in RUNTIME_KNOWLEDGE:
        raise ValueError(f"runtime_knowledge must be one of {RUNTIME_KNOWLEDGE}, "
                         f"got {config.runtime_knowledge!r}")
    t0 = time.perf_counter()
    res = _Sim(jobs, hosts, quotas, config, window).run(progress)
    res.wall_s = time.perf_counter() - t0
    return res


class _Sim:
    def __init__(self, jobs: Sequence[SimJob], hosts: Sequence[Any], quotas: QuotaTree,
                 config: ReplayConfig, window: tuple[float, float] | None) -> None:
        self.jobs = sorted(jobs, key=lambda j: (j.submit, j.id))
        self.snap = ClusterSnapshot.build(hosts)
        self.total_gpus = sum(h.gpu_count for h in hosts)
        self.quotas = quotas
        self.cfg = config
        self.opts = config.options
        self.rng = np.random.default_rng(config.seed)
        self.history = UsageHistory(config.half_life_s)
        self.queues = PendingQueues()
        self.running: dict[str, list[RunningTask]] = {}
        self.out = {j.id: JobOutcome(j) for j in self.jobs}
        self.ends: list[tuple[float, str, int]] = []   # (end, job id, epoch)
        self.requeue: list[tuple[float, str]] = []      # (grace over, preempted job id)
        self.ckpts: list[tuple[float, str, int]] = []  # (next checkpoint, job id, epoch)
        self.epoch: dict[str, int] = {}
        self.holding: dict[str, float] = {}           # tenant -> GPUs held now
        self.hvec: dict[str, tuple[float, float, float]] | None = None  # holding for history
        self.held = 0                                  # GPUs held in all
        self.totals = RunningTotals({}, {}, {}, [], {})
        self.prios: dict[str, Counter] = {}
        self.flat: list[RunningTask] | None = []
        self.alloc_gpu_s: dict[str, float] = {}
        self.window = window
        self.t_acc = self.jobs[0].submit if self.jobs else 0.0
        self.samples: list[tuple[float, float, dict[str, float]]] = []
        self.next_sample = window[0] if window is not None else self.t_acc
        self.cycles = self.skipped = 0
        self.acks = self.timeouts = 0
        self.grace_gpu_s = 0.0
        self.dirty = True          # something other than arrivals changed since the last cycle
        self.arrived: list[SimJob] = []
        self.flavor = quotas.flavors[0] if quotas.flavors else None
        self.same_priority = len({j.priority for j in self.jobs}) <= 1
        self.options = self._with_profile(config.options)

    @staticmethod
    def _with_profile(opts: CycleOptions) -> CycleOptions:
        """Resolve a profile name once, so plugin caches survive across cycles."""
        if opts.profile is None or isinstance(opts.profile, str):
            from dataclasses import replace

            from gpuplane.scheduling.placement import profiles

            prof = profiles.get(opts.profile) if opts.profile else profiles.get()
            return replace(opts, profile=prof)
        return opts

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
            if self.opts.fair_share and self.cfg.half_life_s > 0:
                if self.hvec is None:        # holdings as usage vectors, until they change
                    self.hvec = {k: (v * 1000.0, 0.0, 0.0) for k, v in self.holding.items()}
                self.history.advance(t, self.hvec)
            self.t_acc = t

    # -- main loop ------------------------------------------------------------------------------
    def run(self, progress: Callable[[float, float], None] | None) -> ReplayResult:
        jobs, i, n = self.jobs, 0, len(self.jobs)
        period = self.cfg.cycle_s
        last_arrival = jobs[-1].submit if jobs else 0.0
        t_prev_report = -math.inf
        while i < n or self.ends or self.requeue:
            t_event = min(jobs[i].submit if i < n else math.inf,
                          self.ends[0][0] if self.ends else math.inf,
                          self.requeue[0][0] if self.requeue else math.inf)
            t = math.ceil(t_event / period) * period if period > 0 else t_event
            while self.ends and self.ends[0][0] <= t:
                end, jid, ep = heapq.heappop(self.ends)
                if self.epoch.get(jid, 0) == ep:
                    self._advance(end)
                    self._complete(jid, end)
            self._advance(t)
            while self.requeue and self.requeue[0][0] <= t:
                self.queues.add(self._workload(self.out[heapq.heappop(self.requeue)[1]]))
                self.dirty = True
            while i < n and jobs[i].submit <= t:
                self._arrive(jobs[i])
                i += 1
            if len(self.queues):
                if self._idle():
                    self.skipped += 1
                else:
                    self._cycle(t)
            self.arrived.clear()
            if progress is not None and t - t_prev_report >= 6 * 3600:
                progress(t, last_arrival)
                t_prev_report = t
            if i >= n and not self.ends and not self.requeue and len(self.queues):
                break   # nothing runs and nothing arrives: the rest can never start
        if progress is not None:
            progress(last_arrival, last_arrival)
        return ReplayResult(self.out, self.samples, self.alloc_gpu_s, self.cycles,
                            preemptions=sum(o.preemptions for o in self.out.values()),
                            lost_gpu_s=sum(o.lost_gpu_s for o in self.out.values()),
                            acks=self.acks, timeouts=self.timeouts,
                            grace_gpu_s=self.grace_gpu_s, skipped_cycles=self.skipped,
                            killed=sum(1 for o in self.out.values() if o.killed))

    def _idle(self) -> bool:
        """Would a cycle now decide nothing? Only arrivals since the last cycle, and either
        strict FIFO with work queued before them (they queue behind a head that could not
        start, nothing freed since), or every GPU held and no new arrival that may preempt."""
        if not self.cfg.skip_idle or self.dirty:
            return False
        if (self.opts.strict_fifo and self.same_priority
                and len(self.queues) > len(self.arrived)):
            return True     # strict FIFO: the older head that blocked still blocks
        if self.held < self.total_gpus:
            return False
        if not self.opts.preemption:
            return True
        enforce = self.quotas.enforce
        for job in self.arrived:
            low = self.totals.low.get(job.tenant)
            if low is not None and job.priority > low:
                return False          # may preempt its project's lower-priority work
            if enforce:
                f = flavor_of(job.tasks[0], self.quotas)
                g = self.quotas.project(job.tenant).quota(f).guaranteed
                if self.totals.usage.get((job.tenant, f), 0) + job.gpus * 1000 <= g:
                    return False      # within its guarantee: may reclaim
        return True

    def _known(self, o: JobOutcome) -> float | None:
        """Remaining run time as the scheduler knows it (see the module docstring)."""
        k = self.cfg.runtime_knowledge
        if k == "none":
            return None
        j = o.job
        if k == "requested" and j.limit is not None:
            return max(0.0, j.limit - o.done_s)
        return max(0.0, j.duration - o.done_s)

    def _workload(self, o: JobOutcome) -> PendingWorkload:
        j = o.job
        return PendingWorkload(j.id, j.tenant, j.tasks, priority=j.priority, submitted_at=j.submit,
                               gang=True, expected_duration=self._known(o))

    def _arrive(self, job: SimJob) -> None:
        self.queues.add(self._workload(self.out[job.id]))
        self.arrived.append(job)

    def _complete(self, jid: str, t: float) -> None:
        o = self.out[jid]
        tasks = self.running.pop(jid)
        for rt in tasks:
            self.snap.release(rt.task, rt.placement)
        o.end = t
        if not o.killed:
            o.done_s = o.job.duration
        self._hold(o.job, tasks, -1)

    def _hold(self, job: SimJob, tasks: list[RunningTask], sign: int) -> None:
        """Start (``sign`` +1) or stop (-1) holding ``tasks``: the totals, ends, borrowed GPUs
        per host and holdings follow (the sums :func:`running_totals` of ``tasks`` would add,
        task by task: they are whole numbers, so the order of the additions changes nothing)."""
        gpus = job.gpus
        self.holding[job.tenant] = self.holding.get(job.tenant, 0.0) + sign * gpus
        self.hvec = None
        self.held += sign * gpus
        self.dirty = True
        self.flat = None
        tot = self.totals
        usage, holding, quotas = tot.usage, tot.holding, self.quotas
        for rt in tasks:
            t = rt.task
            units = task_units(t)
            key = (rt.project, flavor_of(t, quotas, rt.flavor))
            usage[key] = usage.get(key, 0) + sign * units
            h = holding.setdefault(rt.project, [0.0, 0.0, 0.0])
            h[0] += sign * units
            h[1] += sign * getattr(t, "cpu_milli", 0)
            h[2] += sign * getattr(t, "memory_mib", 0)
        c = self.prios.get(job.tenant)
        if c is None:
            c = self.prios[job.tenant] = Counter()
        for rt in tasks:
            if rt.preemptible:
                c[rt.priority] += sign
                if not c[rt.priority]:
                    del c[rt.priority]
        if c:
            tot.low[job.tenant] = min(c)
        else:
            tot.low.pop(job.tenant, None)
        lent = tot.lent
        assert lent is not None
        for rt in tasks:
            e = lent_of(rt, quotas)
            if e is not None:
                n = lent.get(e[0], 0) + sign * e[1]
                if n:
                    lent[e[0]] = n
                else:
                    del lent[e[0]]
        ends = tot.ends
        assert ends is not None
        for rt in tasks:
            e = end_of(rt)
            if e is None:
                continue
            if sign > 0:
                bisect.insort(ends, e)
            else:
                del ends[bisect.bisect_left(ends, e)]

    def _running_list(self, t: float) -> Sequence[RunningTask]:
        """Every running task, with checkpoint times as of ``t``: flattened only when the cycle
        reads it (preemption; the totals and ends are kept here), and only after a change."""
        ck = self.cfg.checkpoint_s
        while self.ckpts and self.ckpts[0][0] <= t:
            _, jid, ep = heapq.heappop(self.ckpts)
            if self.epoch.get(jid, 0) != ep or jid not in self.running:
                continue
            tasks = self.running[jid]
            s = tasks[0].started_at
            c = s + math.floor((t - s) / ck) * ck
            self.running[jid] = [RunningTask(r.id, r.workload_id, r.project, r.task, r.placement,
                                             r.started_at, r.priority, r.preemptible, c,
                                             r.expected_end, r.flavor,
                                             borrowed=r.borrowed) for r in tasks]
            heapq.heappush(self.ckpts, (c + ck, jid, ep))
            self.flat = None
        return _Running(self)

    def _flatten(self) -> list[RunningTask]:
        if self.flat is None:
            self.flat = [r for tasks in self.running.values() for r in tasks]
        return self.flat

    def _cycle(self, t: float) -> None:
        self.cycles += 1
        self.dirty = False
        result = run_cycle(self.snap, self.queues, self._running_list(t), self.quotas, t,
                           self.rng, options=self.options, history=self.history,
                           totals=self.totals)
        for wid in sorted({p.workload_id for p in result.preemptions}):
            self._preempted(wid, t)
        for a in result.placements:
            # a beneficiary of preemption starts once its victims' grace period is over
            wait = self.cfg.grace_s if a.after else 0.0
            self.grace_gpu_s += wait * self.out[a.workload_id].job.gpus
            self._started(a.workload_id, a.placements, t + wait, a.borrowing)

    def _preempted(self, jid: str, t: float) -> None:
        o = self.out[jid]
        tasks = self.running.pop(jid)   # run_cycle already released its tasks in the snapshot
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
        self._hold(o.job, tasks, -1)
        if self.cfg.grace_s > 0:
            heapq.heappush(self.requeue, (t + self.cfg.grace_s, jid))
        else:
            self.queues.add(self._workload(o))

    def _started(self, jid: str, placements: tuple, t: float, borrowed: bool) -> None:
        o = self.out[jid]
        self.queues.remove(jid)
        if o.first_start is None:
            o.first_start = t
        o.run_start = t
        remaining = max(0.0, o.job.duration - o.done_s)
        known = self._known(o)
        if self.cfg.runtime_knowledge == "requested" and known is not None and known < remaining:
            remaining, o.killed = known, True     # killed at its limit, as Slurm does
        ep = self.epoch.get(jid, 0)
        expected = None if known is None else t + known
        tasks = [RunningTask(f"{jid}/{k}", jid, o.job.tenant, task, p, started_at=t,
                             priority=o.job.priority, expected_end=expected, flavor=self.flavor,
                             borrowed=borrowed)
                 for k, (task, p) in enumerate(zip(o.job.tasks, placements))]
        self.running[jid] = tasks
        heapq.heappush(self.ends, (t + remaining, jid, ep))
        ck = self.cfg.checkpoint_s
        if ck and self.opts.preemption:
            heapq.heappush(self.ckpts, (t + ck, jid, ep))
        self._hold(o.job, tasks, +1)


class _Running(Sequence):
    """The simulator's running tasks as the one cycle given them sees them: flattened on first
    read (during that cycle, while they cannot change), never when the cycle does not look."""

    __slots__ = ("_sim", "_flat")

    def __init__(self, sim: _Sim) -> None:
        self._sim = sim
        self._flat: list[RunningTask] | None = None

    def _list(self) -> list[RunningTask]:
        if self._flat is None:
            self._flat = self._sim._flatten()
        return self._flat

    def __len__(self) -> int:
        return len(self._list())

    def __getitem__(self, i: Any) -> Any:
        return self._list()[i]

    def __iter__(self) -> Iterator[RunningTask]:
        return iter(self._list())
