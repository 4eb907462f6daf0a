"""gpuplane's own ``GET /allocation_candidates`` (pure: no I/O, no clock).

:func:`parse_request` reads Placement's query syntax (microversion 1.39), a
:class:`CandidateIndex` holds providers and their usages, :func:`candidates` returns the
allocation requests Placement 16 would, as :class:`AllocationRequest` values (``to_json``: its
``{"allocations", "mappings"}`` body), to compare as sets (tests/openstack/
test_placement_candidates.py does, on random fleets against the live Placement).

Supported: ``resources<S>``, ``required<S>`` (all of, ``!`` none of, ``in:`` any of; repeatable),
``member_of<S>`` (a uuid, ``in:`` any of, ``!`` / ``!in:`` none of; repeatable),
``root_required``, ``same_subtree`` (repeatable) with resourceless groups, ``group_policy``,
``limit`` (checked, not applied: Placement's pick is arbitrary). Not supported: ``in_tree``
(refused); sharing providers (``MISC_SHARES_VIA_AGGREGATE``, which gpuplane never creates, count
as plain members of their tree). Unknown traits and classes match nothing (Placement: 400).

Placement 16 semantics (from its code, checked against the live service):

* a **suffixed group** is one provider with room for all its resources (``used + n <= (total -
  reserved) * allocation_ratio``, ``min_unit <= n <= max_unit``, ``n % step_size == 0``), all
  its required and none of its forbidden traits, and **its own** aggregates: ``member_of_G``
  does not match a GPU whose root alone is in the aggregate;
* the **unsuffixed group spreads over one tree**: each class whole from one provider, classes
  from different providers; its required traits are met **collectively** by the providers that
  give resources (a trait of a root or NUMA node giving none does not count), none of which may
  have a forbidden one; ``member_of`` is met per provider by it **or its root** (each alone:
  one clause from the GPU and another from the root do not combine); ``!`` excludes a provider
  when it or its root is in the aggregate;
* a **resourceless group** is any provider of the tree with its traits / aggregates; with only
  forbidden traits it matches **nothing**;
* **merging**: one provider per group, one tree, whose root meets ``root_required``;
  ``isolate``: distinct providers for all suffixed groups, resourceless ones included;
  ``same_subtree``: one of its groups' providers is an ancestor-or-self of all the others;
  amounts of one provider and class are summed: ``used + sum <= capacity``, ``sum <= max_unit``.

Upstream bug (Placement 16.0.0): with a class asked by the unsuffixed group **and** a suffixed
one and ``group_policy`` absent or ``isolate``, Placement sums into an object shared between
candidates and answers wrong amounts (``CUSTOM_GPU_MILLI: 300`` where 100 was asked of that
GPU). gpuplane sums correctly; with ``group_policy=none`` Placement does too.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations, product
from typing import Any, NamedTuple

from gpuplane.domain.errors import FieldError, InvalidInput, nearest_name
from gpuplane.drivers.openstack.model import Inventory, ProviderState

_GROUP_KEY = re.compile(r"^(resources|required|member_of|in_tree)([a-zA-Z0-9_-]{1,64})?$")
_LIMIT = re.compile(r"^[1-9][0-9]*$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}$")
_WIDE = ("group_policy", "limit", "root_required", "same_subtree")  # all but the last once

QueryParams = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]  # a list repeats


# -- the request ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestGroup:
    """One request group. ``suffix`` is ``""`` for the unsuffixed group; ``required`` is an
    AND of any-of sets; ``member_of`` an AND of any-of sets of aggregate uuids."""

    suffix: str
    resources: Mapping[str, int]
    required: tuple[frozenset[str], ...] = ()
    forbidden: frozenset[str] = frozenset()
    member_of: tuple[frozenset[str], ...] = ()
    forbidden_aggregates: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CandidateRequest:
    """A parsed ``GET /allocation_candidates`` query; the unsuffixed group, if any, comes first."""

    groups: tuple[RequestGroup, ...]
    same_subtree: tuple[frozenset[str], ...] = ()
    group_policy: str | None = None
    root_required: frozenset[str] = frozenset()
    root_forbidden: frozenset[str] = frozenset()
    limit: int | None = None


def _pairs(params: QueryParams) -> list[tuple[str, str]]:
    items = params.items() if isinstance(params, Mapping) else params
    return [(k, v) for k, vs in items for v in ([vs] if isinstance(vs, str) else vs)]


def _resources(key: str, value: str, errors: list[FieldError]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in value.split(","):
        rc, sep, amount = item.partition(":")
        try:
            out[rc] = int(amount) if sep and rc else 0
        except ValueError:
            out[rc] = 0
        if out[rc] < 1:
            errors.append(FieldError(key, f"expected CLASS:AMOUNT[,...] with an integer AMOUNT "
                                          f">= 1, got {item!r}"))
    return out


def _traits(key: str, value: str, errors: list[FieldError], *, any_of: bool = True
            ) -> tuple[list[frozenset[str]], set[str]]:
    """(AND of any-of sets, forbidden) of one ``required`` value; like Placement, any number
    of leading ``!`` means forbidden."""
    if value.startswith("in:"):
        names = {t.strip() for t in value[3:].split(",")}
        if not any_of:
            errors.append(FieldError(key, "does not take the in: form"))
        elif "" in names or any(t.startswith("!") for t in names):
            errors.append(FieldError(key, f"in: takes trait names, none empty or with '!', "
                                          f"got {value!r}"))
        return [frozenset(names)], set()
    names_ = [t.strip() for t in value.split(",")]
    forbidden = {t.lstrip("!") for t in names_ if t.startswith("!")}
    if "" in names_ or "" in forbidden:
        errors.append(FieldError(key, f"empty trait name in {value!r}"))
    return [frozenset({t}) for t in names_ if t and not t.startswith("!")], forbidden


def _aggregates(key: str, value: str, errors: list[FieldError]
                ) -> tuple[frozenset[str], frozenset[str]]:
    """(any of, none of) of one ``member_of`` value."""
    neg = value.startswith("!")
    body = value[1:] if neg else value
    if body.startswith("in:"):
        body = body[3:]
    elif "," in body:
        errors.append(FieldError(key, f"several aggregates need the in: (or !in:) prefix, "
                                      f"got {value!r}"))
    uuids = frozenset(body.split(","))
    errors += [FieldError(key, f"expected aggregate uuids, got {a!r}")
               for a in sorted(uuids) if not _UUID.match(a)]
    return (frozenset(), uuids) if neg else (uuids, frozenset())


def parse_request(params: QueryParams) -> CandidateRequest:
    """Read a query in Placement's syntax; ``InvalidInput`` lists every problem, each naming
    its parameter (``resources_G1``, ``same_subtree`` ...), where Placement would answer 400.
    Unlike Placement, a single-valued parameter given twice is refused, not overwritten."""
    errors: list[FieldError] = []
    resources: dict[str, dict[str, int]] = {}
    required: dict[str, list[frozenset[str]]] = defaultdict(list)
    forbidden: dict[str, set[str]] = defaultdict(set)
    member_of: dict[str, list[frozenset[str]]] = defaultdict(list)
    not_member: dict[str, set[str]] = defaultdict(set)
    first_key: dict[str, str] = {}
    wide: dict[str, list[str]] = defaultdict(list)
    for key, value in _pairs(params):
        m = _GROUP_KEY.match(key)
        if key in _WIDE:
            wide[key].append(value)
            continue
        if not m:
            hint = nearest_name(key, (*_WIDE, "resources", "required", "member_of"))
            errors.append(FieldError(key, "unknown parameter"
                                          + (f"; did you mean {hint!r}?" if hint else "")))
            continue
        kind, suffix = m.group(1), m.group(2) or ""
        first_key.setdefault(suffix, key)
        if kind == "in_tree":
            errors.append(FieldError(key, "not supported by gpuplane's search; ask Placement"))
        elif kind == "resources":
            if suffix in resources:
                errors.append(FieldError(key, "given more than once"))
            resources[suffix] = _resources(key, value, errors)
        elif kind == "required":
            req, forb = _traits(key, value, errors)
            required[suffix] += req
            forbidden[suffix] |= forb
        else:
            any_of, none_of = _aggregates(key, value, errors)
            member_of[suffix] += [any_of] if any_of else []
            not_member[suffix] |= none_of
    errors += [FieldError(k, "given more than once") for k in _WIDE[:3] if len(wide[k]) > 1]
    policy, limit = (wide[k][0] if wide[k] else None for k in ("group_policy", "limit"))
    if policy is not None and policy not in ("none", "isolate"):
        errors.append(FieldError("group_policy", f"must be none or isolate, got {policy!r}"))
    if limit is not None and not _LIMIT.match(limit):
        errors.append(FieldError("limit", f"must be an integer >= 1, got {limit!r}"))
    root_req, root_forb = (_traits("root_required", wide["root_required"][0], errors,
                                   any_of=False) if wide["root_required"] else ([], set()))
    if any(s <= root_forb for s in root_req):
        errors.append(FieldError("root_required", "a trait is both required and forbidden"))
    subtrees = [frozenset(s.strip() for s in v.split(",")) for v in wide["same_subtree"]]
    if any("" in subtree for subtree in subtrees):
        errors.append(FieldError("same_subtree", "cannot name the unsuffixed group (empty)"))
    subtrees = [subtree - {""} for subtree in subtrees]
    if not resources:
        errors.append(FieldError("resources", "at least one resources<S> is required"))
    in_subtree = frozenset().union(*subtrees)
    for s in first_key:
        if s not in resources and (s == "" or s not in in_subtree):
            errors.append(FieldError(first_key[s], "a group without resources must be a "
                                                   "suffixed group named in same_subtree"))
        bad = [sorted(a) for a in required[s] if a <= forbidden[s]]
        if bad:
            errors.append(FieldError(f"required{s}", f"both required and forbidden: {bad}"))
    errors += [FieldError("same_subtree", f"no request group has the suffix {missing!r}")
               for missing in sorted(in_subtree - set(first_key))]
    if policy is None and sum(1 for s in first_key if s) > 1:
        errors.append(FieldError("group_policy", "required with several suffixed groups"))
    if errors:
        raise InvalidInput("invalid allocation candidates request; fix the fields listed", errors)
    groups = [RequestGroup(s, resources.get(s, {}), tuple(required[s]), frozenset(forbidden[s]),
                           tuple(member_of[s]), frozenset(not_member[s]))
              for s in sorted(first_key, key=lambda s: s != "")]
    return CandidateRequest(tuple(groups), tuple(subtrees), policy,
                            frozenset().union(*root_req), frozenset(root_forb),
                            int(limit) if limit else None)


# -- the answer ----------------------------------------------------------------------------
class AllocationRequest(NamedTuple):
    """One candidate: ``allocations`` holds (provider uuid, resource class, amount),
    ``mappings`` (group suffix, provider uuid); equal candidates compare equal."""

    allocations: frozenset[tuple[str, str, int]]
    mappings: frozenset[tuple[str, str]]

    def to_json(self) -> dict[str, Any]:
        """Placement's shape: a ``PUT /allocations`` body with its ``mappings``."""
        allocs: dict[str, dict[str, dict[str, int]]] = {}
        for rp, rc, amount in sorted(self.allocations):
            allocs.setdefault(rp, {"resources": {}})["resources"][rc] = amount
        maps: dict[str, list[str]] = {}
        for suffix, rp in sorted(self.mappings):
            maps.setdefault(suffix, []).append(rp)
        return {"allocations": allocs, "mappings": maps}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AllocationRequest:
        """Read one of Placement's ``allocation_requests``."""
        return cls(frozenset((rp, rc, int(n)) for rp, body in data["allocations"].items()
                             for rc, n in body["resources"].items()),
                   frozenset((s, rp) for s, rps in data["mappings"].items() for rp in rps))


