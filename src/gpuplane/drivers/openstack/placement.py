"""A thin, typed httpx client of the OpenStack Placement API (tested against Placement 16.0.0).

Every request carries ``X-Auth-Token`` (a Keystone token, or ``admin`` for a ``noauth2``
Placement) and ``OpenStack-API-Version: placement 1.39``, except ``GET /usages``, sent at 1.37:
Placement 16.0.0 answers 500 there on PostgreSQL from 1.38 on (docs/openstack.md, upstream bugs).

Errors: a 409 raises :class:`Conflict` whose ``placement_code`` is Placement's stable error code
(``placement.concurrent_update``, ``placement.inventory.inuse``, ``placement.duplicate_name`` ...);
a 404 raises :class:`NotFound`; any other failure :class:`PlacementError`. Transport failures
raise ``GpuplaneError("gpuplane.openstack.unreachable")``. None of them carries a traceback to
the user: the CLI prints ``detail`` and the code.

Thread safety: one client may be shared by worker threads (httpx's pool is thread-safe); the
request counters are guarded by a lock. ``writes`` counts every POST/PUT/DELETE sent, failed
ones included (the sync reports it).

Generations: every write to a provider's inventories, traits or aggregates takes the provider
generation the caller last saw and returns the new one; a stale generation is a
``Conflict(placement_code="placement.concurrent_update")``: re-read and retry, never force.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from gpuplane.domain import errors as domain_errors
from gpuplane.domain.errors import GpuplaneError
from gpuplane.drivers.openstack.model import (
    AllocationCandidates,
    Allocations,
    Inventory,
    ResourceProvider,
)

MICROVERSION = "1.39"
"""Newest microversion of Placement 16.0.0; nested providers, consumer generations (1.28),
``mappings`` (1.34), ``same_subtree`` (1.36), re-parenting (1.37), ``in:`` traits (1.39)."""

USAGES_MICROVERSION = "1.37"
"""``GET /usages`` at >= 1.38 fails (500, GroupingError) on PostgreSQL in Placement 16.0.0."""

NOAUTH_ADMIN_TOKEN = "admin"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class PlacementError(GpuplaneError):
    """Placement refused a request. ``status`` is the HTTP status, ``placement_code`` the code
    of Placement's error body (``placement.undefined_code`` when it gave none)."""

    def __init__(self, detail: str, *, status: int, placement_code: str,
                 code: str = "gpuplane.openstack.placement_error") -> None:
        super().__init__(code=code, detail=detail)
        self.status = status
        self.placement_code = placement_code


class Conflict(domain_errors.Conflict):
    """A 409 from Placement: someone else changed the object (``placement.concurrent_update``),
    inventory is in use (``placement.inventory.inuse``), a name is taken
    (``placement.duplicate_name``), capacity is exceeded ... ``placement_code`` says which."""

    def __init__(self, detail: str, placement_code: str) -> None:
        super().__init__(detail, code="gpuplane.openstack.conflict")
        self.status = 409
        self.placement_code = placement_code


class NotFound(domain_errors.NotFound):
    """A 404 from Placement (provider, consumer, trait or resource class unknown)."""

    def __init__(self, detail: str, placement_code: str) -> None:
        super().__init__(detail, code="gpuplane.openstack.not_found")
        self.status = 404
        self.placement_code = placement_code


def _error(resp: httpx.Response, what: str) -> GpuplaneError:
    try:
        body = resp.json()
        first = (body.get("errors") or [{}])[0]
    except (ValueError, AttributeError, IndexError):
        first = {}
    pcode = str(first.get("code") or "placement.undefined_code")
    text = str(first.get("detail") or first.get("title") or resp.text[:300] or resp.reason_phrase)
    text = " ".join(text.split())
    detail = f"Placement refused {what}: {text} [{pcode}]"
    if resp.status_code == 409:
        return Conflict(detail, pcode)
    if resp.status_code == 404:
        return NotFound(detail, pcode)
    if resp.status_code in (401, 403):
        detail += (" (check --token: a Keystone token with the admin role, or 'admin' for a "
                   "noauth2 Placement)")
    return PlacementError(detail, status=resp.status_code, placement_code=pcode)


def _csv(values: str | Iterable[str] | None) -> str | None:
    if values is None or isinstance(values, str):
        return values
    return ",".join(values)


