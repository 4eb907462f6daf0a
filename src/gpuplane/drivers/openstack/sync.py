"""Converge Placement on gpuplane's inventory with the fewest writes; ``check`` only looks.

One sync is load -> decide -> apply (STYLE habit 8):

1. **observe** what Placement holds for gpuplane: every provider with the marker trait (one
   ``GET /resource_providers?required=MARKER``), and desired providers that lost the marker
   (one unfiltered listing, only when a desired provider is missing). Inventories, traits and
   aggregates are read only for providers whose generation moved since this object last
   verified them: Placement bumps a provider's generation on every change of its inventory,
   traits, aggregates or allocations, so an unchanged generation means an unchanged provider.
   Traits of many providers are read in bulk, one listing per associated trait.
2. **plan** the differences (``plan.py``, pure).
3. **apply** them, hosts in parallel on a small thread pool, each write guarded by the
   provider generation; a stale generation (409 ``placement.concurrent_update``) is re-read and
   the write retried, never forced. The inventories of the providers a host creates go in one
   ``POST /reshaper`` (when the caller has the ``service`` role; else one PUT each).

A second sync with no change makes no write (and, on the same object, only three reads).
Problems that concern one provider (a name taken by a provider gpuplane does not own, inventory
still allocated) are reported and the rest continues; an unreachable Placement raises.
The returned :class:`SyncReport` lists every change; the caller writes the audit entries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from gpuplane.drivers.openstack.model import ProviderState, ResourceProvider
from gpuplane.drivers.openstack.placement import (
    Conflict,
    NotFound,
    PlacementClient,
    PlacementError,
)
from gpuplane.drivers.openstack.plan import Change, HostPlan, plan
from gpuplane.drivers.openstack.tree import MANAGED_TRAIT

CONCURRENT_UPDATE = "placement.concurrent_update"
_RETRIES = 3


@dataclass
class SyncReport:
    """What a sync did (or a check found). ``drift`` is the number of differences between
    gpuplane and Placement before the run; after a successful sync it is repaired."""

    mode: str  # sync | check
    hosts: int
    providers: int
    writes: int
    reads: int
    seconds: float
    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reshaped: bool = False

    @property
    def drift(self) -> int:
        return len(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "hosts": self.hosts, "providers": self.providers,
                "writes": self.writes, "reads": self.reads, "drift": self.drift,
                "seconds": round(self.seconds, 3), "reshaped": self.reshaped,
                "changes": [c.to_json() for c in self.changes], "problems": list(self.problems)}


@dataclass
class _Observation:
    states: dict[str, ProviderState]   # managed (and adopted) providers, with generations
    managed: int                       # how many carry the marker
    traits: set[str]                   # every trait Placement knows
    classes: set[str]                  # every resource class Placement knows


class PlacementSync:
    """Keeps gpuplane's provider trees in one Placement. Reuse one object across periods: it
    remembers the generation at which it last verified each provider and skips re-reading
    those that did not move. Safe to call from one thread at a time.
    """

    def __init__(self, client: PlacementClient, *, marker: str = MANAGED_TRAIT,
                 workers: int = 4, reshape: bool = True) -> None:
        self.client = client
        self.marker = marker
        self.workers = max(1, workers)
        self._reshape_ok = reshape
        self._verified: dict[str, ProviderState] = {}  # uuid -> state at its generation
        self._lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------
    def check(self, desired: Sequence[ProviderState]) -> SyncReport:
        """The differences a sync would repair; writes nothing."""
        return self._run(desired, apply=False, progress=None)

    def sync(self, desired: Sequence[ProviderState],
             progress: Callable[[int, int], None] | None = None) -> SyncReport:
        """Make Placement hold exactly ``desired`` for gpuplane (``tree.fleet_tree``); gpuplane
        providers of hosts not in ``desired`` are deleted. ``progress(done, total)`` is called
        as host trees finish."""
        return self._run(desired, apply=True, progress=progress)

    # -- the run -----------------------------------------------------------------------------
    def _run(self, desired: Sequence[ProviderState], *, apply: bool,
             progress: Callable[[int, int], None] | None) -> SyncReport:
        t0 = time.perf_counter()
        w0, r0 = self.client.writes, self.client.reads
        obs = self._observe(desired)
        problems: list[str] = []
        desired, catalogue = self._catalogue(desired, obs, problems)
        plans = plan(desired, obs.states)
        changes = [*catalogue, *(c for hp in plans for c in hp.changes)]
        hosts = sum(1 for p in desired if p.parent_uuid is None)
        providers = obs.managed
        reshaped = False
        if apply:
            self._create_catalogue(catalogue, problems)
            created, deleted, reshaped = self._apply_all(plans, obs, problems, progress)
            providers = len(obs.states) + created - deleted
        return SyncReport(mode="sync" if apply else "check", hosts=hosts, providers=providers,
                          writes=self.client.writes - w0, reads=self.client.reads - r0,
                          seconds=time.perf_counter() - t0, changes=changes, problems=problems,
                          reshaped=reshaped)

    # -- observe -----------------------------------------------------------------------------
    def _observe(self, desired: Sequence[ProviderState]) -> _Observation:
        c = self.client
        traits = set(c.list_traits())
        classes = set(c.list_resource_classes())
        listed: dict[str, ResourceProvider] = {}
        if self.marker in traits:  # else nothing is marked yet (filtering by it would be a 400)
            listed = {rp.uuid: rp for rp in c.list_resource_providers(required=self.marker)}
        managed = len(listed)
        desired_uuids = {p.uuid for p in desired}
        adopted: set[str] = set()
        if desired_uuids - listed.keys():
            for rp in c.list_resource_providers():
                if rp.uuid in desired_uuids and rp.uuid not in listed:
                    listed[rp.uuid] = rp  # a desired provider that lost the marker
                    adopted.add(rp.uuid)
        states: dict[str, ProviderState] = {}
        stale: list[ResourceProvider] = []
        for u, rp in listed.items():
            known = self._verified.get(u)
            if known is not None and known.generation == rp.generation and u not in adopted:
                states[u] = known
            else:
                stale.append(rp)
        bulk = self._bulk_traits(stale, adopted)
        with ThreadPoolExecutor(self.workers) as pool:
            for state in pool.map(lambda rp: read_provider(self.client, rp, bulk.get(rp.uuid)), stale):
                states[state.uuid] = state
        return _Observation(states=states, managed=managed, traits=traits, classes=classes)

    def _bulk_traits(self, stale: Sequence[ResourceProvider], adopted: set[str]
                     ) -> dict[str, tuple[int, frozenset[str]]]:
        """Traits of many marked providers in one listing per associated trait:
        uuid -> (generation seen by every listing, traits); left out when listings disagree."""
        marked = [rp for rp in stale if rp.uuid not in adopted]
        if len(marked) < 32:
            return {}
        associated = [t for t in self.client.list_traits(associated=True) if t != self.marker]
        if len(associated) + 1 >= len(marked):
            return {}
        want = {rp.uuid: rp.generation for rp in marked}
        found: dict[str, set[str]] = {u: {self.marker} for u in want}
        bad: set[str] = set()

        def listing(trait: str) -> tuple[str, list[ResourceProvider]]:
            return trait, self.client.list_resource_providers(required=[trait, self.marker])

        with ThreadPoolExecutor(self.workers) as pool:
            for trait, rps in pool.map(listing, associated):
                for rp in rps:
                    if rp.uuid in want:
                        found[rp.uuid].add(trait)
                        if rp.generation != want[rp.uuid]:
                            bad.add(rp.uuid)
        return {u: (want[u], frozenset(t)) for u, t in found.items() if u not in bad}

    # -- catalogue (custom traits and resource classes) --------------------------------------
    def _catalogue(self, desired: Sequence[ProviderState], obs: _Observation,
                   problems: list[str]) -> tuple[list[ProviderState], list[Change]]:
        want_traits = {t for p in desired for t in p.traits}
        want_classes = {rc for p in desired for rc in p.inventories}
        changes = [Change("create_trait", t, None, "custom trait missing")
                   for t in sorted(want_traits - obs.traits) if t.startswith("CUSTOM_")]
        changes += [Change("create_resource_class", rc, None, "custom resource class missing")
                    for rc in sorted(want_classes - obs.classes) if rc.startswith("CUSTOM_")]
        unknown = {t for t in want_traits - obs.traits if not t.startswith("CUSTOM_")}
        if unknown:
            problems.append(f"this Placement does not know the standard traits "
                            f"{', '.join(sorted(unknown))} (its os-traits is older); they are "
                            f"left out; upgrade Placement to get them")
            desired = [replace(p, traits=p.traits - unknown) for p in desired]
        missing_std = {rc for rc in want_classes - obs.classes if not rc.startswith("CUSTOM_")}
        if missing_std:
            problems.append(f"this Placement does not know the standard resource classes "
                            f"{', '.join(sorted(missing_std))}; providers with them will fail")
        return list(desired), changes

    def _create_catalogue(self, changes: Iterable[Change], problems: list[str]) -> None:
        for ch in changes:
            try:
                if ch.action == "create_trait":
                    self.client.ensure_trait(ch.target)
                else:
                    self.client.ensure_resource_class(ch.target)
            except (PlacementError, Conflict) as exc:
                problems.append(f"{ch.target}: {exc.detail}")

    # -- apply -------------------------------------------------------------------------------
    def _apply_all(self, plans: list[HostPlan], obs: _Observation, problems: list[str],
                   progress: Callable[[int, int], None] | None) -> tuple[int, int, bool]:
        created = deleted = 0
        reshaped = False
        done = 0
        total = len(plans)
        # unchanged providers are verified as observed
        changed = {c.uuid for hp in plans for c in hp.changes}
        for u, state in obs.states.items():
            if u not in changed and state.generation is not None:
                self._verified[u] = state
        if progress is not None:
            progress(0, total)
        with ThreadPoolExecutor(self.workers) as pool:
            for result in pool.map(lambda hp: self._apply_host(hp, obs.states), plans):
                n_created, n_deleted, host_reshaped, host_problems = result
                created += n_created
                deleted += n_deleted
                reshaped = reshaped or host_reshaped
                problems.extend(host_problems)
                done += 1
                if progress is not None:
                    progress(done, total)
        return created, deleted, reshaped

    def _apply_host(self, hp: HostPlan, observed: Mapping[str, ProviderState]
                    ) -> tuple[int, int, bool, list[str]]:
        c = self.client
        problems: list[str] = []
        gens: dict[str, int | None] = {}  # this tree's generations as writes move them

        def gen_of(uuid: str) -> int | None:
            if uuid in gens:
                return gens[uuid]
            state = observed.get(uuid)
            return state.generation if state is not None else None

        failed: set[str] = set()
        unsure: set[str] = set()
        created: set[str] = set()
        reshaped = False

        def guarded(uuid: str, what: str, write: Callable[[int], int]) -> None:
            for attempt in range(_RETRIES + 1):
                gen = gen_of(uuid)
                try:
                    if gen is None:
                        raise Conflict("generation unknown", CONCURRENT_UPDATE)
                    gens[uuid] = write(gen)
                    return
                except Conflict as exc:
                    if exc.placement_code != CONCURRENT_UPDATE or attempt == _RETRIES:
                        problems.append(f"{what}: {exc.detail}")
                        failed.add(uuid)
                        return
                    rp = c.get_resource_provider(uuid)
                    if rp is None:
                        problems.append(f"{what}: the provider disappeared meanwhile")
                        failed.add(uuid)
                        return
                    gens[uuid] = rp.generation
                    unsure.add(uuid)
                except NotFound:
                    problems.append(f"{what}: the provider disappeared meanwhile; the next "
                                    "sync recreates it")
                    failed.add(uuid)
                    return
                except PlacementError as exc:
                    problems.append(f"{what}: {exc.detail}")
                    failed.add(uuid)
                    return

        for p in hp.creates:
            if p.parent_uuid in failed:
                failed.add(p.uuid)
                continue
            try:
                rp = c.create_resource_provider(p.name, p.uuid, p.parent_uuid)
            except (Conflict, PlacementError) as exc:
                hint = (" (a provider gpuplane does not manage has this name: rename or delete "
                        "it, or let gpuplane adopt it by giving it the uuid "
                        f"{p.uuid})" if getattr(exc, "placement_code", "") ==
                        "placement.duplicate_name" else "")
                problems.append(f"{p.name}: {exc.detail}{hint}")
                failed.add(p.uuid)
                continue
            gens[p.uuid] = rp.generation
            created.add(p.uuid)
        for p in hp.moves:
            try:
                rp = c.update_resource_provider(p.uuid, p.name, p.parent_uuid)
                gens[p.uuid] = rp.generation
            except (Conflict, PlacementError, NotFound) as exc:
                problems.append(f"{p.name}: {exc.detail}")
                failed.add(p.uuid)
        todo = [p for p in hp.inventories if p.uuid not in failed]
        fresh = [p for p in todo if p.uuid in created]
        if fresh and self._reshape_ok:
            try:
                c.reshape({p.uuid: (gen_of(p.uuid) or 0, p.inventories) for p in fresh})
                for p in fresh:  # Placement 16: +2 per provider with inventory (checked below)
                    gens[p.uuid] = (gen_of(p.uuid) or 0) + 2
                todo = [p for p in todo if p.uuid not in created]
                reshaped = True
            except PlacementError as exc:
                if exc.status == 403:
                    self._reshape_ok = False  # no service role: one PUT per provider from now
            except Conflict:
                pass  # fall back to one guarded PUT each
        for p in todo:
            guarded(p.uuid, f"{p.name}: inventory",
                    lambda g, p=p: c.set_inventories(p.uuid, g, p.inventories))
        for p in hp.traits:
            if p.uuid not in failed:
                # a guessed generation (after the reshape) is checked by Placement here
                guarded(p.uuid, f"{p.name}: traits",
                        lambda g, p=p: c.set_provider_traits(p.uuid, g, p.traits))
        for p in hp.aggregates:
            if p.uuid not in failed:
                guarded(p.uuid, f"{p.name}: aggregates",
                        lambda g, p=p: c.set_aggregates(p.uuid, g, p.aggregates))
        deleted = 0
        for p in hp.deletes:
            try:
                c.delete_resource_provider(p.uuid)
                deleted += 1
            except NotFound:
                deleted += 1
            except (Conflict, PlacementError) as exc:
                problems.append(f"{p.name}: {exc.detail}")
        with self._lock:
            touched = {ch.uuid for ch in hp.changes if ch.uuid}
            for p in (*hp.creates, *hp.moves, *hp.inventories, *hp.traits, *hp.aggregates):
                self._verified.pop(p.uuid, None)
            for p in hp.deletes:
                self._verified.pop(p.uuid, None)
            for p in self._desired_of(hp):
                gen = gen_of(p.uuid)
                if p.uuid in touched and p.uuid not in failed and p.uuid not in unsure \
                        and gen is not None:
                    self._verified[p.uuid] = replace(p, generation=gen)
        return len(created), deleted, reshaped, problems

    @staticmethod
    def _desired_of(hp: HostPlan) -> list[ProviderState]:
        seen: dict[str, ProviderState] = {}
        for p in (*hp.creates, *hp.moves, *hp.inventories, *hp.traits, *hp.aggregates):
            seen[p.uuid] = p
        return list(seen.values())


def read_provider(client: PlacementClient, rp: ResourceProvider,
                  bulk: tuple[int, frozenset[str]] | None = None) -> ProviderState:
    """One provider's inventories, traits and (roots only) aggregates, all read at one
    generation (re-read up to three times when a write slipped in between; after that the
    state carries no generation). ``bulk`` is (generation, traits) already listed."""
    c = client
    is_root = rp.parent_provider_uuid is None
    for _ in range(_RETRIES):
        gen, inventories = c.get_inventories(rp.uuid)
        if bulk is not None and bulk[0] == gen:
            traits = bulk[1]
        else:
            g2, traits = c.get_provider_traits(rp.uuid)
            if g2 != gen:
                bulk = None
                continue
        aggregates: frozenset[str] = frozenset()
        if is_root:
            g3, aggregates = c.get_aggregates(rp.uuid)
            if g3 != gen:
                bulk = None
                continue
        return ProviderState(uuid=rp.uuid, name=rp.name, parent_uuid=rp.parent_provider_uuid,
                             inventories=inventories, traits=traits, aggregates=aggregates,
                             generation=gen)
    # still moving: use the last reads; the generation guard protects every write
    return ProviderState(uuid=rp.uuid, name=rp.name, parent_uuid=rp.parent_provider_uuid,
                         inventories=inventories, traits=traits, aggregates=aggregates,
                         generation=None)


def read_all(client: PlacementClient, *, workers: int = 4) -> list[ProviderState]:
    """Every provider Placement holds, with inventories, traits and (roots) aggregates: the
    input of ``tree.import_trees``. One listing plus two or three reads per provider."""
    rps = client.list_resource_providers()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(lambda rp: read_provider(client, rp), rps))


def run_sync(client: PlacementClient, desired: Sequence[ProviderState], *, check: bool = False,
             workers: int = 4, marker: str = MANAGED_TRAIT,
             progress: Callable[[int, int], None] | None = None) -> SyncReport:
    """One-shot ``sync`` (or ``check``) with a fresh :class:`PlacementSync` (the CLI's use)."""
    syncer = PlacementSync(client, marker=marker, workers=workers)
    return syncer.check(desired) if check else syncer.sync(desired, progress=progress)

