"""Weighted, hierarchical dominant-resource fair share with usage decayed over a half-life.

A project's *share* of a resource (GPU milli, CPU milli, memory MiB) is what it holds now plus its
decayed past usage, divided by the cluster's capacity of that resource; its *dominant share* is the
largest of those, divided by its weight. Organisations get the same over the sum of their projects.
The queue serves the organisation with the smallest dominant share first, then inside it the
project with the smallest, so a team that used the pool heavily in the last half-lives yields to
one that did not (DRF, Ghodsi et al., NSDI'11; decayed usage as in Slurm's fair-share factor).

:class:`UsageHistory` is a value the caller keeps between cycles (the simulator and the control
loop each own one); it never reads a clock: ``advance(now, holding)`` integrates what was held since
the previous call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Vector = tuple[float, float, float]   # (gpu milli, cpu milli, memory MiB)
ZERO: Vector = (0.0, 0.0, 0.0)


def _add(a: Vector, b: Vector, k: float = 1.0) -> Vector:
    return (a[0] + k * b[0], a[1] + k * b[1], a[2] + k * b[2])


@dataclass
class UsageHistory:
    """Exponentially decayed resource usage per project.

    ``level[p]`` is the decayed *average* holding of project ``p`` (same units as a holding), i.e.
    ``integral of holding(t) * 2^(-(now-t)/half_life) dt`` normalised by ``half_life / ln 2``, so a
    project holding ``x`` steadily converges to ``x``. ``half_life_s <= 0`` disables history
    (fair share then uses current holdings only).
    """

    half_life_s: float = 7 * 24 * 3600.0
    level: dict[str, Vector] = field(default_factory=dict)
    at: float | None = None

    def advance(self, now: float, holding: Mapping[str, Vector]) -> None:
        """Account ``holding`` (per project, assumed constant since the previous call) up to
        ``now``. Calls with ``now`` earlier than the last one are ignored for decay."""
        if self.half_life_s <= 0:
            self.at = now
            return
        dt = 0.0 if self.at is None else max(0.0, now - self.at)
        self.at = now if self.at is None else max(self.at, now)
        if dt == 0.0:
            return
        keep = math.pow(0.5, dt / self.half_life_s)
        level = self.level
        # every project already has a level (the usual case): update in place, no key added
        projects = level if holding.keys() <= level.keys() else set(level) | set(holding)
        for p in projects:
            old = level.get(p, ZERO)
            cur = holding.get(p, ZERO)
            level[p] = (old[0] * keep + cur[0] * (1 - keep),
                        old[1] * keep + cur[1] * (1 - keep),
                        old[2] * keep + cur[2] * (1 - keep))

    def get(self, project: str) -> Vector:
        return self.level.get(project, ZERO)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy: ``{"version": 1, "half_life_s", "at", "level": {project:
        [gpu, cpu, mem]}}``. ``from_dict(json.loads(json.dumps(h.to_dict())))`` equals ``h``
        exactly (floats survive JSON, which writes the shortest repr that reads back the same)."""
        return {"version": 1, "half_life_s": self.half_life_s, "at": self.at,
                "level": {p: [v[0], v[1], v[2]] for p, v in sorted(self.level.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageHistory:
        """Inverse of :meth:`to_dict`. Raises ``ValueError`` on an unknown version or a malformed
        entry (the caller may then start from an empty history)."""
        if data.get("version") != 1:
            raise ValueError(f"unknown usage history version {data.get('version')!r}; known: 1")
        try:
            at = data.get("at")
            level = {str(p): (float(v[0]), float(v[1]), float(v[2]))
                     for p, v in dict(data.get("level") or {}).items()}
            return cls(float(data["half_life_s"]), level, None if at is None else float(at))
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"malformed usage history: {exc}") from None


def dominant_share(v: Vector, capacity: Vector, weight: float) -> float:
    """``max_r v[r] / capacity[r]`` over resources with capacity, divided by ``weight``."""
    if len(v) == 3 and capacity[0] > 0 and capacity[1] > 0 and capacity[2] > 0:
        # the usual case, unrolled: the same quotients, the largest (0 at least) kept
        return max(0.0, v[0] / capacity[0], v[1] / capacity[1], v[2] / capacity[2]) / weight
    best = 0.0
    for x, c in zip(v, capacity):
        if c > 0:
            s = x / c
            if s > best:
                best = s
    return best / weight


@dataclass
class ShareBook:
    """Current dominant shares for one cycle; updated as the cycle admits work.

    ``demand`` for a project = current holding + history level; organisation vectors are sums.
    """

    capacity: Vector
    project_weight: Mapping[str, float]
    project_org: Mapping[str, str]
    org_weight: Mapping[str, float]
    project_vec: dict[str, Vector] = field(default_factory=dict)
    org_vec: dict[str, Vector] = field(default_factory=dict)

    def charge(self, project: str, v: Vector, k: float = 1.0) -> None:
        """Add ``k * v`` to the project (and its organisation)."""
        self.project_vec[project] = _add(self.project_vec.get(project, ZERO), v, k)
        org = self.project_org.get(project, project)
        self.org_vec[org] = _add(self.org_vec.get(org, ZERO), v, k)

    def charge_all(self, items: Iterable[tuple[str, Sequence[float]]]) -> None:
        """:meth:`charge` each ``(project, vector)`` in order (``k = 1``), in one loop."""
        pv, ov, org_of = self.project_vec, self.org_vec, self.project_org
        for project, v in items:
            a = pv.get(project, ZERO)
            pv[project] = (a[0] + 1.0 * v[0], a[1] + 1.0 * v[1], a[2] + 1.0 * v[2])
            org = org_of.get(project, project)
            b = ov.get(org, ZERO)
            ov[org] = (b[0] + 1.0 * v[0], b[1] + 1.0 * v[1], b[2] + 1.0 * v[2])

    def key(self, project: str) -> tuple[float, float]:
        """``(organisation dominant share, project dominant share)``: smaller is served first."""
        org = self.project_org.get(project, project)
        return (dominant_share(self.org_vec.get(org, ZERO), self.capacity,
                               self.org_weight.get(org, 1.0)),
                dominant_share(self.project_vec.get(project, ZERO), self.capacity,
                               self.project_weight.get(project, 1.0)))

    def project_share(self, project: str) -> float:
        """Dominant share of ``project`` over its weight (``key(project)[1]``)."""
        return dominant_share(self.project_vec.get(project, ZERO), self.capacity,
                              self.project_weight.get(project, 1.0))

    def org_share(self, org: str) -> float:
        """Dominant share of organisation ``org`` over its weight."""
        return dominant_share(self.org_vec.get(org, ZERO), self.capacity,
                              self.org_weight.get(org, 1.0))
