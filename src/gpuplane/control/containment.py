"""What the control loop contains (DESIGN invariant 8): failure stages, their counts for
``/metrics``, and one-line renderings of exceptions for events and task messages."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from gpuplane.drivers.base import DriverError

#: The stages a contained failure is counted under (``LoopStats.failures``).
STAGES = ("launch", "claim", "observe", "stop", "snapshot")
#: ``Task.reason`` of a task the loop failed because its driver could not observe it.
REASON_OBSERVE_FAILED = "ObserveFailed"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: upper bounds (seconds) of the buckets of the loop's duration histograms (``LoopStats.timed``)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc`` as one printable sentence for events and task messages: control characters
    (a NUL byte from a spec among them) escaped, at most ``limit`` characters."""
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, DriverError):
        text = f"{type(exc).__name__}: {text}"
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class LoopStats:
    """What the loop contained, for ``/metrics`` (read at scrape time, from any thread):
    ``failures[stage]`` counts per-task or per-host failures by stage (``STAGES``),
    ``step_failures[step]`` whole steps that raised (the database down, a bug), and
    ``quarantined`` maps each quarantined host to why. Names no tenant.

    Timing (``timed``): the loop times each tick (``"tick"``) and each step by its name
    (``"schedule"`` is the scheduling cycle: snapshot, decide, apply); ``durations()`` gives a
    histogram per name over ``DURATION_BUCKETS`` and the wall-clock time the last tick ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: dict[str, int] = dict.fromkeys(STAGES, 0)
        self.step_failures: dict[str, int] = {}
        self.quarantined: dict[str, str] = {}
        #: name -> [count per bucket (not cumulative) ..., count above the last bound, sum]
        self._durations: dict[str, list[float]] = {}
        self.last_tick_at: float | None = None

    def failed(self, stage: str, n: int = 1) -> None:
        with self._lock:
            self.failures[stage] = self.failures.get(stage, 0) + n

    def step_failed(self, step: str) -> None:
        with self._lock:
            self.step_failures[step] = self.step_failures.get(step, 0) + 1

    def set_quarantined(self, hosts: Mapping[str, str]) -> None:
        with self._lock:
            self.quarantined = dict(hosts)

    def read(self) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
        """(failures by stage, step failures by step, quarantined hosts), copied."""
        with self._lock:
            return dict(self.failures), dict(self.step_failures), dict(self.quarantined)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Observe how long the ``with`` block took under ``name`` (also when it raises); a
        ``"tick"`` sets ``last_tick_at``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            ended = time.time() if name == "tick" else None
            self.observe(name, time.perf_counter() - start, ended)

    def observe(self, name: str, seconds: float, ended_at: float | None = None) -> None:
        with self._lock:
            h = self._durations.get(name)
            if h is None:
                h = self._durations[name] = [0.0] * (len(DURATION_BUCKETS) + 2)
            i = next((k for k, le in enumerate(DURATION_BUCKETS) if seconds <= le),
                     len(DURATION_BUCKETS))
            h[i] += 1
            h[-1] += seconds
            if ended_at is not None:
                self.last_tick_at = ended_at

    def durations(self) -> tuple[dict[str, tuple[list[tuple[str, float]], float]], float | None]:
        """({name: (cumulative buckets as ``(le, count)`` ending with ``+Inf``, sum)}, the
        wall-clock time the last tick ended or None), copied."""
        with self._lock:
            out = {}
            for name, h in self._durations.items():
                acc, buckets = 0.0, []
                for le, n in zip((*(str(b) for b in DURATION_BUCKETS), "+Inf"), h[:-1]):
                    acc += n
                    buckets.append((le, acc))
                out[name] = (buckets, h[-1])
            return out, self.last_tick_at
