"""Domain errors with stable codes.

Every error gpuplane raises towards a user carries a stable string ``code``
(``gpuplane.<area>.<what>``) and, where it concerns input, the field paths at
fault. ``api/problems.py`` alone maps codes to HTTP status; the CLI maps the
same codes to exit codes. Do not change or reuse the string values of codes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field: ``loc`` is a dotted path (``spec.tasks[0].gpus``)."""

    loc: str
    msg: str


@dataclass
class GpuplaneError(Exception):
    """Base of every error that may reach a user.

    ``code`` is stable; ``detail`` is one human sentence saying what to do next;
    ``errors`` lists field-level problems (all of them, not just the first).
    """

    code: str
    detail: str
    errors: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.errors:
            return self.detail
        fields = "; ".join(f"{e.loc}: {e.msg}" for e in self.errors)
        return f"{self.detail} ({fields})"


class InvalidInput(GpuplaneError):
    """The input is malformed or out of range; nothing was changed."""

    def __init__(self, detail: str, errors: list[FieldError] | None = None,
                 code: str = "gpuplane.input.invalid") -> None:
        super().__init__(code=code, detail=detail, errors=errors or [])


class NotFound(GpuplaneError):
    def __init__(self, detail: str, code: str = "gpuplane.not_found") -> None:
        super().__init__(code=code, detail=detail)


class Conflict(GpuplaneError):
    """A concurrent change won (generation mismatch) or the object already exists."""

    def __init__(self, detail: str, code: str = "gpuplane.conflict") -> None:
        super().__init__(code=code, detail=detail)


class LeaseLost(Conflict):
    """A write fenced by a lease grant was refused: the lease changed hands (its epoch moved
    on) or expired since it was granted. Nothing was written; the writer must stop leading.
    A ``Conflict``, so code that only knows conflicts treats it safely (nothing written)."""

    def __init__(self, detail: str, code: str = "gpuplane.lease.lost") -> None:
        super().__init__(detail=detail, code=code)


class TooManyRequests(GpuplaneError):
    """A per-caller or per-source limit is reached; try again after ``retry_after_s`` seconds
    (the API answers 429 with a ``Retry-After`` header)."""

    def __init__(self, detail: str, retry_after_s: float, code: str = "gpuplane.rate_limited"
                 ) -> None:
        super().__init__(code=code, detail=detail)
        self.retry_after_s = retry_after_s


def nearest_name(value: str, choices: Iterable[str]) -> str | None:
    """The name in ``choices`` a user most likely meant by ``value`` (for "did you mean"):
    the same but for case, else difflib's closest at a 0.6 ratio, else the longest choice of
    three characters or more that ``value`` starts with or that starts with ``value``
    (``gpus_per_tsk`` -> ``gpus``); None when none is near. ``value`` itself never."""
    pool = sorted({c for c in choices if c and c != value})
    low = value.lower()
    for c in pool:
        if c.lower() == low:
            return c
    close = difflib.get_close_matches(value, pool, n=1, cutoff=0.6)
    if close:
        return close[0]
    stem = [c for c in pool if min(len(c), len(value)) >= 3
            and (low.startswith(c.lower()) or c.lower().startswith(low))]
    return max(stem, key=len) if stem else None