class PlacementClient:
    """Talks to one Placement endpoint (``url`` is the API root, e.g. ``http://127.0.0.1:8778``).

    ``roles`` is sent as ``X-Roles``; a ``noauth2`` Placement takes it as the caller's roles,
    Keystone-backed ones ignore it. With the noauth2 token ``admin`` the default is
    ``admin,service``: the ``service`` role is what Nova holds and what ``POST /reshaper``
    needs; a real deployment gives gpuplane's service user that role in Keystone.
    """

    def __init__(self, url: str, token: str = NOAUTH_ADMIN_TOKEN, *, timeout: float = 60.0,
                 roles: Sequence[str] | None = None, max_connections: int = 16,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"X-Auth-Token": token, "Accept": "application/json",
                   "OpenStack-API-Version": f"placement {MICROVERSION}"}
        if roles is None and token == NOAUTH_ADMIN_TOKEN:
            roles = ("admin", "service")
        if roles:
            headers["X-Roles"] = ",".join(roles)
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  limits=limits, transport=transport)
        self._lock = threading.Lock()
        self.reads = 0
        self.writes = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PlacementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
                microversion: str | None = None,
                what: str | None = None) -> httpx.Response:
        """Send one request; raise :class:`Conflict`, :class:`NotFound` or
        :class:`PlacementError` on a non-2xx answer. Counts it as a read or a write."""
        clean: Any = ({k: v for k, v in params.items() if v is not None}
                      if isinstance(params, Mapping)
                      else [(k, v) for k, v in (params or ()) if v is not None])
        headers = {"OpenStack-API-Version": f"placement {microversion}"} if microversion else None
        with self._lock:
            if method in WRITE_METHODS:
                self.writes += 1
            else:
                self.reads += 1
        try:
            resp = self._http.request(method, path, json=json, params=clean, headers=headers)
        except httpx.HTTPError as exc:
            raise GpuplaneError("gpuplane.openstack.unreachable",
                                f"cannot reach Placement at {self.url} ({type(exc).__name__}: "
                                f"{exc}); check --placement-url") from None
        if resp.status_code >= 400:
            raise _error(resp, what or f"{method} {path}")
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        return resp.json() if resp.content else None

    def root(self) -> dict[str, Any]:
        """``GET /``: the version document (no token needed); raises when unreachable."""
        return self._json("GET", "/")

    # -- resource providers ----------------------------------------------------------------
    def list_resource_providers(self, *, name: str | None = None, uuid: str | None = None,
                                in_tree: str | None = None,
                                member_of: str | Sequence[str] | None = None,
                                required: str | Sequence[str] | None = None,
                                resources: Mapping[str, int] | None = None,
                                ) -> list[ResourceProvider]:
        """``GET /resource_providers`` filtered as Placement does. ``member_of`` as a sequence
        means "in any of these aggregates"; ``required`` lists traits all of which (or with
        ``!``, none of which) a provider has."""
        if member_of is not None and not isinstance(member_of, str):
            member_of = "in:" + ",".join(member_of)
        params = {"name": name, "uuid": uuid, "in_tree": in_tree, "member_of": member_of,
                  "required": _csv(required),
                  "resources": ",".join(f"{k}:{v}" for k, v in resources.items())
                  if resources else None}
        body = self._json("GET", "/resource_providers", params=params,
                          what="listing resource providers")
        return [ResourceProvider.from_json(p) for p in body["resource_providers"]]

    def get_resource_provider(self, uuid: str) -> ResourceProvider | None:
        """The provider, or ``None`` when Placement does not know ``uuid``."""
        try:
            return ResourceProvider.from_json(self._json("GET", f"/resource_providers/{uuid}"))
        except NotFound:
            return None

    def create_resource_provider(self, name: str, uuid: str | None = None,
                                 parent_provider_uuid: str | None = None) -> ResourceProvider:
        """``POST /resource_providers``; a taken name or uuid is a :class:`Conflict`
        (``placement.duplicate_name`` / ``placement.duplicate_uuid``)."""
        body: dict[str, Any] = {"name": name}
        if uuid:
            body["uuid"] = uuid
        if parent_provider_uuid:
            body["parent_provider_uuid"] = parent_provider_uuid
        data = self._json("POST", "/resource_providers", json=body,
                          what=f"creating resource provider {name!r}")
        return ResourceProvider.from_json(data)

    def update_resource_provider(self, uuid: str, name: str,
                                 parent_provider_uuid: str | None) -> ResourceProvider:
        """``PUT /resource_providers/{uuid}``: rename or re-parent (re-parenting needs 1.37)."""
        data = self._json("PUT", f"/resource_providers/{uuid}",
                          json={"name": name, "parent_provider_uuid": parent_provider_uuid},
                          what=f"updating resource provider {name!r}")
        return ResourceProvider.from_json(data)

    def delete_resource_provider(self, uuid: str) -> None:
        """Delete a provider without children or allocations (else :class:`Conflict`)."""
        self.request("DELETE", f"/resource_providers/{uuid}",
                     what=f"deleting resource provider {uuid}")

    # -- inventories -----------------------------------------------------------------------
    def get_inventories(self, uuid: str) -> tuple[int, dict[str, Inventory]]:
        """(provider generation, resource class -> inventory record)."""
        data = self._json("GET", f"/resource_providers/{uuid}/inventories")
        return (int(data["resource_provider_generation"]),
                {rc: Inventory.from_json(v) for rc, v in data["inventories"].items()})

    def set_inventories(self, uuid: str, generation: int,
                        inventories: Mapping[str, Inventory]) -> int:
        """Replace all inventory of a provider in one request; returns the new generation.
        Removing or shrinking a class that is allocated is ``placement.inventory.inuse``."""
        data = self._json("PUT", f"/resource_providers/{uuid}/inventories",
                          json={"resource_provider_generation": generation,
                                "inventories": {rc: inv.to_json()
                                                for rc, inv in inventories.items()}},
                          what=f"setting the inventory of provider {uuid}")
        return int(data["resource_provider_generation"])

    def reshape(self, inventories: Mapping[str, tuple[int, Mapping[str, Inventory]]],
                allocations: Mapping[str, Any] | None = None) -> None:
        """``POST /reshaper``: set the inventories of many providers (uuid -> (generation,
        inventory)) and move allocations, in one transaction. Needs the ``service`` role. The
        answer carries no generations: Placement 16 bumps each provider's generation by 2 when
        its new inventory is non-empty, by 1 otherwise."""
        body = {"inventories": {u: {"resource_provider_generation": g,
                                    "inventories": {rc: inv.to_json() for rc, inv in inv_.items()}}
                                for u, (g, inv_) in inventories.items()},
                "allocations": dict(allocations or {})}
        self.request("POST", "/reshaper", json=body,
                     what=f"reshaping {len(inventories)} providers")

    # -- traits ----------------------------------------------------------------------------
    def list_traits(self, *, name: str | None = None, associated: bool | None = None
                    ) -> list[str]:
        """``GET /traits``; ``name`` is ``startswith:CUSTOM_`` or ``in:A,B``; ``associated``
        keeps the traits some provider has (True) or none has (False)."""
        params = {"name": name,
                  "associated": None if associated is None else str(associated).lower()}
        return list(self._json("GET", "/traits", params=params)["traits"])

    def ensure_trait(self, name: str) -> None:
        """Create a ``CUSTOM_*`` trait (idempotent: 201 created, 204 existed)."""
        self.request("PUT", f"/traits/{name}", what=f"creating trait {name}")

    def delete_trait(self, name: str) -> None:
        """Delete a ``CUSTOM_*`` trait no provider has (else :class:`Conflict`); absent is fine."""
        try:
            self.request("DELETE", f"/traits/{name}", what=f"deleting trait {name}")
        except NotFound:
            pass

    def get_provider_traits(self, uuid: str) -> tuple[int, frozenset[str]]:
        data = self._json("GET", f"/resource_providers/{uuid}/traits")
        return int(data["resource_provider_generation"]), frozenset(data["traits"])

    def set_provider_traits(self, uuid: str, generation: int, traits: Iterable[str]) -> int:
        """Replace all traits of a provider; returns the new generation."""
        data = self._json("PUT", f"/resource_providers/{uuid}/traits",
                          json={"resource_provider_generation": generation,
                                "traits": sorted(traits)},
                          what=f"setting the traits of provider {uuid}")
        return int(data["resource_provider_generation"])

    # -- resource classes ------------------------------------------------------------------
    def list_resource_classes(self) -> list[str]:
        return [rc["name"] for rc in self._json("GET", "/resource_classes")["resource_classes"]]

    def ensure_resource_class(self, name: str) -> None:
        """Create a ``CUSTOM_*`` resource class (idempotent since 1.7)."""
        self.request("PUT", f"/resource_classes/{name}", what=f"creating resource class {name}")

    # -- aggregates ------------------------------------------------------------------------
    def get_aggregates(self, uuid: str) -> tuple[int, frozenset[str]]:
        data = self._json("GET", f"/resource_providers/{uuid}/aggregates")
        return int(data["resource_provider_generation"]), frozenset(data["aggregates"])

    def set_aggregates(self, uuid: str, generation: int, aggregates: Iterable[str]) -> int:
        """Replace the aggregates of a provider (1.19: generation-guarded); new generation."""
        data = self._json("PUT", f"/resource_providers/{uuid}/aggregates",
                          json={"resource_provider_generation": generation,
                                "aggregates": sorted(aggregates)},
                          what=f"setting the aggregates of provider {uuid}")
        return int(data["resource_provider_generation"])

    # -- allocations -----------------------------------------------------------------------
    def get_allocations(self, consumer: str) -> Allocations:
        """A consumer's allocations; an unknown consumer has none and generation ``None``."""
        data = self._json("GET", f"/allocations/{consumer}")
        allocs = data.get("allocations") or {}
        return Allocations(
            allocations={rp: dict(v["resources"]) for rp, v in allocs.items()},
            consumer_generation=data.get("consumer_generation"),
            project_id=data.get("project_id"), user_id=data.get("user_id"),
            consumer_type=data.get("consumer_type"),
            provider_generations={rp: int(v["generation"]) for rp, v in allocs.items()
                                  if "generation" in v})

    def put_allocations(self, consumer: str, allocations: Mapping[str, Mapping[str, int]], *,
                        project_id: str, user_id: str, consumer_generation: int | None,
                        consumer_type: str = "INSTANCE",
                        mappings: Mapping[str, Sequence[str]] | None = None) -> None:
        """Claim (or replace) a consumer's allocations, guarded by ``consumer_generation``
        (``None`` for a new consumer). A 409 means someone else won: re-read and re-plan.
        An empty ``allocations`` removes them (as ``delete_allocations``, but guarded)."""
        body: dict[str, Any] = {
            "allocations": {rp: {"resources": dict(res)} for rp, res in allocations.items()},
            "project_id": project_id, "user_id": user_id,
            "consumer_generation": consumer_generation, "consumer_type": consumer_type}
        if mappings:
            body["mappings"] = {k: list(v) for k, v in mappings.items()}
        self.request("PUT", f"/allocations/{consumer}", json=body,
                     what=f"claiming allocations for consumer {consumer}")

    def provider_allocations(self, uuid: str) -> tuple[int, dict[str, dict[str, int]]]:
        """(provider generation, consumer -> resource class -> amount) of one provider; the
        generation moves with every claim or release on it."""
        data = self._json("GET", f"/resource_providers/{uuid}/allocations")
        return (int(data["resource_provider_generation"]),
                {c: dict(v["resources"]) for c, v in data["allocations"].items()})

    def delete_allocations(self, consumer: str) -> None:
        """Remove all of a consumer's allocations (unguarded; 404 when it has none)."""
        self.request("DELETE", f"/allocations/{consumer}",
                     what=f"deleting the allocations of consumer {consumer}")

    def allocation_candidates(self, params: Mapping[str, Any] | Sequence[tuple[str, str]]
                              ) -> AllocationCandidates:
        """``GET /allocation_candidates`` with Placement's query syntax as is (``resources``,
        ``resources_G1``, ``required_G1``, ``same_subtree``, ``member_of``, ``limit`` ...)."""
        data = self._json("GET", "/allocation_candidates", params=params,
                          what="asking for allocation candidates")
        return AllocationCandidates(allocation_requests=data["allocation_requests"],
                                    provider_summaries=data["provider_summaries"])

    # -- usages ----------------------------------------------------------------------------
    def provider_usages(self, uuid: str) -> dict[str, int]:
        """Resource class -> amount allocated on one provider."""
        return dict(self._json("GET", f"/resource_providers/{uuid}/usages")["usages"])

    def usages(self, project_id: str, user_id: str | None = None) -> dict[str, int]:
        """A project's (and user's) total usage, sent at microversion 1.37 (see
        ``USAGES_MICROVERSION``): totals only, without the 1.38 per-consumer-type breakdown."""
        data = self._json("GET", "/usages", params={"project_id": project_id, "user_id": user_id},
                          microversion=USAGES_MICROVERSION)
        return dict(data["usages"])