# -- the index -----------------------------------------------------------------------------
class _Room(NamedTuple):
    """An inventory record with its usage; ``capacity`` is Placement's exact product."""

    capacity: float
    used: int
    min_unit: int
    max_unit: int
    step_size: int

    @classmethod
    def of(cls, n: Inventory, used: int) -> _Room:
        return cls((n.total - n.reserved) * n.allocation_ratio, int(used), n.min_unit,
                   n.max_unit, n.step_size)

    def fits(self, amount: int) -> bool:
        return (self.used + amount <= self.capacity and self.min_unit <= amount <= self.max_unit
                and amount % self.step_size == 0)


class _Tree(NamedTuple):
    """A class of identical trees: the first one's providers in canonical order, each
    position's parent position (-1: the root) and node, every member's uuids in that order."""

    providers: tuple[int, ...]
    shape: tuple[int, ...]
    nodes: tuple[int, ...]
    members: list[tuple[str, ...]]


class CandidateIndex:
    """Providers (``ProviderState``) and usages (provider uuid -> class -> amount used), read by
    :func:`candidates`, never changed after building (``InvalidInput`` names a duplicate uuid,
    a missing parent, a usage of an unknown provider). By input position: ``uuids``, ``parent``
    (-1: a root), ``traits``, ``aggregates``, ``rooms``, ``ancestors`` (itself included),
    ``node`` (``facts[node]``: traits, aggregates, rooms); ``trees``: classes of alike trees."""

    def __init__(self, providers: Iterable[ProviderState],
                 usages: Mapping[str, Mapping[str, int]] | None = None) -> None:
        states = list(providers)
        usages = usages or {}
        at = {p.uuid: i for i, p in reversed(list(enumerate(states)))}  # the first one wins
        errors = [FieldError(f"providers[{i}].uuid", f"{p.uuid} is given twice")
                  for i, p in enumerate(states) if at[p.uuid] != i]
        errors += [FieldError(f"providers[{i}].parent_uuid", f"parent {p.parent_uuid} of "
                                                             f"{p.name} is not given")
                   for i, p in enumerate(states) if p.parent_uuid and p.parent_uuid not in at]
        errors += [FieldError(f"usages[{rp}]", "no such provider") for rp in usages if rp not in at]
        if errors:
            raise InvalidInput("the providers cannot be indexed", errors)
        self.uuids = [p.uuid for p in states]
        self.parent = [-1 if p.parent_uuid is None else at[p.parent_uuid] for p in states]
        self.traits = [p.traits for p in states]
        self.aggregates = [p.aggregates for p in states]
        self.rooms = [{rc: _Room.of(inv.normalised(), usages.get(p.uuid, {}).get(rc, 0))
                       for rc, inv in p.inventories.items()} for p in states]
        self.ancestors: list[frozenset[int]] = [frozenset()] * (len(states) + 1)  # [-1]: none
        self.node = [0] * len(states)
        children: dict[int, list[int]] = defaultdict(list)
        for i, parent in enumerate(self.parent):
            children[parent].append(i)
        self.trees = self._classify(children)

    def _classify(self, children: Mapping[int, list[int]]) -> list[_Tree]:
        """Group identical trees: a subtree's key interns (traits, aggregates, rooms, sorted
        child keys), so equal keys mean isomorphic trees; members list their uuids in the
        preorder that visits children by key, which maps one tree onto another."""
        nodes: dict[tuple[Any, ...], int] = {}
        interned: dict[tuple[int, tuple[int, ...]], int] = {}
        key: dict[int, int] = {}
        trees: dict[int, _Tree] = {}
        for root in children.get(-1, ()):
            order, stack = [], [root]
            while stack:  # preorder, ancestors set on the way down
                i = stack.pop()
                self.ancestors[i] = self.ancestors[self.parent[i]] | {i}
                order.append(i)
                stack.extend(children.get(i, ()))
            for i in reversed(order):
                self.node[i] = nodes.setdefault(
                    (self.traits[i], self.aggregates[i], tuple(sorted(self.rooms[i].items()))),
                    len(nodes))
                kids = tuple(sorted(key[c] for c in children.get(i, ())))
                key[i] = interned.setdefault((self.node[i], kids), len(interned))
            canonical, stack = [], [root]
            while stack:
                i = stack.pop()
                canonical.append(i)
                stack.extend(sorted(children.get(i, ()), key=key.__getitem__, reverse=True))
            at = {i: k for k, i in enumerate(canonical)}
            tree = trees.setdefault(key[root], _Tree(
                tuple(canonical), tuple(at.get(self.parent[i], -1) for i in canonical),
                tuple(self.node[i] for i in canonical), []))
            tree.members.append(tuple(self.uuids[i] for i in canonical))
        self.facts: list[tuple[Any, ...]] = list(nodes)
        return list(trees.values())


