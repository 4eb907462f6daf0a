"""The ``nova`` driver: each gpuplane task runs as a Nova server (issue 9 item 4).

``start`` turns the task's cpu/memory and its placement on the host's GPUs into a flavor
(``vm_request_for`` + ``flavor_for``), makes sure the flavor exists and boots a server pinned
to the gpuplane host's Nova compute node (``availability_zone="nova:<host>"``; the host label
``gpuplane.io/nova-host`` names the compute host when it differs). ``observe`` maps the
server's status to a ``TaskState``; ``stop`` deletes the server.

Host lookup: the driver is given ``hosts``, a callable ``name -> HostView | None`` (the
embedding code builds it from the store); the driver never touches the store itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from gpuplane.domain.errors import GpuplaneError
from gpuplane.drivers.base import (DriverError, DriverHandle, PlacedDevices, TaskObservation,
                                   TaskSpec, TaskState)

NOVA_HOST_LABEL = "gpuplane.io/nova-host"


def state_of(status: str | None, *, fault: str | None = None, stopped: bool = False,
             stop_error: str | None = None) -> tuple[TaskState, str]:
    """A Nova server status (``None``: the server is gone) as a task state and message."""
    if stop_error is not None:
        return TaskState.FAILED, f"could not delete the server: {stop_error}"
    if status is None or status == "DELETED":
        if stopped:
            return TaskState.CANCELLED, "server deleted"
        return TaskState.LOST, "server is gone; gpuplane did not delete it"
    status = status.upper()
    if status == "ERROR":
        if stopped:
            return TaskState.FAILED, f"server went to ERROR while being deleted: {fault or 'no fault'}"
        return TaskState.FAILED, f"server is in ERROR: {fault or 'Nova gave no fault'}"
    if status in ("SHUTOFF", "STOPPED", "SOFT_DELETED"):
        return TaskState.SUCCEEDED if not stopped else TaskState.CANCELLED, f"server is {status}"
    # ACTIVE, BUILD, REBOOT, MIGRATING ...: the VM exists or is coming up
    return TaskState.RUNNING, f"server is {status}"


class NovaDriver:
    """Runs tasks as Nova servers. ``client``: a ``NovaClient`` (or ``connect`` builds one);
    ``hosts``: name -> ``HostView`` (GPU models/modes for the flavor); ``image_id``: the image."""

    kind: ClassVar[str] = "nova"

    def __init__(self, client: Any = None, *, image_id: str, url: str | None = None,
                 token: str = "admin", project_id: str | None = None,
                 user_id: str | None = None,
                 hosts: Callable[[str], Any] | None = None,
                 host_labels: Callable[[str], dict[str, str]] | None = None,
                 pin: bool = True, clock: Callable[[], float] = time.time, **_: Any) -> None:
        if client is None:
            if not url:
                raise DriverError("the nova driver needs GPUPLANE_NOVA_URL (the compute endpoint)")
            from gpuplane.drivers.openstack.nova import NovaClient
            kw: dict[str, Any] = {"token": token}
            if project_id:
                kw["project_id"] = project_id
            if user_id:
                kw["user_id"] = user_id
            client = NovaClient.connect(url, **kw)
        if not image_id:
            raise DriverError("the nova driver needs GPUPLANE_NOVA_IMAGE (an image id)")
        self.client = client
        self.image_id = image_id
        self.hosts = hosts or (lambda name: None)
        self.host_labels = host_labels or (lambda name: {})
        self.pin = pin
        self.clock = clock
        self._stopped: dict[str, float] = {}
        self._stop_errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def flavor(self, task: TaskSpec, placement: Any) -> Any:
        from gpuplane.drivers.openstack.nova_flavors import flavor_for, vm_request_for
        dev = placement if isinstance(placement, PlacedDevices) else PlacedDevices.from_placement(placement)
        profile = dev.mig[0][1] if dev.mig else None
        resources = {"cpu": (task.cpu_milli or 1000) / 1000.0, "memory_mib": task.memory_mib,
                     "gpus": len(dev.gpu_indices) if not dev.mig else 0,
                     "gpu_milli": dev.gpu_milli, "mig_profile": profile}
        placed = {"gpu_indices": dev.gpu_indices, "gpu_milli": dev.gpu_milli,
                  "mig": [{"gpu_index": i, "profile": p, "start": s} for i, p, s in dev.mig]}
        return flavor_for(vm_request_for(resources, placement=placed, host=self.hosts(dev.host)))

    def start(self, task: TaskSpec, placement: Any) -> DriverHandle:
        dev = placement if isinstance(placement, PlacedDevices) else PlacedDevices.from_placement(placement)
        name = f"gp-{task.workload}-{task.index}"[:60]
        try:
            spec = self.flavor(task, placement)
            flavor_id = self.client.ensure_flavor(spec)
            compute_host = (self.host_labels(dev.host) or {}).get(NOVA_HOST_LABEL, dev.host)
            meta = {"gpuplane.task": task.task_id, "gpuplane.host": dev.host}
            server_id = self.client.create_server(
                name, flavor_id, self.image_id, metadata=meta,
                availability_zone=f"nova:{compute_host}" if self.pin else None)
        except GpuplaneError as exc:
            raise DriverError(f"cannot boot task {task.task_id} on Nova host {dev.host}: {exc}") from None
        return DriverHandle(driver=self.kind, task_id=task.task_id, host=dev.host,
                            data={"server_id": server_id, "flavor_id": flavor_id,
                                  "compute_host": compute_host, "started_at": self.clock()})

    def stop(self, handle: DriverHandle, grace_s: float = 10.0) -> None:
        with self._lock:
            if handle.task_id in self._stopped:
                return
            self._stopped[handle.task_id] = self.clock()
        server_id = handle.data.get("server_id")
        if not server_id:
            return
        try:
            self.client.delete_server(str(server_id), wait=True, timeout_s=max(grace_s, 1.0))
        except GpuplaneError as exc:   # e.g. no Neutron: Nova cannot delete the server
            with self._lock:
                self._stop_errors[handle.task_id] = str(exc)

    def observe(self, handles: Sequence[DriverHandle]) -> list[TaskObservation]:
        out = []
        for h in handles:
            server_id = h.data.get("server_id")
            with self._lock:
                stopped_at = self._stopped.get(h.task_id)
                stop_error = self._stop_errors.get(h.task_id)
            if not server_id:
                out.append(TaskObservation(h.task_id, TaskState.LOST, message="handle has no server id"))
                continue
            try:
                st = self.client.state(str(server_id))
            except GpuplaneError as exc:
                if stop_error is None:
                    out.append(TaskObservation(h.task_id, TaskState.RUNNING,
                                               message=f"cannot read server {server_id}: {exc}"))
                    continue
                st = None
            state, msg = state_of(None if st is None else st.status,
                                  fault=None if st is None else st.fault,
                                  stopped=stopped_at is not None, stop_error=stop_error)
            out.append(TaskObservation(
                h.task_id, state, message=msg, signalled_at=stopped_at,
                ended_at=self.clock() if state.terminal and stopped_at is not None else None))
        return out
