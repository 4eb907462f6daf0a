"""Task log files: one file per task under ``$GPUPLANE_HOME/logs``.

Both the local and the sim driver write here, so the API can serve logs of any
task by reading one file (``read_log``), whichever process started it.
"""

from __future__ import annotations

import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def log_path(log_dir: Path | str, task_id: str) -> Path:
    """The log file of ``task_id`` (the id is made filesystem-safe)."""
    return Path(log_dir) / f"{_UNSAFE.sub('_', task_id)}.log"


def read_log(path: Path | str, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
    """Read at most ``limit`` bytes from ``offset``; returns (data, next offset).

    A missing file reads as empty (the task may not have started yet).
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, offset))
            data = fh.read(max(0, limit))
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)
