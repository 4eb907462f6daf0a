"""Leadership of the control loop: the scheduler lease held, renewed, lost and released.

``LeaseHolder`` is the lease half of ``ControlLoop`` (``control/loop.py``): the database decides,
on its own clock, who holds the lease ``scheduler`` and grants an epoch; the loop acts only
while it holds a grant, and writes through a ``FencedStore`` whose every transaction checks
that epoch (``store/leases.py``). Each change (acquired, renewed, lost with why, released) is
logged and appended to ``lease_log`` (JSON lines) when one is given.

The host class sets ``store``, ``holder``, ``lease_ttl_s``, ``clock``, ``lease_log``,
``grant`` (None), ``leader_until`` (0.0), ``_tick_grant`` (None) and ``_lease_lock``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuplane.domain.errors import LeaseLost
from gpuplane.store.leases import FencedStore, LeaseGrant

log = logging.getLogger("gpuplane.control")


class LeaseHolder:
    store: Any
    holder: str
    lease_ttl_s: float
    clock: Callable[[], float]
    lease_log: Path | None
    grant: LeaseGrant | None
    leader_until: float
    _tick_grant: LeaseGrant | None
    _lease_lock: threading.Lock

    @property
    def is_leader(self) -> bool:
        return self.grant is not None and self.clock() < self.leader_until

    def _lease(self, now: float) -> bool:
        """Hold (acquire or renew) the scheduler lease; True while we are the leader.

        The database decides, on its own clock, whether the lease is ours, and grants an
        epoch. Locally we act only until two thirds of the TTL after ``now`` (taken before
        asking), so a process that stalls stops acting before its lease ends; should it act
        anyway, the epoch check inside each of its write transactions refuses the write."""
        try:
            grant = self.store.leases.try_acquire(self.holder, self.lease_ttl_s)
        except Exception as exc:  # noqa: BLE001 - database down: not the leader
            log.warning("lease: %s", exc)
            grant = None
        answered = self.clock()  # the grant holds from here (the call may have waited)
        with self._lease_lock:
            old = self.grant
            if grant is not None:
                self.grant = grant
                self.leader_until = now + self.lease_ttl_s * 2 / 3
                self._note("renewed" if old is not None and old.epoch == grant.epoch
                           else "acquired", answered)
            elif old is not None:
                self.grant, self.leader_until = None, 0.0
                self._note("lost", answered, "another process holds it now, or the database "
                           "did not answer", epoch=old.epoch)
            else:
                self.leader_until = 0.0
        return grant is not None

    def _lose(self, grant: LeaseGrant | None, why: str) -> None:
        """A fenced write of ``grant`` was refused: stop leading (unless the lease thread has
        meanwhile been granted a newer epoch)."""
        with self._lease_lock:
            if self.grant is None or (grant is not None and self.grant.epoch != grant.epoch):
                return
            self.grant, self.leader_until = None, 0.0
            self._note("lost", self.clock(), why, epoch=grant.epoch if grant else None)

    def _fenced(self) -> FencedStore:
        """The store as this tick writes to it: every write transaction checks our epoch and
        is counted (``_writes``: what a step read is reused until the loop writes)."""
        grant = self._tick_grant or self.grant
        if grant is None:
            raise LeaseLost(f"{self.holder} holds no scheduler lease")
        return FencedStore(self.store, grant, self._wrote)

    def _wrote(self) -> None:
        self._writes += 1

    def _note(self, what: str, now: float, why: str = "", epoch: int | None = None) -> None:
        if epoch is None:
            epoch = self.grant.epoch if self.grant is not None else None
        if what == "lost":
            log.warning("scheduler lease lost by %s (epoch %s): %s; this process stops "
                        "leading", self.holder, epoch, why)
        elif what != "renewed":
            log.info("scheduler lease %s by %s (epoch %s)", what, self.holder, epoch)
        if self.lease_log is not None:
            entry = {"holder": self.holder, "event": what, "at": now,
                     "valid_until": self.leader_until, "epoch": epoch}
            if why:
                entry["why"] = why
            with open(self.lease_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    def release(self) -> None:
        """Give the lease back (on shutdown) so another process takes over at once."""
        if self.grant is not None or self.leader_until:
            try:
                self.store.leases.release(self.holder)
            except Exception as exc:  # noqa: BLE001
                log.warning("lease release: %s", exc)
            self._note("released", self.clock())
            self.grant, self.leader_until = None, 0.0

    def _keep_lease(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._lease(self.clock())
            stop.wait(self.lease_ttl_s / 3)


def holder_id(host: str, port: int) -> str:
    """A lease holder name unique per process: host, port, pid, start time."""
    return f"{host}:{port}:{os.getpid()}:{int(time.time() * 1000) % 10**9}"
