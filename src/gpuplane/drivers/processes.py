"""Is a recorded process still the one we started? Linux ``/proc`` reads for the local driver:
a pid's kernel start time (tells a reused pid apart) and the boot id (a reboot ends them all)."""

from __future__ import annotations

import os
from pathlib import Path


def proc_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        if fields[0] == "Z":  # a zombie has ended; treat as gone
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def alive(pid: int, start_time: int | None) -> bool:
    if start_time is not None and Path("/proc").is_dir():
        return proc_start_time(pid) == start_time
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
