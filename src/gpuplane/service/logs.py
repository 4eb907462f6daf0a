"""How the API reads task logs: a small protocol the runtime's driver side implements.

``create_app(settings, log_source=...)`` receives one ``LogSource``. The API authorises the
caller (``workload.logs``; auditors do not have it), resolves the workload and task, and then
calls ``read_log`` with a ``TaskLogRef``. Implementations must be cheap and non-blocking: return
what is available now; the API polls again for ``follow``.

Contract of ``read_log(ref, offset, limit)``:

- ``offset`` is a byte offset into the task's log for ``ref.attempt`` (0 = the beginning);
  ``limit`` the most bytes to return (the API caps it at 1 MiB).
- Return ``LogChunk(data, next_offset, complete)``: ``data`` the bytes from ``offset``,
  ``next_offset = offset + len(data)``, ``complete`` True once the task's attempt has ended and
  everything was returned. Return an empty chunk (not an error) when nothing is there yet.
- Return ``None`` when this source has no log for that task at all (for example a simulated
  host's task); the API then answers an empty log with ``X-Gpuplane-Log-Available: false``.
- Never raise for a missing file; raise only for real I/O failures (they become 500s).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class TaskLogRef:
    """Which log: a task (by index) of a workload, at one attempt, where it was placed."""

    workload_id: str
    workload_name: str
    project: str
    task_index: int
    attempt: int
    host: str | None
    simulated: bool
    handle: Mapping[str, object] | None = field(default=None)


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    next_offset: int
    complete: bool


@runtime_checkable
class LogSource(Protocol):
    def read_log(self, ref: TaskLogRef, offset: int, limit: int) -> LogChunk | None:
        """See the module docstring for the contract."""
        ...


class NoLogs:
    """The default ``LogSource``: knows no logs (every read returns None)."""

    def read_log(self, ref: TaskLogRef, offset: int, limit: int) -> LogChunk | None:
        return None
