from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from gpuplane.drivers.base import PlacedDevices, TaskSpec
from gpuplane.drivers.local import LocalDriver
from gpuplane.drivers.sim import SimDriver


@dataclass
class Harness:
    """Builds a driver of one kind plus tasks that run for a while there."""

    kind: str
    home: Path
    make: Callable[[], Any]

    def task(self, task_id: str, seconds: float | None) -> TaskSpec:
        if self.kind == "local":
            cmd = ("sleep", str(seconds if seconds is not None else 3600))
            return TaskSpec(task_id=task_id, workload="w", command=cmd)
        return TaskSpec(task_id=task_id, workload="w", duration_s=seconds)

    def placement(self) -> PlacedDevices:
        return PlacedDevices(host="h1")


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture(params=["local", "sim"], ids=["local driver", "sim driver"])
def harness(request, tmp_path) -> Harness:
    if request.param == "local":
        return Harness("local", tmp_path, lambda: LocalDriver(tmp_path, host="h1"))
    return Harness("sim", tmp_path, lambda: SimDriver(tmp_path))


@pytest.fixture
def python() -> str:
    return sys.executable
