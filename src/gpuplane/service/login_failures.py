"""Failed authentications per source address: throttling and aggregated audit, in memory.

A flood of bad tokens must neither fill the audit chain (every entry takes its global write
lock) nor slow other tenants. So, per source address (an IPv6 address counts as its /64):

* **Throttle.** After ``limit`` failures inside one ``window_s`` window (opened by the first
  failure) the source is refused with 429 until the window ends, before its token is even
  hashed or looked up. A valid token from that source is refused too; other sources are not
  affected. Successes never reset the count.
* **Aggregated audit.** Every refused attempt (failure or throttled) is counted. A source
  writes at most one ``auth.login_failed`` row per ``AUDIT_EVERY_S``: the first refusal after a
  quiet minute is written at once; later ones are counted in memory and written as one row
  (``detail``: source, count, window_start, window_end, reasons, users) once the minute since
  the source's last row has passed: by the next refusal from that source, by the periodic
  ``due`` sweep, or by ``drain`` at shutdown. So every failure reaches the audit, in aggregate;
  a process killed with ``kill -9`` loses at most the last minute's counts.

State is per process: with several API processes (PostgreSQL), each throttles and writes
independently, i.e. a source gets ``limit`` tries per window *per process* and each process
writes at most one row per source per minute. The table is bounded (``max_sources``): quiet
entries are evicted and, when it is still full, new sources share the ``OVERFLOW`` entry, which
is audited but never throttled (throttling it would lock every new client out).
"""

from __future__ import annotations

import collections
import ipaddress
import threading
from dataclasses import dataclass, field
from typing import Any

AUDIT_EVERY_S = 60.0
OVERFLOW = "other-sources"
MAX_USERS_LISTED = 20


def source_key(host: str | None) -> str:
    """The throttling key of a peer address: the address itself, an IPv6 address's /64."""
    if not host:
        return "unknown"
    if ":" not in host:
        return host
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{addr}/64", strict=False))
    return host


@dataclass
class _Source:
    window_start: float = 0.0
    failures: int = 0
    pending: int = 0
    pending_since: float | None = None
    pending_until: float | None = None
    reasons: collections.Counter = field(default_factory=collections.Counter)
    users: set[str] = field(default_factory=set)
    last_row_at: float | None = None


@dataclass(frozen=True)
class FailureRow:
    """One aggregated ``auth.login_failed`` audit row to write."""

    source: str
    detail: dict[str, Any]


class FailedLogins:
    """The per-source ledger. Thread-safe; does no I/O: callers write the rows it returns."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, max_sources: int = 100_000
                 ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_sources = max_sources
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}

    def check(self, key: str, now: float) -> tuple[float | None, FailureRow | None]:
        """Before a token is looked at: seconds to wait if ``key`` is throttled (the attempt
        is then counted as refused) or None, and a row to write if one is due."""
        with self._lock:
            s = self._sources.get(key)
            if s is None or key == OVERFLOW or s.failures < self.limit:
                return None, None
            end = s.window_start + self.window_s
            if now >= end:
                return None, None
            self._count(s, "throttled", None, now)
            return end - now, self._row_if_due(key, s, now)

    def failed(self, key: str, reason: str, user: str | None, now: float) -> FailureRow | None:
        """Record one failed authentication; returns the row to write now, if any."""
        with self._lock:
            s = self._sources.get(key)
            if s is None:
                key = self._admit_key(key, now)
                s = self._sources.setdefault(key, _Source(window_start=now))
            if now >= s.window_start + self.window_s:
                s.window_start, s.failures = now, 0
            s.failures += 1
            self._count(s, reason, user, now)
            return self._row_if_due(key, s, now)

    def due(self, now: float) -> list[FailureRow]:
        """Rows of every source whose minute has passed; evicts quiet entries."""
        with self._lock:
            rows = [r for k, s in list(self._sources.items())
                    if (r := self._row_if_due(k, s, now)) is not None]
            self._evict(now)
            return rows

    def drain(self) -> list[FailureRow]:
        """Every pending count as rows, now (shutdown)."""
        with self._lock:
            return [self._row(k, s, s.pending_until or 0.0) for k, s in self._sources.items()
                    if s.pending]

    def restore(self, row: FailureRow) -> None:
        """Put back the counts of a row that could not be written (database unavailable)."""
        with self._lock:
            s = self._sources.setdefault(row.source, _Source())
            d = row.detail
            s.pending += d["count"]
            s.pending_since = min(t for t in (s.pending_since, d["window_start"]) if t is not None)
            s.pending_until = max(t for t in (s.pending_until, d["window_end"]) if t is not None)
            s.reasons.update(d["reasons"])
            s.users.update(d.get("users", ()))
            s.last_row_at = None

    def pending(self) -> int:
        with self._lock:
            return sum(s.pending for s in self._sources.values())

    # -- internals (lock held) --------------------------------------------------------------

    @staticmethod
    def _count(s: _Source, reason: str, user: str | None, now: float) -> None:
        s.pending += 1
        s.reasons[reason] += 1
        if s.pending_since is None:
            s.pending_since = now
        s.pending_until = now
        if user is not None and len(s.users) < MAX_USERS_LISTED:
            s.users.add(user)

    def _row_if_due(self, key: str, s: _Source, now: float) -> FailureRow | None:
        if not s.pending or (s.last_row_at is not None and now - s.last_row_at < AUDIT_EVERY_S):
            return None
        s.last_row_at = now
        return self._row(key, s, now)

    @staticmethod
    def _row(key: str, s: _Source, now: float) -> FailureRow:
        detail = {"source": key, "count": s.pending, "window_start": s.pending_since,
                  "window_end": s.pending_until if s.pending_until is not None else now,
                  "reasons": dict(sorted(s.reasons.items()))}
        if s.users:
            detail["users"] = sorted(s.users)
        s.pending, s.pending_since, s.pending_until = 0, None, None
        s.reasons.clear()
        s.users.clear()
        return FailureRow(key, detail)

    def _admit_key(self, key: str, now: float) -> str:
        if len(self._sources) < self.max_sources:
            return key
        self._evict(now)
        return key if len(self._sources) < self.max_sources else OVERFLOW

    def _evict(self, now: float) -> None:
        quiet = [k for k, s in self._sources.items()
                 if not s.pending and now >= s.window_start + self.window_s
                 and (s.last_row_at is None or now - s.last_row_at >= AUDIT_EVERY_S)]
        for k in quiet:
            del self._sources[k]
