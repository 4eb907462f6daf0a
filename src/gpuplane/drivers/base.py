"""The driver contract: how the control loop runs placed tasks somewhere.

A driver is a small required interface (``Driver``) plus opt-in capabilities
(``DiscoversInventory``, ``StreamsLogs``) tested with ``isinstance``. The loop
calls drivers only *after* the transaction that decided a placement has
committed, and reports what they observe back through another short
transaction. Drivers never touch the store.

Handles are plain data: the loop persists ``DriverHandle.to_dict()`` with the
task and hands the reloaded handle back after a restart, so a driver can adopt
a task it started in a previous life (or report it ``LOST``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gpuplane.domain.inventory import Host


class TaskState(str, enum.Enum):
    """What a driver can say about a task it was given.

    ``RUNNING``: the task is alive (also after adoption following a restart).
    ``SUCCEEDED`` / ``FAILED``: it ended by itself with exit code 0 / non-zero.
    ``CANCELLED``: it ended because ``stop`` was called.
    ``LOST``: the driver cannot find it any more and cannot say how it ended
    (for example the host rebooted while gpuplane was down).
    """

    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    LOST = "Lost"

    @property
    def terminal(self) -> bool:
        return self is not TaskState.RUNNING


@dataclass(frozen=True)
class PlacedDevices:
    """The devices a placement binds on one host, as the driver must expose them.

    ``gpu_indices`` are host-local GPU indices; ``gpu_milli`` is the per-GPU share (1000 for
    whole GPUs). ``mig`` lists the MIG instances as (GPU index, profile, start slot); a driver
    maps them to the instances' UUIDs (``mig_uuids``, when the caller already knows them).
    """

    host: str
    gpu_indices: tuple[int, ...] = ()
    gpu_milli: int = 1000
    mig: tuple[tuple[int, str, int], ...] = ()
    mig_uuids: tuple[str, ...] = ()

    @classmethod
    def from_placement(cls, placement: Any) -> PlacedDevices:
        """Build from a ``domain.requests.Placement`` (duck-typed: host, gpu_indices,
        gpu_milli, mig with ``MigInstanceRef``-like items: gpu_index, profile, start)."""
        refs = tuple((int(m.gpu_index), str(m.profile), int(m.start))
                     for m in getattr(placement, "mig", ()) or ())
        return cls(host=placement.host, gpu_indices=tuple(placement.gpu_indices),
                   gpu_milli=int(getattr(placement, "gpu_milli", 1000)), mig=refs)


@dataclass(frozen=True)
class TaskSpec:
    """One task of a workload, as a driver needs it to start it.

    ``task_id`` is the store's stable id (unique across restarts); ``index`` and
    ``world_size`` locate it inside its workload (a gang has world_size > 1);
    ``command`` is an argv list (empty: the task only occupies its resources, as
    simulated tasks do); ``duration_s`` is how long a simulated task runs
    (ignored by drivers that run real commands); ``master_addr``/``master_port``
    are set for gangs so members can rendezvous. ``project`` names the workload's project
    (the local driver runs each project's tasks as its own uid, and without a sandbox only
    the installation's own project); ``cpu_milli``/``memory_mib`` are the task's requests,
    enforced as limits where the driver can (``None``: no limit).
    """

    task_id: str
    workload: str
    index: int = 0
    world_size: int = 1
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    duration_s: float | None = None
    master_addr: str | None = None
    master_port: int | None = None
    project: str = ""
    project_id: int = 0
    cpu_milli: int | None = None
    memory_mib: int | None = None


@dataclass(frozen=True)
class DriverHandle:
    """What a driver returns from ``start``: enough to find the task again.

    ``data`` holds driver-specific JSON-compatible values (a pid, a start time,
    a log path). The loop stores ``to_dict()`` and rebuilds with ``from_dict``.
    """

    driver: str
    task_id: str
    host: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"driver": self.driver, "task_id": self.task_id, "host": self.host,
                "data": dict(self.data)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DriverHandle:
        return cls(driver=str(raw["driver"]), task_id=str(raw["task_id"]),
                   host=str(raw["host"]), data=dict(raw.get("data") or {}))


@dataclass(frozen=True)
class TaskObservation:
    """One observation of one task. ``exit_code`` is set for ended tasks that
    returned one (a signal ``n`` reads as ``128 + n``); ``message`` is a short
    human sentence ("exited with code 3", "adopted after restart",
    "process 4242 is gone; no exit status recorded").

    For tasks ended by ``stop`` (``CANCELLED``): ``forced`` is True when the task did not exit
    within its grace period and was killed, False when it exited by itself after the signal
    (``None``: the driver cannot tell). ``signalled_at`` / ``ended_at`` are wall-clock seconds of
    the stop signal and the end, when known. ``checkpointed_at`` is the wall-clock time of the
    task's last checkpoint as the task reported it (local driver: the modification time of
    ``$GPUPLANE_CHECKPOINT_FILE``), or ``None``."""

    task_id: str
    state: TaskState
    exit_code: int | None = None
    message: str = ""
    adopted: bool = False
    forced: bool | None = None
    signalled_at: float | None = None
    ended_at: float | None = None
    checkpointed_at: float | None = None


class Driver(Protocol):
    """Runs tasks. Implementations: ``local`` (real processes), ``sim`` (demo fleet).

    Contract:
    - ``start`` returns quickly (it does not wait for the task), and raises
      ``DriverError`` if the task could not be started at all; it is called at
      most once per task id.
    - ``stop`` is idempotent: stopping an ended or unknown task returns silently.
      It asks the task to end (the local driver: SIGTERM to its process group), waits up
      to ``grace_s`` seconds, then forces it (SIGKILL). It may block for up to ``grace_s``.
      Whether the task exited within the grace or was forced is reported by ``observe``
      (``TaskObservation.forced``), so it survives a restart of the loop.
    - ``observe`` never raises for an individual task: a task it cannot find is
      reported ``LOST``. It returns one observation per handle, in order, and
      may be called with handles from a previous process (adoption).
    """

    kind: ClassVar[str]

    def start(self, task: TaskSpec, placement: Any) -> DriverHandle: ...

    def stop(self, handle: DriverHandle, grace_s: float = 10.0) -> None: ...

    def observe(self, handles: Sequence[DriverHandle]) -> list[TaskObservation]: ...


@runtime_checkable
class DiscoversInventory(Protocol):
    """A driver that can say which hosts (and GPUs) it runs tasks on."""

    def discover(self) -> list[Host]: ...


@runtime_checkable
class StreamsLogs(Protocol):
    """A driver whose tasks write logs gpuplane can read.

    ``read_logs`` returns the bytes from ``offset`` (at most ``limit``) and the
    offset to continue from; an unknown task gives ``(b"", offset)``.
    """

    def read_logs(self, handle: DriverHandle, offset: int = 0,
                  limit: int = 1 << 20) -> tuple[bytes, int]: ...


class DriverError(Exception):
    """A task could not be started; ``str()`` says why in one sentence."""


def capabilities(driver: object) -> list[str]:
    """Names of the optional capabilities a driver implements (for ``get drivers``)."""
    return [name for name, proto in (("DiscoversInventory", DiscoversInventory),
                                     ("StreamsLogs", StreamsLogs))
            if isinstance(driver, proto)]
