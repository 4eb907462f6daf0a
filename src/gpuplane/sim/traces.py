"""Trace readers for the sharing simulator: multi-tenant job histories and team quotas.

Formats (one registry, detected from the CSV header, STYLE habit 4):

======== ============================================== ==========================================
name     jobs header                                    quotas header
======== ============================================== ==========================================
philly   ``timestamp,duration,num_gpus,...,cluster``     ``vc,node num`` (hosts of 8 GPUs)
generic  ``submit_time,duration,gpus,tenant``            ``tenant,gpus``
======== ============================================== ==========================================

Times are seconds since the epoch: ISO 8601 (``2017-10-09 07:01:55`` or ``...T...Z``; no zone means
UTC) or plain numbers of seconds (any origin, e.g. 0 at the start of the trace). Durations are
seconds. Every problem is reported with its file, line and column, all of them at once (up to 20).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gpuplane.domain.errors import FieldError, InvalidInput

MAX_ERRORS = 20


@dataclass(frozen=True)
class TraceJob:
    """One job of a trace: ``submit`` and ``duration`` in seconds, ``gpus`` whole GPUs."""

    id: str
    tenant: str
    submit: float
    duration: float
    gpus: int


@dataclass(frozen=True)
class TeamQuota:
    """A team's guaranteed GPUs (its dedicated cluster size in the sprawl benchmark)."""

    tenant: str
    gpus: int


def parse_time(text: str) -> float:
    """Seconds since the epoch from a number of seconds or an ISO 8601 time (naive = UTC).
    Raises ``ValueError`` with a readable message."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise ValueError(f"not a finite number: {text!r}")
        return v
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected seconds or an ISO 8601 time, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def format_time(t: float) -> str:
    """ISO 8601 (UTC) for times that look like epoch seconds, else ``<t>s``."""
    if t > 1e8:
        return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{t:g}s"


class _Errors:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[FieldError] = []
        self.count = 0

    def add(self, line: int, column: str, msg: str) -> None:
        self.count += 1
        if len(self.items) < MAX_ERRORS:
            self.items.append(FieldError(f"{self.path.name}:{line}:{column}", msg))

    def raise_if_any(self, what: str) -> None:
        if self.count:
            more = f" (showing {MAX_ERRORS} of {self.count})" if self.count > MAX_ERRORS else ""
            raise InvalidInput(f"{self.count} invalid value(s) in {what} {self.path}{more}; "
                               "fix the rows listed", self.items, code="gpuplane.trace.invalid")


def _open(path: str | Path) -> tuple[Path, list[str], list[dict[str, str]]]:
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"no such file: {p}", [FieldError("path", str(p))],
                           code="gpuplane.trace.not_found")
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvalidInput(f"cannot read {p} as CSV: {e}", [FieldError(p.name, "not a UTF-8 CSV")],
                           code="gpuplane.trace.format") from None
    return p, header, rows


def _detect(path: Path, header: list[str], formats: dict[str, tuple[str, ...]]) -> str:
    for name, cols in formats.items():
        if all(c in header for c in cols):
            return name
    expected = "; ".join(f"{n}: {','.join(c)}" for n, c in formats.items())
    raise InvalidInput(f"unrecognised CSV header in {path}: {','.join(header) or '(empty)'}",
                       [FieldError(f"{path.name}:1", f"expected columns for one of: {expected}")],
                       code="gpuplane.trace.format")


JOB_FORMATS: dict[str, tuple[str, ...]] = {
    "philly": ("timestamp", "duration", "num_gpus", "cluster"),
    "generic": ("submit_time", "duration", "gpus", "tenant"),
}
QUOTA_FORMATS: dict[str, tuple[str, ...]] = {
    "philly": ("vc", "node num"),
    "generic": ("tenant", "gpus"),
}
PHILLY_GPUS_PER_HOST = 8


def read_jobs(path: str | Path) -> tuple[str, list[TraceJob]]:
    """Read a jobs CSV in any known format; returns ``(format name, jobs sorted by submit)``.
    Raises ``InvalidInput`` (``gpuplane.trace.*``) listing every bad cell."""
    p, header, reader = _open(path)
    fmt = _detect(p, header, JOB_FORMATS)
    t_col, d_col, g_col, who_col = JOB_FORMATS[fmt]
    errors = _Errors(p)
    jobs: list[TraceJob] = []
    for n, row in enumerate(reader, start=2):
        ok = True
        try:
            submit = parse_time(row.get(t_col) or "")
        except ValueError as e:
            errors.add(n, t_col, str(e))
            ok = False
        duration = _number(errors, n, d_col, row.get(d_col), minimum=0.0)
        gpus = _integer(errors, n, g_col, row.get(g_col), minimum=1)
        tenant = (row.get(who_col) or "").strip()
        if not tenant:
            errors.add(n, who_col, "must not be empty")
            ok = False
        if ok and duration is not None and gpus is not None:
            jobs.append(TraceJob(f"j{n - 1}", tenant, submit, duration, gpus))
    errors.raise_if_any("jobs file")
    if not jobs:
        raise InvalidInput(f"no jobs in {p}", [FieldError(p.name, "the file has a header only")],
                           code="gpuplane.trace.empty")
    jobs.sort(key=lambda j: (j.submit, int(j.id[1:])))
    return fmt, jobs


def read_quotas(path: str | Path) -> tuple[str, list[TeamQuota]]:
    """Read a quotas CSV (Philly ``vc,node num`` in hosts of 8 GPUs, or ``tenant,gpus``)."""
    p, header, reader = _open(path)
    fmt = _detect(p, header, QUOTA_FORMATS)
    who_col, amount_col = QUOTA_FORMATS[fmt]
    per = PHILLY_GPUS_PER_HOST if fmt == "philly" else 1
    errors = _Errors(p)
    out: dict[str, TeamQuota] = {}
    for n, row in enumerate(reader, start=2):
        tenant = (row.get(who_col) or "").strip()
        amount = _integer(errors, n, amount_col, row.get(amount_col), minimum=0)
        if not tenant:
            errors.add(n, who_col, "must not be empty")
        elif tenant in out:
            errors.add(n, who_col, f"duplicate tenant {tenant!r}")
        elif amount is not None:
            out[tenant] = TeamQuota(tenant, amount * per)
    errors.raise_if_any("quotas file")
    if not out:
        raise InvalidInput(f"no quotas in {p}", [FieldError(p.name, "the file has a header only")],
                           code="gpuplane.trace.empty")
    return fmt, sorted(out.values(), key=lambda q: q.tenant)


def _number(errors: _Errors, line: int, col: str, raw: str | None, minimum: float) -> float | None:
    try:
        v = float((raw or "").strip())
    except ValueError:
        errors.add(line, col, f"must be a number, got {raw!r}")
        return None
    if not math.isfinite(v) or v < minimum:
        errors.add(line, col, f"must be a finite number >= {minimum:g}, got {raw!r}")
        return None
    return v


def _integer(errors: _Errors, line: int, col: str, raw: str | None, minimum: int) -> int | None:
    v = _number(errors, line, col, raw, float(minimum))
    if v is None:
        return None
    if v != int(v):
        errors.add(line, col, f"must be a whole number, got {raw!r}")
        return None
    return int(v)


READERS: dict[str, Callable[[str | Path], tuple[str, list]]] = {
    "jobs": read_jobs,
    "quotas": read_quotas,
}
