"""What the control loop contains (DESIGN invariant 8): failure stages, their counts for
``/metrics``, and one-line renderings of exceptions for events and task messages."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

from gpuplane.drivers.base import DriverError

#: The stages a contained failure is counted under (``LoopStats.failures``).
STAGES = ("launch", "observe", "stop", "snapshot")
#: ``Task.reason`` of a task the loop failed because its driver could not observe it.
REASON_OBSERVE_FAILED = "ObserveFailed"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    ``quarantined`` maps each quarantined host to why. Names no tenant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: dict[str, int] = dict.fromkeys(STAGES, 0)
        self.step_failures: dict[str, int] = {}
        self.quarantined: dict[str, str] = {}

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