# -- the search ----------------------------------------------------------------------------
class _Part(NamedTuple):
    """What one group takes in one candidate: (provider, class, amount), the providers it maps
    to and their common ancestors."""

    takes: tuple[tuple[int, str, int], ...]
    providers: frozenset[int]
    common: frozenset[int]


class _Search:
    """One request over one index: what the searches of its trees share (groups in search
    order, resourceless first; same_subtree constraints as depths; views of nodes)."""

    def __init__(self, ix: CandidateIndex, req: CandidateRequest) -> None:
        self.ix, self.req = ix, req
        self.groups = sorted(req.groups, key=lambda g: (bool(g.resources), not g.suffix))
        self.traits = req.root_required | req.root_forbidden
        self.aggs: frozenset[str] = frozenset()
        self.asked: dict[str, list[int]] = defaultdict(list)
        for g in req.groups:
            self.traits |= g.forbidden.union(*g.required)
            self.aggs |= g.forbidden_aggregates.union(*g.member_of)
            for rc, n in g.resources.items():
                self.asked[rc].append(n)
        self.sums = {rc: sorted({sum(c) for k in range(2, len(a) + 1) for c in combinations(a, k)}
                                - set(a)) for rc, a in self.asked.items()}  # one alone: fits()
        self.isolated = [req.group_policy == "isolate" and bool(g.suffix) for g in self.groups]
        self.subtrees = [[d for d, g in enumerate(self.groups) if g.suffix in st]
                         for st in req.same_subtree]
        self.views: dict[tuple[Any, ...], int] = {}
        self.view_of: dict[int, int] = {}

    def view(self, node: int) -> int:
        """What the request sees of a node: the traits and aggregates it names; for each class
        it asks, whether each group's amount fits and each sum of them (groups sharing the
        provider) stays within ``capacity - used`` and ``max_unit``."""
        if node not in self.view_of:
            t, a, rooms = self.ix.facts[node]
            fit = tuple((rc, tuple(r.fits(n) for n in self.asked[rc]),
                         tuple(r.used + n <= int(r.capacity) and n <= r.max_unit
                               for n in self.sums[rc]))
                        for rc, r in rooms if rc in self.asked)
            self.view_of[node] = self.views.setdefault((t & self.traits, a & self.aggs, fit),
                                                       len(self.views))
        return self.view_of[node]

    def _part(self, takes: tuple[tuple[int, str, int], ...], used: frozenset[int]) -> _Part:
        return _Part(takes, used, frozenset.intersection(*(self.ix.ancestors[p] for p in used)))

    def _suffixed(self, tree: Sequence[int], g: RequestGroup) -> list[_Part]:
        ix = self.ix
        if not g.resources and not g.required and not g.member_of:
            return []  # Placement: a resourceless group with no positive filter matches nothing
        return [self._part(tuple((p, rc, n) for rc, n in g.resources.items()), frozenset({p}))
                for p in tree
                if all(rc in ix.rooms[p] and ix.rooms[p][rc].fits(n)
                       for rc, n in g.resources.items())
                and all(any_of & ix.traits[p] for any_of in g.required)
                and not ix.traits[p] & g.forbidden and not ix.aggregates[p] & g.forbidden_aggregates
                and all(any_of & ix.aggregates[p] for any_of in g.member_of)]

    def _unsuffixed(self, tree: Sequence[int], g: RequestGroup) -> list[_Part]:
        ix, root = self.ix, tree[0]
        root_in = all(any_of & ix.aggregates[root] for any_of in g.member_of)
        banned = bool(ix.aggregates[root] & g.forbidden_aggregates)
        per_class = [[(p, rc, n) for p in tree
                      if rc in ix.rooms[p] and ix.rooms[p][rc].fits(n)
                      and (root_in or all(any_of & ix.aggregates[p] for any_of in g.member_of))
                      and not (banned or ix.aggregates[p] & g.forbidden_aggregates)]
                     for rc, n in g.resources.items()]
        combos = [(takes, frozenset(p for p, _, _ in takes)) for takes in product(*per_class)]
        return [self._part(takes, used) for takes, used in combos
                if all(any_of & frozenset().union(*(ix.traits[p] for p in used))
                       for any_of in g.required)
                and not any(ix.traits[p] & g.forbidden for p in used)]

    def tree(self, tree: Sequence[int]) -> list[tuple[frozenset[Any], frozenset[Any]]]:
        """Placement's answer for one tree, with provider indices: each group's parts, then
        one part per group, pruned as it goes: isolate; amounts summed per provider and class;
        each same_subtree, whose top must be a common ancestor of the providers chosen so far
        that is one of them or among the options of its groups still to choose."""
        ix, req, root = self.ix, self.req, tree[0]
        if not req.root_required <= ix.traits[root] or ix.traits[root] & req.root_forbidden:
            return []
        options = [self._suffixed(tree, g) if g.suffix else self._unsuffixed(tree, g)
                   for g in self.groups]
        if not all(options):
            return []
        later = [{d: frozenset(p for k in ds[i + 1:] for part in options[k] for p in part.providers)
                  for i, d in enumerate(ds)} for ds in self.subtrees]
        amounts: dict[tuple[int, str], int] = defaultdict(int)
        chosen: list[_Part] = []
        out: dict[tuple[frozenset[Any], frozenset[Any]], None] = {}

        def admissible(d: int, part: _Part, state: list[Any]) -> bool:
            for p, rc, _ in part.takes:
                room, total = ix.rooms[p][rc], amounts[(p, rc)]
                if room.used + total > int(room.capacity) or total > room.max_unit:
                    return False
            for c, ds in enumerate(self.subtrees):
                if d in ds:
                    common, members = state[c]
                    common = part.common if common is None else common & part.common
                    state[c] = common, members | part.providers
                    if not (common & state[c][1] or common & later[c][d]):
                        return False
            return True

        def walk(d: int, taken: frozenset[int], state: list[Any]) -> None:
            if d == len(options):
                out[(frozenset((p, rc, n) for (p, rc), n in amounts.items() if n),
                     frozenset((g.suffix, p) for g, part in zip(self.groups, chosen)
                               for p in part.providers))] = None
                return
            for part in options[d]:
                if self.isolated[d] and part.providers & taken:
                    continue
                for p, rc, n in part.takes:
                    amounts[(p, rc)] += n
                chosen.append(part)
                next_state = list(state)
                if admissible(d, part, next_state):
                    walk(d + 1, taken | part.providers if self.isolated[d] else taken,
                         next_state)
                chosen.pop()
                for p, rc, n in part.takes:
                    amounts[(p, rc)] -= n

        walk(0, frozenset(), [(None, frozenset())] * len(self.subtrees))
        return list(out)


