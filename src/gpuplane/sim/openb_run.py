"""One openb experiment: arrival sequence, placement loop, KPIs (FGD_PROTOCOL §0-§5).

The loop calls the *same* engine as the control plane: ``place`` with a profile
from ``gpuplane.scheduling.placement.profiles`` and ``ClusterSnapshot.assign``.
All randomness comes from one ``numpy.random.default_rng(seed)``: shuffle, tuning
draws, then the tie-rank permutation, then the policy's own draws.

``distribution`` picks the target distribution of the fragmentation-aware ``gpuplane``
policy: ``online`` (default) is what the live control plane does -- one
:class:`~gpuplane.scheduling.placement.online.OnlineWorkload`, each arriving pod counted once
on arrival, before it is placed; ``trace`` hands it the trace's own distribution (all rows of
the pod list), as FGD's paper does. The baselines (``fgd`` included) always get the trace's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.inventory import Host
from gpuplane.domain.requests import Placement, TaskRequest
from gpuplane.scheduling.placement import place, profiles
from gpuplane.scheduling.placement.fragmentation import FragmentationModel, TypicalWorkload
from gpuplane.scheduling.placement.online import OnlineWorkload
from gpuplane.scheduling.snapshot import ClusterSnapshot
from gpuplane.sim.openb import PodTrace
from gpuplane.sim.openb_kpi import alloc_columns, frag_columns


@dataclass
class RunResult:
    """Outcome of one (trace, policy, seed) run. ``alloc_ratio``/``frag_ratio``/
    ``frag_amount`` map "0".."130" to percentages (None where no event is near)."""

    trace: str
    policy: str
    seed: int
    tuning: float
    pods_submitted: int
    failed_pods: int
    alloc_ratio: dict
    frag_ratio: dict
    frag_amount: dict
    seconds: float
    failed_by_shape: dict = field(default_factory=dict)
    curve: dict = field(default_factory=dict)
    distribution: str = "online"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def arrival_sequence(trace: PodTrace, capacity_milli: int, tuning: float,
                     rng: np.random.Generator) -> list[int]:
    """Indices into ``trace.tasks`` in submission order (FGD_PROTOCOL §3): name-sorted,
    shuffled, then grown by sampling with replacement (stop test on the drawn pod's
    *per-GPU* milli) or shrunk by random removal, to ``tuning`` x capacity."""
    if tuning <= 0:
        raise InvalidInput("the tuning ratio must be > 0",
                           [FieldError("inflation", f"got {tuning}")])
    tasks = trace.tasks
    order = sorted(range(len(tasks)), key=lambda i: trace.names[i])
    seq = [order[i] for i in rng.permutation(len(order))]
    demand = [t.gpu_demand_milli for t in tasks]
    per_gpu = [t.gpu_milli if t.gpus else 0 for t in tasks]
    total = sum(demand)
    target = tuning * capacity_milli
    if total < target:
        if not any(demand):
            return seq
        n = len(order)
        while True:
            j = order[int(rng.integers(n))]
            if total + per_gpu[j] > target:
                break
            seq.append(j)
            total += demand[j]
    elif total > target:
        while total > target and seq:
            r = int(rng.integers(len(seq)))
            total -= demand[seq[r]]
            del seq[r]
    return seq


def tie_rank_by_name(hosts: Sequence[Host], rng: np.random.Generator) -> np.ndarray:
    """Seeded tie rank (§5.1): a permutation over the *name-sorted* hosts; host h
    gets ``perm[position of h in name order]``."""
    perm = rng.permutation(len(hosts))
    by_name = sorted(range(len(hosts)), key=lambda i: hosts[i].name)
    rank = np.empty(len(hosts), dtype=np.int64)
    rank[np.array(by_name, dtype=np.int64)] = perm
    return rank


def _state_key(snap: ClusterSnapshot, h: int) -> tuple:
    return (int(snap.cpu_free[h]), tuple(sorted(snap.gpu_free[h].tolist())),
            int(snap.host_model[h]))


def _report_model(profile, snap: ClusterSnapshot, workload: TypicalWorkload) -> FragmentationModel:
    """The model for the fragmentation report: the policy's own when it measures exactly
    FGD's F for this workload (its memo then serves both), else a fresh one."""
    for plugin, _w in profile.scores:
        get = getattr(plugin, "model", None)
        if get is not None and getattr(plugin, "workload", None) is workload:
            fm = get(snap)
            if type(fm) is FragmentationModel:
                return fm
    return FragmentationModel(workload, snap.models)


DISTRIBUTIONS = ("online", "trace")


