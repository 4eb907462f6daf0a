"""Quota admission: guarantees, borrowing and lending inside a cohort.

Accounting (per flavour, milli-GPU). For each project ``q`` of a cohort, with guarantee ``G``,
lendable part ``L`` (``FlavorQuota.lendable``) and usage ``u``:

- ``private = G - L`` is never lent;
- the cohort pool is ``sum(L)``; ``q`` draws ``max(0, u - private)`` from it;
- admission requires ``sum(draw) <= pool`` and ``u <= G + borrowing_limit`` (the ceiling, invariant
  3); a project without a cohort needs ``u <= G``.

A project asking for work that keeps it within ``G`` is *entitled*: if borrowers hold the pool, it
may reclaim by preempting borrowers (their usage above ``G``). Borrowed capacity is everything a
project holds above ``G``. Without enforcement (``QuotaTree.enforce=False``) every check passes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from enum import Enum
from typing import NamedTuple

from gpuplane.domain.tenancy import QuotaTree


class QuotaFit(Enum):
    """Outcome of :meth:`QuotaLedger.check`, best first."""

    GUARANTEED = "guaranteed"        # fits within the project's guarantee and the pool
    BORROWING = "borrowing"          # fits by borrowing idle capacity of the cohort
    RECLAIM = "reclaim"              # within guarantee, but borrowers hold it: preempt to reclaim
    OVER_LIMIT = "over_limit"        # would exceed guaranteed + borrowing limit (or no cohort)
    COHORT_FULL = "cohort_full"      # would borrow, but the cohort has nothing idle to lend

    @property
    def admissible(self) -> bool:
        return self in (QuotaFit.GUARANTEED, QuotaFit.BORROWING)


class QuotaCheck(NamedTuple):
    """The answer of :meth:`QuotaLedger.check` (a named tuple: made for every decision)."""

    fit: QuotaFit
    usage_after: int
    guaranteed: int
    ceiling: int | None
    pool_free: int     # idle milli-GPU the cohort could still lend (before this request)
    reclaim: int = 0   # milli-GPU borrowers must give back (fit == RECLAIM)
    draw: int = 0      # milli-GPU this request would add to the cohort pool's draw


class _Static:
    """What a ledger derives from its (immutable) quota tree alone, computed once per tree:
    the cohort pools and, per ``(project, flavour)``, ``(cohort, private part, guarantee,
    ceiling when enforced)``."""

    __slots__ = ("pool", "consts")

    def __init__(self, quotas: QuotaTree) -> None:
        self.pool: dict[tuple[str, str], int] = {}
        for cohort, members in quotas.cohorts.items():
            for flavor in quotas.flavors:
                self.pool[(cohort, flavor)] = sum(
                    quotas.project(m).quota(flavor).lendable() for m in members)
        self.consts: dict[tuple[str, str], tuple[str | None, int, int, int | None]] = {}


_STATIC: weakref.WeakKeyDictionary[QuotaTree, _Static] = weakref.WeakKeyDictionary()


def _static(quotas: QuotaTree) -> _Static:
    st = _STATIC.get(quotas)
    if st is None:
        st = _STATIC[quotas] = _Static(quotas)
    return st


class QuotaLedger:
    """Usage per (project, flavour) and cohort pool draw, updated incrementally.

    ``add``/``remove`` are O(1); ``check`` is O(1). The ledger does not check; callers must only
    ``add`` after an admissible ``check`` (or a reclaim whose victims were removed first). What
    depends on the quota tree alone (pools, guarantees) is computed once per tree and shared by
    every ledger of that tree (one per cycle).
    """

    def __init__(self, quotas: QuotaTree) -> None:
        self.quotas = quotas
        self.usage: dict[tuple[str, str], int] = {}
        self._draw: dict[tuple[str, str], int] = {}   # (cohort, flavour) -> sum of draws
        self._borrowed: dict[tuple[str, str], int] = {}   # (cohort, flavour) -> sum above G
        static = _static(quotas)
        self._pool: dict[tuple[str, str], int] = static.pool   # read only
        self._consts = static.consts

    @classmethod
    def of(cls, quotas: QuotaTree, usages: Iterable[tuple[str, str, int]]) -> QuotaLedger:
        """A ledger holding ``(project, flavour, milli-GPU)`` usages (e.g. running tasks)."""
        ledger = cls(quotas)
        for project, flavor, units in usages:
            ledger.add(project, flavor, units)
        return ledger

    # -- accounting -------------------------------------------------------------------------
    def _private(self, project: str, flavor: str) -> int:
        q = self.quotas.project(project).quota(flavor)
        return q.guaranteed - q.lendable()

    def _const(self, key: tuple[str, str]) -> tuple[str | None, int, int, int | None]:
        """``(cohort, private part, guarantee, ceiling)`` of ``(project, flavour)``; the ceiling
        as ``QuotaTree.ceiling`` gives it when quotas are enforced."""
        c = self._consts.get(key)
        if c is None:
            project, flavor = key
            p = self.quotas.project(project)
            q = p.quota(flavor)
            private = self._private(project, flavor)
            g = private + q.lendable()
            if p.cohort is None:
                ceiling: int | None = q.guaranteed
            else:
                ceiling = None if q.borrowing_limit is None else q.guaranteed + q.borrowing_limit
            c = self._consts[key] = (p.cohort, private, g, ceiling)
        return c

    def _shift(self, project: str, flavor: str, delta: int) -> None:
        key = (project, flavor)
        before = self.usage.get(key, 0)
        after = before + delta
        if after < 0:
            raise ValueError(f"usage of {project}/{flavor} would go negative")
        self.usage[key] = after
        cohort, private, g, _ = self._const(key)
        if cohort is not None:
            ck = (cohort, flavor)
            self._draw[ck] = (self._draw.get(ck, 0) + max(0, after - private)
                              - max(0, before - private))
            self._borrowed[ck] = (self._borrowed.get(ck, 0) + max(0, after - g)
                                  - max(0, before - g))

    def load(self, usage: Iterable[tuple[tuple[str, str], int]]) -> None:
        """:meth:`add` each ``((project, flavour), milli-GPU)`` in order (one loop)."""
        mine, draw, borrowed = self.usage, self._draw, self._borrowed
        for key, units in usage:
            before = mine.get(key, 0)
            after = before + units
            if after < 0:
                raise ValueError(f"usage of {key[0]}/{key[1]} would go negative")
            mine[key] = after
            cohort, private, g, _ = self._const(key)
            if cohort is not None:
                ck = (cohort, key[1])
                draw[ck] = draw.get(ck, 0) + max(0, after - private) - max(0, before - private)
                borrowed[ck] = borrowed.get(ck, 0) + max(0, after - g) - max(0, before - g)

    def add(self, project: str, flavor: str, units: int) -> None:
        self._shift(project, flavor, units)

    def remove(self, project: str, flavor: str, units: int) -> None:
        self._shift(project, flavor, -units)

    def used(self, project: str, flavor: str) -> int:
        return self.usage.get((project, flavor), 0)

    def borrowed(self, project: str, flavor: str) -> int:
        """Milli-GPU the project holds above its guarantee."""
        g = self.quotas.project(project).quota(flavor).guaranteed
        return max(0, self.used(project, flavor) - g)

    def lent(self, project: str, flavor: str) -> int:
        """Idle lendable guarantee of the project (what others may be using of it)."""
        q = self.quotas.project(project).quota(flavor)
        return max(0, min(q.lendable(), q.guaranteed - self.used(project, flavor)))

    def within_guarantee(self, project: str, flavor: str, units: int) -> bool:
        """Would ``units`` more keep ``project`` within its guarantee of ``flavor``? (Always
        true without enforcement: nothing is then borrowed.)"""
        if not self.quotas.enforce:
            return True
        key = (project, flavor)
        return self.usage.get(key, 0) + units <= self._const(key)[2]

    def cohort_borrowed(self, cohort: str | None, flavor: str) -> int:
        """Milli-GPU of ``flavor`` held above their guarantees by members of ``cohort``."""
        return 0 if cohort is None else self._borrowed.get((cohort, flavor), 0)

    def pool_free(self, cohort: str | None, flavor: str) -> int:
        if cohort is None:
            return 0
        ck = (cohort, flavor)
        return self._pool.get(ck, 0) - self._draw.get(ck, 0)

    # -- decisions --------------------------------------------------------------------------
    def check(self, project: str, flavor: str, units: int) -> QuotaCheck:
        """Could ``project`` take ``units`` more milli-GPU of ``flavor`` now?"""
        key = (project, flavor)
        cohort, private, g, ceiling = self._const(key)
        after = self.usage.get(key, 0) + units
        pool_free = self.pool_free(cohort, flavor)
        if not self.quotas.enforce:
            return QuotaCheck(QuotaFit.GUARANTEED, after, g, None, pool_free)
        if ceiling is not None and after > ceiling:
            return QuotaCheck(QuotaFit.OVER_LIMIT, after, g, ceiling, pool_free)
        if cohort is None:
            return QuotaCheck(QuotaFit.GUARANTEED, after, g, ceiling, pool_free)
        before_draw = max(0, after - units - private)
        extra = max(0, after - private) - before_draw
        if extra <= pool_free:
            fit = QuotaFit.GUARANTEED if after <= g else QuotaFit.BORROWING
            return QuotaCheck(fit, after, g, ceiling, pool_free, 0, extra)
        if after <= g:
            return QuotaCheck(QuotaFit.RECLAIM, after, g, ceiling, pool_free, extra - pool_free,
                              extra)
        return QuotaCheck(QuotaFit.COHORT_FULL, after, g, ceiling, pool_free, 0, extra)

    def violations(self) -> list[str]:
        """Violations of invariant 3 as messages (empty when it holds): used by tests."""
        out = []
        for (project, flavor), used in sorted(self.usage.items()):
            ceiling = self.quotas.ceiling(project, flavor)
            if ceiling is not None and used > ceiling:
                out.append(f"{project}/{flavor}: {used} > ceiling {ceiling}")
        for (cohort, flavor), draw in sorted(self._draw.items()):
            if self.quotas.enforce and draw > self._pool.get((cohort, flavor), 0):
                out.append(f"cohort {cohort}/{flavor}: draws {draw} > pool")
        return out
