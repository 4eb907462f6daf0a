"""Shared plumbing of the use-case services: the store, the clock, id generation, audit."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpuplane.governance import audit

if TYPE_CHECKING:
    from gpuplane.service.logs import LogSource
    from gpuplane.store import Store, Tx


class ServiceBase:
    """Each use-case service holds the store and an injected clock (seconds since the epoch)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time,
                 log_source: LogSource | None = None) -> None:
        self.store = store
        self.clock = clock
        self.log_source = log_source

    def now(self) -> float:
        return float(self.clock())

    @staticmethod
    def new_uid(prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(8)}"

    def audit(self, tx: Tx, actor: str, action: str, object_kind: str, object_id: Any, *,
              project_id: int | None = None, org_id: int | None = None, outcome: str = "ok",
              detail: dict[str, Any] | None = None) -> None:
        audit.record(tx, at=self.now(), actor=actor, action=action, object_kind=object_kind,
                     object_id=str(object_id), project_id=project_id, org_id=org_id,
                     outcome=outcome, detail=detail)
