"""Run independent simulations (sharing modes, pool-size searches) in worker processes (or, with
one worker, in this process).

Each item is replayed whole in one process (the same code as in-process, so the same result);
progress callbacks of the workers come back through a queue and are applied in the parent,
which owns the progress bar. Uses the ``fork`` start method where available.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

Progress = Callable[[str], Callable[[float, float], None] | None]

_QUEUE: Any = None
# the order items are handed to the workers: with two workers, one runs gpuplane then drf and
# the other fifo+backfill, dedicated and fifo, which take about as long (CPU seconds per mode,
# Philly 1/4: 24, 19 / 16, 16, 13; held-out synthetic 1/4: 42, 38 / 30, 33, 16)
_COST = {"gpuplane": 0, "gpuplane_smaller_pool": 1, "fifo+backfill": 2, "dedicated": 3,
         "drf": 4, "fifo": 5}


def _init(q: Any) -> None:
    global _QUEUE
    _QUEUE = q


def _callback(name: str) -> Callable[[float, float], None] | None:
    q = _QUEUE
    if q is None:
        return None

    def cb(done: float, total: float) -> None:
        q.put((name, done, total))

    return cb


def _call(name: str, fn: Callable[..., Any], args: tuple) -> tuple[str, Any]:
    return name, fn(*args, progress=_callback(name))


def _context() -> Any:
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()


def run_tasks(tasks: Sequence[tuple[str, Callable[..., Any], tuple]], workers: int,
              progress: Progress | None = None) -> dict[str, Any]:
    """``{name: fn(*args, progress=cb)}`` for each ``(name, fn, args)``, ``workers`` at a time
    (``fn`` must be a module-level function). ``progress(name)`` gives the parent's callback.
    One worker runs the items in this process, one after the other (no fork to pay for)."""
    if workers <= 1:
        return {name: fn(*args, progress=progress(name) if progress else None)
                for name, fn, args in tasks}
    ctx = _context()
    q = ctx.Queue() if progress else None
    cbs = {name: progress(name) for name, _, _ in tasks} if progress else {}
    out: dict[str, Any] = {}
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(q,)) as ex:
        pending = {ex.submit(_call, name, fn, args) for name, fn, args in tasks}
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(q, cbs)
            for f in done:
                name, res = f.result()
                out[name] = res
        _drain(q, cbs)
    return out


def run_parallel(jobs: Sequence[tuple[str, str, Any]], config: dict, workers: int,
                 progress: Progress | None = None) -> dict[str, dict]:
    """Reports of ``(name, mode, setup)`` items, ``workers`` processes at a time."""
    ordered = sorted(jobs, key=lambda j: _COST.get(j[0], 9))
    tasks = [(name, _replay_mode, (mode, setup, config)) for name, mode, setup in ordered]
    return run_tasks(tasks, workers, progress)


def _replay_mode(mode: str, setup: Any, config: dict, progress: Any = None) -> dict:
    from gpuplane.sim.sharing import mode_config, run_mode

    return run_mode(mode, setup, mode_config(mode, **config), progress)


def _drain(q: Any, cbs: dict) -> None:
    if q is None:
        return
    while True:
        try:
            name, done, total = q.get_nowait()
        except queue_mod.Empty:
            return
        cb = cbs.get(name)
        if cb is not None:
            cb(done, total)