def candidates(index: CandidateIndex, request: CandidateRequest) -> list[AllocationRequest]:
    """Every allocation request Placement 16 would return for ``request`` on the providers of
    ``index`` (``limit`` not applied), in a deterministic order. Pure.

    Speed: the index sorts trees into classes of identical trees (hashing subtrees); classes
    that look alike to the request (same shape and same ``_Search.view`` of each node: they
    differ only in traits or aggregates it does not name, or in usages that do not change what
    fits) share one search, whose answer is mapped onto each member tree. A fleet of alike
    hosts costs a few tree searches plus the output."""
    search = _Search(index, request)
    alike: dict[tuple[Any, ...], list[_Tree]] = {}
    for tree in index.trees:
        alike.setdefault((tree.shape, tuple(map(search.view, tree.nodes))), []).append(tree)
    out: list[AllocationRequest] = []
    for trees in alike.values():
        first = trees[0].providers
        position = {p: k for k, p in enumerate(first)}
        found = [(*zip(*((position[p], rc, n) for p, rc, n in takes)),
                  *zip(*((s, position[p]) for s, p in maps)))
                 for takes, maps in search.tree(first)]
        for uuids in (uuids for tree in trees for uuids in tree.members):
            at = uuids.__getitem__
            out.extend(AllocationRequest(frozenset(zip(map(at, where), rcs, amounts)),
                                         frozenset(zip(groups, map(at, mapped))))
                       for where, rcs, amounts, groups, mapped in found)
    return out
