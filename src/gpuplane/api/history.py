"""The pool over time, for the console's charts: allocation, fragmentation, queue length and
per-tenant use, sampled every ``interval_s`` seconds into a ring buffer of ``points`` samples.

A sample is computed from one read transaction with the same code as ``/metrics``
(``metrics_pool.read_pool``): capacity (all GPUs, and those on ready hosts), GPUs allocated,
the free part of partly used GPUs, the placement engine's fragmentation measure (FGD), the
workloads waiting for the scheduler, and the GPUs each project uses as its quota counts them.

Memory is bounded: ``points`` samples (default 360: one hour at 10 s), each with at most
``TENANTS_MAX`` projects (the largest users). The history lives in the memory of the process
that serves the console and starts empty when it starts: it does not survive a restart (long
term history is Prometheus' job, docs/observability.md). ``web.mount_dashboard`` creates and
starts it with the app; ``api/routers/console.py`` serves it (``GET /v1/history``, and
``event: history`` on the console's stream with the samples the page has not seen yet).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("gpuplane.history")

INTERVAL_S = 10.0
POINTS = 360
TENANTS_MAX = 200


@dataclass(frozen=True)
class Sample:
    """The pool at time ``t`` (Unix seconds); GPU amounts in GPUs."""

    seq: int
    t: float
    capacity: float
    schedulable: float          # GPUs on ready hosts
    allocated: float
    free_partial: float         # free part of partly used GPUs (MIG slices, shares left over)
    fragmented: float           # FGD fragment amount, summed over ready hosts
    queue: int                  # workloads waiting for the scheduler
    tenants: dict[str, float] = field(default_factory=dict)   # project -> GPUs used


def measure(store: Any, now: float, seq: int = 0) -> Sample:
    """One sample of ``store`` (one read transaction)."""
    from gpuplane.api.metrics_pool import fragmented, read_pool, tenant_usage

    with store.read() as tx:
        r = read_pool(tx, now)
    sums = list(r.sums.values())
    tenants: dict[str, float] = {}
    if r.quotas is not None:
        for (project, _), milli in tenant_usage(r).items():
            tenants[project] = tenants.get(project, 0.0) + milli / 1000
    if len(tenants) > TENANTS_MAX:
        tenants = dict(sorted(tenants.items(), key=lambda kv: -kv[1])[:TENANTS_MAX])
    return Sample(seq=seq, t=round(now, 3), capacity=sum(s[0] for s in sums),
                  schedulable=sum(s[0] - s[3] for s in sums),
                  allocated=round(sum(s[1] for s in sums), 3),
                  free_partial=round(sum(s[2] for s in sums), 3),
                  fragmented=round(sum(fragmented(r).values()), 3),
                  queue=len(r.waiting or ()),
                  tenants={p: round(v, 3) for p, v in sorted(tenants.items()) if v})


class History:
    """A ring buffer of samples of ``store``, filled by a daemon thread (``start``/``stop``) or
    by calling ``sample()``. Thread-safe."""

    def __init__(self, store: Any, interval_s: float = INTERVAL_S, points: int = POINTS,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.interval_s = float(interval_s)
        self.points = int(points)
        self.clock = clock
        self._samples: deque[Sample] = deque(maxlen=self.points)
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def last_seq(self) -> int:
        return self._seq

    def sample(self) -> Sample | None:
        """Take one sample now; None (and a log line) if the store cannot be read."""
        try:
            s = measure(self.store, self.clock(), self._seq + 1)
        except Exception as exc:  # noqa: BLE001 - a missed sample leaves a gap, nothing more
            log.warning("history: sample skipped: %s", exc)
            return None
        with self._lock:
            self._seq = s.seq
            self._samples.append(s)
        return s

    def since(self, seq: int = 0) -> list[Sample]:
        """Samples newer than ``seq`` (all kept ones for 0), oldest first."""
        with self._lock:
            return [s for s in self._samples if s.seq > seq]

    def view(self, visible: set[str] | None, after: int = 0) -> dict:
        """The samples after ``after`` as JSON-ready dicts, per-tenant use cut to the projects
        in ``visible`` (None: all). ``reset`` tells the page to drop what it has: ``after``
        is 0, or older than anything kept (the page was away longer than the buffer)."""
        samples = self.since(after)
        oldest = samples[0].seq if samples else after + 1
        out = []
        for s in samples:
            d = asdict(s)
            if visible is not None:
                d["tenants"] = {p: v for p, v in s.tenants.items() if p in visible}
            out.append(d)
        return {"interval_s": self.interval_s, "max_points": self.points,
                "last_seq": samples[-1].seq if samples else after,
                "reset": after == 0 or oldest > after + 1, "samples": out}

    # -- the sampling thread ----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gpuplane-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample()
            self._stop.wait(max(0.05, self.interval_s - (time.monotonic() - started)))
