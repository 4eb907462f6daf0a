"""Values shared by the Placement client, the tree mapping and the sync (pure, no I/O).

Names and units are Placement's: a resource provider (``uuid``, ``name``, ``generation``,
``parent_provider_uuid``), an inventory record per resource class (``total``, ``reserved``,
``min_unit``, ``max_unit``, ``step_size``, ``allocation_ratio``), traits and aggregates as sets
of strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Inventory:
    """One inventory record of one resource class on one provider.

    ``max_unit`` 0 means "equal to total" (the usual choice); it is resolved by ``to_json`` and
    ``normalised`` so that two records that Placement stores alike compare equal.
    """

    total: int
    reserved: int = 0
    min_unit: int = 1
    max_unit: int = 0
    step_size: int = 1
    allocation_ratio: float = 1.0

    def normalised(self) -> Inventory:
        if self.max_unit:
            return self
        return Inventory(self.total, self.reserved, self.min_unit, self.total, self.step_size,
                         float(self.allocation_ratio))

    def to_json(self) -> dict[str, Any]:
        n = self.normalised()
        return {"total": n.total, "reserved": n.reserved, "min_unit": n.min_unit,
                "max_unit": n.max_unit, "step_size": n.step_size,
                "allocation_ratio": float(n.allocation_ratio)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Inventory:
        return cls(total=int(data["total"]), reserved=int(data.get("reserved", 0)),
                   min_unit=int(data.get("min_unit", 1)),
                   max_unit=int(data.get("max_unit", data["total"])),
                   step_size=int(data.get("step_size", 1)),
                   allocation_ratio=float(data.get("allocation_ratio", 1.0)))


def inventories_equal(a: Mapping[str, Inventory], b: Mapping[str, Inventory]) -> bool:
    """Whether two inventories (resource class -> record) are what Placement stores alike."""
    if set(a) != set(b):
        return False
    return all(a[rc].normalised() == b[rc].normalised() for rc in a)


@dataclass(frozen=True)
class ResourceProvider:
    """A provider as ``GET /resource_providers`` lists it (no inventories, traits, aggregates)."""

    uuid: str
    name: str
    generation: int
    parent_provider_uuid: str | None = None
    root_provider_uuid: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResourceProvider:
        return cls(uuid=data["uuid"], name=data["name"], generation=int(data["generation"]),
                   parent_provider_uuid=data.get("parent_provider_uuid"),
                   root_provider_uuid=data.get("root_provider_uuid") or data["uuid"])


@dataclass(frozen=True)
class ProviderState:
    """Everything gpuplane manages on one provider: desired (from ``tree.py``) or observed.

    ``kind`` is gpuplane's role for it (``host``, ``numa``, ``gpu``; ``""`` when observed and
    unknown). ``generation`` is only set on observed states.
    """

    uuid: str
    name: str
    parent_uuid: str | None
    inventories: Mapping[str, Inventory] = field(default_factory=dict)
    traits: frozenset[str] = frozenset()
    aggregates: frozenset[str] = frozenset()
    kind: str = ""
    generation: int | None = None


@dataclass(frozen=True)
class Allocations:
    """A consumer's allocations (``GET /allocations/{consumer}``, microversion >= 1.28).

    ``allocations`` maps provider uuid -> resource class -> amount; ``consumer_generation`` is
    ``None`` for a consumer Placement does not know (pass it back as is to create one).
    """

    allocations: Mapping[str, Mapping[str, int]]
    consumer_generation: int | None
    project_id: str | None = None
    user_id: str | None = None
    consumer_type: str | None = None
    provider_generations: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AllocationCandidates:
    """``GET /allocation_candidates``: what Placement would grant, and a summary per provider.

    ``allocation_requests`` are bodies ready for ``PUT /allocations/{consumer}`` (with their
    ``mappings`` of request group -> providers); ``provider_summaries`` maps provider uuid ->
    ``{"resources": {rc: {"capacity", "used"}}, "traits": [...], "parent_provider_uuid",
    "root_provider_uuid"}``.
    """

    allocation_requests: list[dict[str, Any]]
    provider_summaries: dict[str, dict[str, Any]]
