"""What a sync must change in Placement: desired trees against observed ones (pure, no I/O).

``plan`` compares the desired providers (``tree.fleet_tree``) with what Placement holds for
gpuplane (every provider carrying the marker trait, plus desired ones that lost it) and returns
one :class:`HostPlan` per tree, in the order the writes must happen:

1. create missing providers, parents first;
2. rename / re-parent providers whose name or parent moved (microversion 1.37);
3. set inventories, traits and aggregates that differ (each a single replace-all request);
4. delete gpuplane providers no host wants any more, deepest first.

Nothing that already matches is written: a second sync with no change plans nothing. Every
planned write is also a :class:`Change` with a sentence for people (``check`` shows them; the
service layer turns the changes a sync made into audit entries).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpuplane.drivers.openstack.model import Inventory, ProviderState, inventories_equal


@dataclass(frozen=True)
class Change:
    """One write a sync makes (or, from ``check``, would make).

    ``action``: ``create``, ``move`` (rename / re-parent), ``inventory``, ``traits``,
    ``aggregates``, ``delete``, ``create_trait``, ``create_resource_class``.
    ``target`` is the provider name (or the trait / class name), ``uuid`` the provider's.
    """

    action: str
    target: str
    uuid: str | None
    detail: str

    def to_json(self) -> dict[str, str | None]:
        return {"action": self.action, "target": self.target, "uuid": self.uuid,
                "detail": self.detail}


@dataclass
class HostPlan:
    """The writes of one provider tree (a host), in order; one worker applies it."""

    host: str
    root_uuid: str
    creates: list[ProviderState] = field(default_factory=list)
    moves: list[ProviderState] = field(default_factory=list)
    inventories: list[ProviderState] = field(default_factory=list)
    traits: list[ProviderState] = field(default_factory=list)
    aggregates: list[ProviderState] = field(default_factory=list)
    deletes: list[ProviderState] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes


def _fmt_inv(inv: Mapping[str, Inventory]) -> str:
    if not inv:
        return "none"
    parts = []
    for rc, i in sorted(inv.items()):
        n = i.normalised()
        extra = "" if (n.reserved, n.min_unit, n.max_unit, n.step_size, n.allocation_ratio) == (
            0, 1, n.total, 1, 1.0) else (f" (reserved {n.reserved}, min {n.min_unit}, max "
                                         f"{n.max_unit}, step {n.step_size}, ratio "
                                         f"{n.allocation_ratio:g})")
        parts.append(f"{rc}={n.total}{extra}")
    return ", ".join(parts)


def _fmt_set_diff(want: frozenset[str], have: frozenset[str]) -> str:
    parts = [f"+{t}" for t in sorted(want - have)] + [f"-{t}" for t in sorted(have - want)]
    return " ".join(parts)


def _depth(p: ProviderState, observed: Mapping[str, ProviderState]) -> int:
    depth, seen = 0, {p.uuid}
    while p.parent_uuid in observed and p.parent_uuid not in seen:
        p = observed[p.parent_uuid]
        seen.add(p.uuid)
        depth += 1
    return depth


def _root_of(p: ProviderState, observed: Mapping[str, ProviderState]) -> ProviderState:
    seen = {p.uuid}
    while p.parent_uuid in observed and p.parent_uuid not in seen:
        p = observed[p.parent_uuid]
        seen.add(p.uuid)
    return p


def plan(desired: Sequence[ProviderState], observed: Mapping[str, ProviderState]
         ) -> list[HostPlan]:
    """The host plans that turn ``observed`` (uuid -> state) into ``desired``.

    ``desired`` holds whole trees, each root before its descendants (``tree.fleet_tree``).
    Providers in ``observed`` that no tree wants are deleted. Trees with nothing to do are
    left out.
    """
    plans: dict[str, HostPlan] = {}
    root_of: dict[str, str] = {}
    for p in desired:
        if p.parent_uuid is None:
            plans[p.uuid] = HostPlan(host=p.name, root_uuid=p.uuid)
            root_of[p.uuid] = p.uuid
        else:
            root_of[p.uuid] = root_of[p.parent_uuid]
        hp = plans[root_of[p.uuid]]
        have = observed.get(p.uuid)
        if have is None:
            hp.creates.append(p)
            parent = f" under {p.parent_uuid}" if p.parent_uuid else ""
            hp.changes.append(Change("create", p.name, p.uuid, f"missing provider{parent}"))
            if p.inventories:
                hp.inventories.append(p)
                hp.changes.append(Change("inventory", p.name, p.uuid,
                                         f"none -> {_fmt_inv(p.inventories)}"))
            hp.traits.append(p)
            hp.changes.append(Change("traits", p.name, p.uuid, _fmt_set_diff(p.traits,
                                                                              frozenset())))
            if p.aggregates:
                hp.aggregates.append(p)
                hp.changes.append(Change("aggregates", p.name, p.uuid,
                                         _fmt_set_diff(p.aggregates, frozenset())))
            continue
        if have.name != p.name or have.parent_uuid != p.parent_uuid:
            hp.moves.append(p)
            hp.changes.append(Change("move", p.name, p.uuid,
                                     f"name {have.name!r} -> {p.name!r}, parent "
                                     f"{have.parent_uuid} -> {p.parent_uuid}"))
        if not inventories_equal(p.inventories, have.inventories):
            hp.inventories.append(p)
            hp.changes.append(Change("inventory", p.name, p.uuid,
                                     f"{_fmt_inv(have.inventories)} -> "
                                     f"{_fmt_inv(p.inventories)}"))
        if p.traits != have.traits:
            hp.traits.append(p)
            hp.changes.append(Change("traits", p.name, p.uuid,
                                     _fmt_set_diff(p.traits, have.traits)))
        if p.parent_uuid is None and p.aggregates != have.aggregates:
            hp.aggregates.append(p)
            hp.changes.append(Change("aggregates", p.name, p.uuid,
                                     _fmt_set_diff(p.aggregates, have.aggregates)))
    wanted = set(root_of)
    orphans: dict[str, list[ProviderState]] = defaultdict(list)
    for p in observed.values():
        if p.uuid not in wanted:
            orphans[_root_of(p, observed).uuid].append(p)
    for root_uuid, doomed in orphans.items():
        hp = plans.get(root_uuid)
        if hp is None:
            hp = plans[root_uuid] = HostPlan(host=observed[root_uuid].name, root_uuid=root_uuid)
        doomed.sort(key=lambda p: (-_depth(p, observed), p.name))
        for p in doomed:
            hp.deletes.append(p)
            hp.changes.append(Change("delete", p.name, p.uuid, "no gpuplane host wants it"))
    return [hp for hp in plans.values() if not hp.empty]
