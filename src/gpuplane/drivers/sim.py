"""The ``sim`` driver: simulated hosts of the demo fleet, in real time.

A simulated task occupies its placement for ``TaskSpec.duration_s`` seconds of
wall-clock time (forever, until stopped, when it has none) and then succeeds.
Nothing runs; a short log says so, so every view can tell simulated work from
real work (written by a thread of the driver's, in order: ``flush`` waits for it). All state needed to observe a task lives in its handle (start time,
duration), so simulated tasks survive a restart of gpuplane like real ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from gpuplane.drivers.base import DriverHandle, PlacedDevices, TaskObservation, TaskSpec, TaskState
from gpuplane.drivers.logs import log_path, read_log


class SimDriver:
    """Simulated execution. ``clock`` returns wall-clock seconds (injectable for tests)."""

    kind: ClassVar[str] = "sim"

    def __init__(self, home: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.log_dir = Path(home).resolve() / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._stopped: dict[str, float] = {}
        self._lock = threading.Lock()
        # log lines are written by one thread, in order, off the caller's (the control loop
        # starts a thousand simulated tasks in a tick: a file each is ~0.3 s of file system)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuplane-simlog")
        self._pending: Future[None] | None = None

    def _log(self, task_id: str, line: str) -> None:
        self._pending = self._writer.submit(self._write, log_path(self.log_dir, task_id), line)

    @staticmethod
    def _write(path: Path, line: str) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")

    def flush(self) -> None:
        """Wait until every log line asked for so far is written."""
        pending = self._pending
        if pending is not None:
            pending.result()

    def start(self, task: TaskSpec, placement: Any) -> DriverHandle:
        dev = placement if isinstance(placement, PlacedDevices) else PlacedDevices.from_placement(placement)
        now = self.clock()
        what = (f"MIG {', '.join(f'{p}@gpu{i}' for i, p, _ in dev.mig)}" if dev.mig else
                f"GPUs {list(dev.gpu_indices)} at {dev.gpu_milli}/1000" if dev.gpu_indices else
                "no GPU")
        dur = f"{task.duration_s:g}s" if task.duration_s is not None else "until stopped"
        self._log(task.task_id, f"[simulated] task {task.index}/{task.world_size} of "
                                f"{task.workload} on simulated host {dev.host} ({what}); "
                                f"runs {dur}; nothing is executed")
        return DriverHandle(driver=self.kind, task_id=task.task_id, host=dev.host,
                            data={"started_at": now, "duration_s": task.duration_s,
                                  "simulated": True,
                                  "log": str(log_path(self.log_dir, task.task_id))})

    def stop(self, handle: DriverHandle, grace_s: float = 10.0) -> None:
        with self._lock:
            if handle.task_id in self._stopped:
                return
            self._stopped[handle.task_id] = self.clock()
        self._log(handle.task_id, "[simulated] stopped")

    def observe(self, handles: Sequence[DriverHandle]) -> list[TaskObservation]:
        now = self.clock()
        out = []
        for h in handles:
            if "started_at" not in h.data:
                out.append(TaskObservation(h.task_id, TaskState.LOST,
                                           message="simulated task has no start time"))
                continue
            with self._lock:
                stopped_at = self._stopped.get(h.task_id)
            dur = h.data.get("duration_s")
            if stopped_at is not None:   # a simulated task exits at once when signalled
                out.append(TaskObservation(h.task_id, TaskState.CANCELLED, message="stopped",
                                           forced=False, signalled_at=stopped_at,
                                           ended_at=stopped_at))
            elif dur is not None and now >= float(h.data["started_at"]) + float(dur):
                out.append(TaskObservation(h.task_id, TaskState.SUCCEEDED, exit_code=0,
                                           message=f"simulated run of {float(dur):g}s ended"))
            else:
                out.append(TaskObservation(h.task_id, TaskState.RUNNING))
        return out

    def ended(self, handle: DriverHandle) -> bool:
        """True once the simulated run is over or was stopped (no side effects)."""
        return self.observe([handle])[0].state.terminal

    def read_logs(self, handle: DriverHandle, offset: int = 0,
                  limit: int = 1 << 20) -> tuple[bytes, int]:
        self.flush()
        return read_log(log_path(self.log_dir, handle.task_id), offset, limit)
