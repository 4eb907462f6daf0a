"""Tenancy: organisations, projects, flavours, quotas, cohorts and priority classes.

The model (after Kueue's ClusterQueue/Cohort, with gpuplane's names):

- An **organisation** groups **projects** (teams). Both carry a fair-share ``weight``.
- A **flavour** is a GPU model or class (``"H100-80GB"``, ``"gpu"``). Every quantity of a flavour is
  counted in **milli-GPU** (1000 = one whole GPU), so whole GPUs, shared milli-GPU slices and MIG
  instances weigh what they use: a MIG profile ``"<k>g.<mem>"`` counts ``k/7`` of a GPU
  (see :func:`gpu_units`).
- Each project has, per flavour, a :class:`FlavorQuota`: ``guaranteed`` (always available to it,
  reclaimed by preemption if lent), ``borrowing_limit`` (how much above ``guaranteed`` it may use,
  ``None`` = no limit) and ``lending_limit`` (how much of its idle guarantee the cohort may borrow,
  ``None`` = all of it).
- Projects sharing a ``cohort`` name lend to and borrow from each other. A project without a cohort
  neither lends nor borrows.
- A :class:`PriorityClass` maps a name to an integer ``value`` (higher runs first) and says whether
  work of that class may be preempted.

Invariant 3 (DESIGN.md): a project never holds more than ``guaranteed + borrowing_limit`` of a
flavour; the scheduler (``scheduling/admission/quota.py``) enforces it, :meth:`QuotaTree.ceiling`
states it.

Everything here is immutable and validated on construction; bad input raises
:class:`~gpuplane.domain.errors.InvalidInput` listing every faulty field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gpuplane.domain.errors import FieldError, InvalidInput

MILLI = 1000
"""Units of one whole GPU in every flavour."""

MIG_SLICES = 7
"""Compute slices of a full MIG-capable GPU (A100/H100: 7g is the whole GPU)."""

DEFAULT_FLAVOR = "gpu"

_MIG_RE = re.compile(r"^(\d)g\.")


def gpu_units(gpus: int, gpu_milli: int = MILLI, mig_profile: str | None = None) -> int:
    """Milli-GPU a request uses: ``gpus * 1000`` whole, ``gpu_milli`` shared, ``k/7`` of a GPU for
    MIG profile ``"<k>g.*"`` (rounded up, so seven 1g slices never weigh less than one GPU).

    Raises :class:`InvalidInput` on a malformed MIG profile name.
    """
    if mig_profile:
        m = _MIG_RE.match(mig_profile)
        if not m or not 1 <= int(m.group(1)) <= MIG_SLICES:
            raise InvalidInput(f"unknown MIG profile {mig_profile!r}",
                               [FieldError("mig_profile", "expected '<k>g.<memory>', k in 1..7")])
        return -(-int(m.group(1)) * MILLI // MIG_SLICES) * max(gpus, 1)
    if gpu_milli < MILLI:
        return gpu_milli * max(gpus, 1)
    return gpus * MILLI


@dataclass(frozen=True)
class FlavorQuota:
    """Quota of one project for one flavour, in milli-GPU.

    ``borrowing_limit=None`` lets the project borrow whatever its cohort has idle;
    ``lending_limit=None`` lends all idle guaranteed capacity (``0`` lends none).
    """

    guaranteed: int
    borrowing_limit: int | None = None
    lending_limit: int | None = None

    def lendable(self) -> int:
        """Part of ``guaranteed`` the cohort may borrow while idle."""
        if self.lending_limit is None:
            return self.guaranteed
        return min(self.lending_limit, self.guaranteed)


@dataclass(frozen=True)
class Organisation:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Project:
    """A team. ``quotas`` maps flavour -> :class:`FlavorQuota`; a flavour absent from it has no
    guarantee, and the project may use it only by borrowing (if it is in a cohort)."""

    name: str
    organisation: str = "default"
    cohort: str | None = None
    weight: float = 1.0
    quotas: Mapping[str, FlavorQuota] = field(default_factory=dict)

    def quota(self, flavor: str) -> FlavorQuota:
        """Quota for ``flavor``; an absent flavour is ``guaranteed=0`` with an unlimited
        borrowing limit."""
        return self.quotas.get(flavor) or FlavorQuota(0)


@dataclass(frozen=True)
class PriorityClass:
    """A named priority: higher ``value`` is considered first and may preempt lower values in the
    same project; ``preemptible=False`` protects its work from every preemption."""

    name: str
    value: int
    preemptible: bool = True


DEFAULT_PRIORITY_CLASSES = (
    PriorityClass("production", 1000, preemptible=False),
    PriorityClass("standard", 500),
    PriorityClass("preemptible", 0),
)


class QuotaTree:
    """The validated tenancy configuration one scheduling cycle works with.

    Lookups are O(1). ``enforce=False`` describes a pool without quotas (every project may use the
    whole cluster; used by the FIFO baseline of the sharing benchmark).
    """

    def __init__(self, projects: Iterable[Project], organisations: Iterable[Organisation] = (),
                 priority_classes: Iterable[PriorityClass] = DEFAULT_PRIORITY_CLASSES,
                 enforce: bool = True) -> None:
        projects = list(projects)
        errors: list[FieldError] = []
        self.organisations: Mapping[str, Organisation] = MappingProxyType(
            {o.name: o for o in organisations})
        seen: dict[str, Project] = {}
        for i, p in enumerate(projects):
            errors.extend(_check_project(i, p))
            if p.name in seen:
                errors.append(FieldError(f"projects[{i}].name", f"duplicate project {p.name!r}"))
            seen[p.name] = p
        for i, o in enumerate(self.organisations.values()):
            if not o.weight > 0:
                errors.append(FieldError(f"organisations[{i}].weight", "must be > 0"))
        self.priority_classes: Mapping[str, PriorityClass] = MappingProxyType(
            {c.name: c for c in priority_classes})
        if errors:
            raise InvalidInput("invalid quota configuration", errors, code="gpuplane.quota.invalid")
        self.projects: Mapping[str, Project] = MappingProxyType(seen)
        self.enforce = enforce
        members: dict[str, list[str]] = {}
        for p in projects:
            if p.cohort is not None:
                members.setdefault(p.cohort, []).append(p.name)
        self.cohorts: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {c: tuple(sorted(m)) for c, m in members.items()})
        self.flavors: tuple[str, ...] = tuple(sorted({f for p in projects for f in p.quotas})) or (
            DEFAULT_FLAVOR,)

    def project(self, name: str) -> Project:
        """The project called ``name``; an unknown name is a project with no quota, alone in its
        own organisation (so its work is explained as "no quota" rather than crashing a cycle)."""
        p = self.projects.get(name)
        return p if p is not None else Project(name, organisation=name)

    def organisation_weight(self, name: str) -> float:
        o = self.organisations.get(name)
        return o.weight if o is not None else 1.0

    def ceiling(self, project: str, flavor: str) -> int | None:
        """Most milli-GPU of ``flavor`` the project may hold (invariant 3); ``None`` = unbounded.

        Without a cohort the ceiling is the guarantee; in a cohort it is ``guaranteed +
        borrowing_limit``, unbounded when the borrowing limit is ``None`` (the cohort pool then
        bounds it).
        """
        if not self.enforce:
            return None
        p = self.project(project)
        q = p.quota(flavor)
        if p.cohort is None:
            return q.guaranteed
        if q.borrowing_limit is None:
            return None
        return q.guaranteed + q.borrowing_limit

    def priority(self, class_name: str) -> PriorityClass:
        """The priority class called ``class_name``; raises :class:`InvalidInput` naming the valid
        ones."""
        c = self.priority_classes.get(class_name)
        if c is None:
            raise InvalidInput(f"unknown priority class {class_name!r}",
                               [FieldError("priority_class",
                                           "valid: " + ", ".join(sorted(self.priority_classes)))])
        return c

    def scaled(self, factor: float) -> QuotaTree:
        """The same tree with every guarantee, borrowing and lending limit multiplied by
        ``factor`` (rounded to whole milli-GPU). Used for what-if runs (``--quota-scale``)."""
        if not factor > 0:
            raise InvalidInput("quota scale must be > 0",
                               [FieldError("quota_scale", f"got {factor}")])

        def sc(v: int | None) -> int | None:
            return None if v is None else int(round(v * factor))

        projects = [Project(p.name, p.organisation, p.cohort, p.weight,
                            {f: FlavorQuota(sc(q.guaranteed) or 0, sc(q.borrowing_limit),
                                            sc(q.lending_limit)) for f, q in p.quotas.items()})
                    for p in self.projects.values()]
        return QuotaTree(projects, self.organisations.values(), self.priority_classes.values(),
                         self.enforce)


def _check_project(i: int, p: Project) -> list[FieldError]:
    errs: list[FieldError] = []
    loc = f"projects[{i}]"
    if not p.name:
        errs.append(FieldError(f"{loc}.name", "must not be empty"))
    if not p.weight > 0:
        errs.append(FieldError(f"{loc}.weight", f"must be > 0, got {p.weight}"))
    for f, q in p.quotas.items():
        floc = f"{loc}.quotas[{f}]"
        if q.guaranteed < 0:
            errs.append(FieldError(f"{floc}.guaranteed", f"must be >= 0, got {q.guaranteed}"))
        if q.borrowing_limit is not None and q.borrowing_limit < 0:
            errs.append(FieldError(f"{floc}.borrowing_limit", "must be >= 0 or unset"))
        if q.lending_limit is not None and q.lending_limit < 0:
            errs.append(FieldError(f"{floc}.lending_limit", "must be >= 0 or unset"))
        if p.cohort is None and (q.borrowing_limit or q.lending_limit):
            errs.append(FieldError(f"{floc}", "borrowing/lending limits need a cohort"))
    return errs