def check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise InvalidInput(f"unknown distribution {distribution!r}",
                           [FieldError("distribution", f"valid: {', '.join(DISTRIBUTIONS)}")])


def make_profile(policy: str, trace_workload: TypicalWorkload, distribution: str):
    """``(profile, online)``: the policy's profile and, in ``online`` mode for a policy that
    learns (not a baseline), the :class:`OnlineWorkload` the caller must feed on arrival."""
    check_distribution(distribution)
    if distribution == "online" and policy not in profiles.BASELINES:
        online = OnlineWorkload()
        return profiles.get(policy, online=online), online
    return profiles.get(policy, workload=trace_workload), None


def place_in_order(snap: ClusterSnapshot, tasks: Sequence[TaskRequest], profile,
                   online: OnlineWorkload | None, rng: np.random.Generator,
                   on_event=None) -> list[Placement | None]:
    """Place ``tasks`` one at a time in arrival order (a failed one is dropped); arrival
    ``k`` is counted in ``online`` (key ``str(k)``, at ``k``) just before it is placed.
    ``on_event(k, task, placement_or_None)`` after each. Returns the placements."""
    out: list[Placement | None] = []
    for k, task in enumerate(tasks):
        if online is not None:
            online.arrive(str(k), float(k), (task,))
        res = place(snap, task, profile, rng, explain=False)
        if isinstance(res, Placement):
            snap.assign(task, res)
            out.append(res)
        else:
            out.append(None)
        if on_event is not None:
            on_event(k, task, out[-1])
    return out


def run_experiment(hosts: Sequence[Host], trace: PodTrace, policy: str, seed: int,
                   tuning: float = 1.3, frag: bool = True,
                   distribution: str = "online") -> RunResult:
    """Run one experiment end to end on an empty cluster of ``hosts``.

    ``frag=False`` skips the per-event fragmentation report (faster; the ratio
    columns are then empty). ``distribution``: ``online`` or ``trace`` (module doc)."""
    check_distribution(distribution)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    snap = ClusterSnapshot.build(hosts)
    capacity = int(snap.gpu_count.sum()) * 1000
    if capacity <= 0:
        raise InvalidInput("the node list has no GPUs", [FieldError("nodes", "0 GPUs")])
    seq = arrival_sequence(trace, capacity, tuning, rng)
    snap.set_tie_rank(tie_rank_by_name(hosts, rng))
    workload = TypicalWorkload.from_tasks(trace.tasks)
    profile, online = make_profile(policy, workload, distribution)
    fm = _report_model(profile, snap, workload) if frag else None
    node_f = np.array(fm.fragment_keys([_state_key(snap, h) for h in range(snap.n_hosts)])
                      if fm else np.zeros(snap.n_hosts))
    n = len(seq)
    arrived = np.empty(n, dtype=np.int64)
    used_a = np.empty(n, dtype=np.int64)
    frag_a = np.empty(n, dtype=np.float64)
    arrived_sum = used = failed = 0
    frag_total = float(node_f.sum())
    failed_shapes: Counter = Counter()
    tasks = trace.tasks

    def event(k: int, task: TaskRequest, res: Placement | None) -> None:
        nonlocal arrived_sum, used, failed, frag_total
        arrived_sum += task.gpu_demand_milli
        if res is not None:
            used += res.gpu_milli * len(res.gpu_indices)
            if fm is not None:
                h = snap.index[res.host]
                f = fm.fragment(_state_key(snap, h))
                frag_total += f - node_f[h]
                node_f[h] = f
        else:
            failed += 1
            failed_shapes[(task.cpu_milli, task.gpus, task.gpu_milli,
                           "|".join(sorted(task.gpu_models)))] += 1
        arrived[k] = arrived_sum
        used_a[k] = used
        frag_a[k] = frag_total

    place_in_order(snap, [tasks[j] for j in seq], profile, online, rng, event)
    alloc = alloc_columns(arrived.tolist(), used_a.tolist(), capacity)
    if fm is not None:
        idle = (capacity - used_a).tolist()
        fr, fa = frag_columns(arrived.tolist(), frag_a.tolist(), idle, capacity)
    else:
        fr, fa = {}, {}
    return RunResult(trace=trace.stem, policy=policy, seed=seed, tuning=tuning,
                     pods_submitted=n, failed_pods=failed, alloc_ratio=alloc, frag_ratio=fr,
                     frag_amount=fa, seconds=round(time.perf_counter() - t0, 3),
                     distribution=distribution,
                     failed_by_shape={"|".join(map(str, k)): v
                                      for k, v in failed_shapes.most_common()})
