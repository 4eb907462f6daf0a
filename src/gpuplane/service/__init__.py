"""Use-cases of gpuplane (submit, cancel, register host, set quota, ...): authorisation lives here.

``Services(store, clock=..., log_source=...)`` bundles one service per concept; the API and
``gpuplane up`` create one per process. ``lifecycle`` holds the state changes the control loop
applies; ``logs.LogSource`` is the protocol the runtime implements to serve task logs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpuplane.service.auditing import AuditService
from gpuplane.service.auth import AuthService
from gpuplane.service.authz import Forbidden, Principal, Unauthenticated
from gpuplane.service.governance import GovernanceService, WitnessService
from gpuplane.service.inventory import InventoryService
from gpuplane.service.keystone import KeystoneService
from gpuplane.service.keystone_client import KeystoneConfig
from gpuplane.service.logs import LogChunk, LogSource, NoLogs, TaskLogRef
from gpuplane.service.policy import PolicyService
from gpuplane.service.tenancy import TenancyService
from gpuplane.service.usage import UsageService
from gpuplane.service.workloads import WorkloadService


class Services:
    """One of each use-case service over one store, clock and log source."""

    def __init__(self, store, clock: Callable[[], float] = time.time,  # noqa: ANN001
                 log_source: LogSource | None = None) -> None:
        self.store = store
        self.clock = clock
        self.log_source = log_source or NoLogs()
        args = (store, clock, self.log_source)
        self.auth = AuthService(*args)
        self.inventory = InventoryService(*args)
        self.tenancy = TenancyService(*args)
        self.policy = PolicyService(*args)
        self.workloads = WorkloadService(*args)
        self.usage = UsageService(*args)
        self.audit = AuditService(*args)
        self.governance = GovernanceService(*args)
        self.witness = WitnessService(*args)
        self._keystone: tuple[KeystoneService | None] | None = None  # (service,) once decided
        self._keystone_lock = threading.Lock()

    def keystone(self, settings: Any) -> KeystoneService | None:  # noqa: ANN401
        """Keystone identity (``X-Auth-Token``) as ``settings`` configure it, created on first
        use and kept; None when GPUPLANE_KEYSTONE_URL is not set."""
        if self._keystone is None:
            with self._keystone_lock:
                if self._keystone is None:
                    config = KeystoneConfig.from_settings(settings)
                    self._keystone = (None if config is None else KeystoneService(
                        self.store, self.clock, self.log_source, config=config, auth=self.auth),)
        return self._keystone[0]

    def bootstrap_admin(self, admin_name: str = "admin", *, new_token_if_exists: bool = False
                        ) -> str | None:
        """See ``AuthService.bootstrap_admin``."""
        return self.auth.bootstrap_admin(admin_name, new_token_if_exists=new_token_if_exists)


__all__ = ["Forbidden", "LogChunk", "LogSource", "NoLogs", "Principal", "Services",
           "TaskLogRef", "Unauthenticated"]
