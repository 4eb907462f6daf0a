"""Task logs for the API: the driver side of ``service.logs.LogSource``.

Both drivers write one file per task attempt under ``$GPUPLANE_HOME/logs``, named by
``execution.driver_task_id`` (so a log is found from a ``TaskLogRef`` alone, even before the
handle is stored or after a restart). ``complete`` is true once the attempt has ended (the
driver says so) and everything up to the end of the file was returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpuplane.control.execution import driver_task_id
from gpuplane.drivers.base import DriverHandle
from gpuplane.drivers.logs import log_path, read_log
from gpuplane.service.logs import LogChunk, TaskLogRef


class DriverLogSource:
    """Reads task logs written by the drivers of this installation."""

    def __init__(self, log_dir: Path | str, drivers: Mapping[str, Any]) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.drivers = dict(drivers)

    def read_log(self, ref: TaskLogRef, offset: int, limit: int) -> LogChunk | None:
        path = log_path(self.log_dir, driver_task_id(ref.workload_id, ref.task_index, ref.attempt))
        handle = None
        if ref.handle and "driver" in ref.handle:
            handle = DriverHandle.from_dict(ref.handle)
            flush = getattr(self.drivers.get(handle.driver), "flush", None)
            if flush is not None:  # a driver that writes logs off its caller's thread
                flush()
        if handle is None and not path.exists():
            return LogChunk(b"", offset, False)  # not started yet
        data, next_offset = read_log(path, offset, limit)
        ended = False
        if handle is not None:
            driver = self.drivers.get(handle.driver)
            check = getattr(driver, "ended", None)
            ended = bool(check(handle)) if check is not None else False
        complete = ended and len(data) < limit
        return LogChunk(data, next_offset, complete)
