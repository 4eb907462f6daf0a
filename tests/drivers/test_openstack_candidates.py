"""gpuplane's own allocation candidates (drivers/openstack/candidates.py): pure, no Placement.

The trees are small enough to check by hand; each expectation is what Placement 16 answers for
the same providers (tests/openstack/test_placement_candidates.py compares on random fleets).
"""

from __future__ import annotations

from typing import Any

import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.drivers.openstack.candidates import (
    AllocationRequest,
    CandidateIndex,
    candidates,
    parse_request,
)
from gpuplane.drivers.openstack.model import Inventory, ProviderState

SITE = "11111111-1111-1111-1111-111111111111"
NODE = "22222222-2222-2222-2222-222222222222"
TWO_GPUS_ONE_NUMA = {"resources_G1": "VGPU:1", "resources_G2": "VGPU:1",
                     "required_NUMA": "HW_NUMA_ROOT", "same_subtree": "_G1,_G2,_NUMA",
                     "group_policy": "isolate"}


def host(name: str, *, root_traits: frozenset[str] = frozenset({"HW_CPU_X86_AMD_SEV"})
         ) -> list[ProviderState]:
    """``name``: VCPU 8 (2 reserved, max 5 at once), SEV, in SITE; ``name/numa0`` (also
    CUSTOM_PX) with gpu0 (also in NODE) and gpu1; ``name/numa1`` with gpu2 and gpu3. Provider
    uuids are their names, to keep the expectations readable."""
    out = [ProviderState(name, name, None, {"VCPU": Inventory(8, reserved=2, max_unit=5)},
                         root_traits, frozenset({SITE})),
           ProviderState(f"{name}/numa0", "", name, traits=frozenset({"HW_NUMA_ROOT",
                                                                       "CUSTOM_PX"})),
           ProviderState(f"{name}/numa1", "", name, traits=frozenset({"HW_NUMA_ROOT"}))]
    for g in range(4):
        out.append(ProviderState(f"{name}/gpu{g}", "", f"{name}/numa{g // 2}",
                                 {"VGPU": Inventory(1)}, frozenset({"CUSTOM_GPU_H100"}),
                                 frozenset({NODE}) if g == 0 else frozenset()))
    return out


@pytest.fixture
def index() -> CandidateIndex:
    """One host whose gpu3 is taken."""
    return CandidateIndex(host("h"), {"h/gpu3": {"VGPU": 1}})


def answer(index: CandidateIndex, params: Any) -> set[tuple[frozenset[Any], frozenset[Any]]]:
    """The candidates as sets of (provider, class, amount) and (group, provider)."""
    found = candidates(index, parse_request(params))
    assert len(found) == len(set(found)), "a candidate is returned twice"
    return {(c.allocations, c.mappings) for c in found}


def cand(allocs: dict[str, dict[str, int]], maps: dict[str, list[str]]
         ) -> tuple[frozenset[Any], frozenset[Any]]:
    c = AllocationRequest.from_json({"allocations": {rp: {"resources": r}
                                                     for rp, r in allocs.items()},
                                     "mappings": maps})
    return c.allocations, c.mappings


# -- parsing -------------------------------------------------------------------------------
def test_a_two_gpus_one_numa_request_is_read_into_groups() -> None:
    req = parse_request(TWO_GPUS_ONE_NUMA)
    assert [g.suffix for g in req.groups] == ["_G1", "_G2", "_NUMA"]
    assert req.groups[0].resources == {"VGPU": 1}
    assert req.groups[2].resources == {} and req.groups[2].required == (
        frozenset({"HW_NUMA_ROOT"}),)
    assert req.same_subtree == (frozenset({"_G1", "_G2", "_NUMA"}),)
    assert req.group_policy == "isolate"


def test_traits_aggregates_and_wide_parameters_are_read() -> None:
    req = parse_request([("resources", "VCPU:2,MEMORY_MB:1024"), ("required", "A,!B"),
                         ("required", "in:C,D"), ("member_of", SITE),
                         ("member_of", f"!in:{NODE},{SITE}"), ("root_required", "R,!S"),
                         ("limit", "5")])
    (g,) = req.groups
    assert g.suffix == "" and g.resources == {"VCPU": 2, "MEMORY_MB": 1024}
    assert g.required == (frozenset({"A"}), frozenset({"C", "D"}))
    assert g.forbidden == {"B"}
    assert g.member_of == (frozenset({SITE}),) and g.forbidden_aggregates == {NODE, SITE}
    assert (req.root_required, req.root_forbidden, req.limit) == ({"R"}, {"S"}, 5)


@pytest.mark.parametrize(("params", "loc"), [
    ({"resources": "VGPU"}, "resources"),
    ({"resources": "VGPU:0"}, "resources"),
    ({"resources": "VGPU:x"}, "resources"),
    ([("resources", "VGPU:1"), ("resources", "VGPU:2")], "resources"),
    ({"required": "HW_NUMA_ROOT"}, "resources"),
    ({"resources_G": "VGPU:1", "required": "HW_NUMA_ROOT"}, "required"),
    ({"resources": "VGPU:1", "required_N": "HW_NUMA_ROOT"}, "required_N"),
    ({"resources_G": "VGPU:1", "resources_H": "VGPU:1"}, "group_policy"),
    ({"resources": "VGPU:1", "group_policy": "spread"}, "group_policy"),
    ({"resources_G": "VGPU:1", "same_subtree": "_G,_X"}, "same_subtree"),
    ({"resources_G": "VGPU:1", "same_subtree": ",_G"}, "same_subtree"),
    ({"resources": "VGPU:1", "required": ""}, "required"),
    ({"resources": "VGPU:1", "required": "A,!A"}, "required"),
    ({"resources": "VGPU:1", "required": "in:A,!B"}, "required"),
    ({"resources": "VGPU:1", "member_of": f"{SITE},{NODE}"}, "member_of"),
    ({"resources": "VGPU:1", "member_of": "site-a"}, "member_of"),
    ({"resources": "VGPU:1", "root_required": "in:A,B"}, "root_required"),
    ({"resources": "VGPU:1", "root_required": "A,!A"}, "root_required"),
    ({"resources": "VGPU:1", "limit": "0"}, "limit"),
    ([("resources", "VGPU:1"), ("limit", "1"), ("limit", "2")], "limit"),
    ({"resources": "VGPU:1", "in_tree": SITE}, "in_tree"),
    ({"resources": "VGPU:1", "resouces_G": "VGPU:1"}, "resouces_G"),
], ids=["no-amount", "zero", "not-a-number", "resources-twice", "no-resources-at-all",
        "unsuffixed-group-without-resources", "resourceless-group-outside-same-subtree",
        "two-groups-no-policy", "unknown-policy", "same-subtree-unknown-suffix",
        "same-subtree-empty-suffix", "empty-trait", "trait-required-and-forbidden",
        "in-with-forbidden", "aggregates-without-in", "aggregate-not-a-uuid",
        "root-required-any-of", "root-required-conflict", "limit-zero", "limit-twice",
        "in-tree-unsupported", "typo"])
def test_an_invalid_request_names_its_parameter(params: Any, loc: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_request(params)
    assert loc in [e.loc for e in exc.value.errors], exc.value


def test_every_problem_is_listed_and_a_typo_gets_a_hint() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_request({"resources": "VGPU:0", "group_polcy": "isolate"})
    assert [e.loc for e in exc.value.errors] == ["resources", "group_polcy"]
    assert "did you mean 'group_policy'?" in exc.value.errors[1].msg


# -- semantics on one host -----------------------------------------------------------------
def test_two_gpus_on_one_numa_node_skip_the_node_with_a_gpu_taken(index: CandidateIndex
                                                                  ) -> None:
    assert answer(index, TWO_GPUS_ONE_NUMA) == {
        cand({"h/gpu0": {"VGPU": 1}, "h/gpu1": {"VGPU": 1}},
             {"_G1": ["h/gpu0"], "_G2": ["h/gpu1"], "_NUMA": ["h/numa0"]}),
        cand({"h/gpu0": {"VGPU": 1}, "h/gpu1": {"VGPU": 1}},
             {"_G1": ["h/gpu1"], "_G2": ["h/gpu0"], "_NUMA": ["h/numa0"]})}


def test_the_unsuffixed_group_spreads_over_the_tree(index: CandidateIndex) -> None:
    assert answer(index, {"resources": "VCPU:2,VGPU:1"}) == {
        cand({"h": {"VCPU": 2}, f"h/gpu{g}": {"VGPU": 1}}, {"": ["h", f"h/gpu{g}"]})
        for g in (0, 1, 2)}


@pytest.mark.parametrize(("params", "count"), [
    ({"resources": "VCPU:1,VGPU:1", "required": "CUSTOM_GPU_H100,HW_CPU_X86_AMD_SEV"}, 3),
    ({"resources": "VGPU:1", "required": "CUSTOM_GPU_H100,HW_CPU_X86_AMD_SEV"}, 0),
    ({"resources": "VGPU:1", "required": "HW_NUMA_ROOT"}, 0),
    ({"resources": "VCPU:1,VGPU:1", "required": "!HW_CPU_X86_AMD_SEV"}, 0),
    ({"resources": "VGPU:1", "required": "!CUSTOM_PX"}, 3),
    ({"resources": "VCPU:1,VGPU:1", "required": "in:CUSTOM_PX,HW_CPU_X86_AMD_SEV"}, 3),
], ids=["traits-met-together", "root-trait-without-root-resources", "numa-gives-nothing",
        "forbidden-on-a-giving-provider", "forbidden-on-the-numa-does-not-count", "any-of"])
def test_unsuffixed_traits_count_the_providers_that_give_resources(
        index: CandidateIndex, params: dict[str, str], count: int) -> None:
    assert len(answer(index, params)) == count


@pytest.mark.parametrize(("params", "gpus"), [
    ({"resources": "VGPU:1", "member_of": SITE}, {0, 1, 2}),
    ({"resources_G": "VGPU:1", "member_of_G": SITE}, set()),
    ({"resources_G": "VGPU:1", "member_of_G": NODE}, {0}),
    ({"resources": "VGPU:1", "member_of": f"!{SITE}"}, set()),
    ({"resources_G": "VGPU:1", "member_of_G": f"!{SITE}"}, {0, 1, 2}),
    ({"resources": "VGPU:1", "member_of": f"!{NODE}"}, {1, 2}),
], ids=["unsuffixed-root-aggregate-spans-the-tree", "suffixed-needs-its-own",
        "suffixed-own-aggregate", "unsuffixed-forbidden-root", "suffixed-forbidden-root-ignored",
        "unsuffixed-forbidden-own"])
def test_member_of_reaches_the_root_only_for_the_unsuffixed_group(
        index: CandidateIndex, params: dict[str, str], gpus: set[int]) -> None:
    found = answer(index, params)
    assert {int(rp[-1]) for allocs, _ in found for rp, _, _ in allocs} == gpus


def test_member_of_clauses_are_not_met_half_by_the_root_and_half_by_the_gpu(
        index: CandidateIndex) -> None:
    assert answer(index, [("resources", "VGPU:1"), ("member_of", SITE),
                          ("member_of", NODE)]) == set()


def test_a_resourceless_group_with_only_forbidden_traits_matches_nothing(
        index: CandidateIndex) -> None:
    assert answer(index, {"resources_G": "VGPU:1", "required_N": "!CUSTOM_PX",
                          "same_subtree": "_G,_N", "group_policy": "none"}) == set()


def test_isolate_counts_resourceless_groups(index: CandidateIndex) -> None:
    params = {"resources_G": "VGPU:1", "required_N": "CUSTOM_GPU_H100",
              "same_subtree": "_G,_N"}
    assert answer(index, {**params, "group_policy": "isolate"}) == set()
    assert answer(index, {**params, "group_policy": "none"}) == {
        cand({f"h/gpu{g}": {"VGPU": 1}}, {"_G": [f"h/gpu{g}"], "_N": [f"h/gpu{g}"]})
        for g in (0, 1, 2)}


@pytest.mark.parametrize(("params", "found"), [
    ({"resources": "VCPU:5"}, [cand({"h": {"VCPU": 5}}, {"": ["h"]})]),
    ({"resources": "VCPU:6"}, []),
    ({"resources": "VCPU:3", "resources_G": "VCPU:2", "group_policy": "none"},
     [cand({"h": {"VCPU": 5}}, {"": ["h"], "_G": ["h"]})]),
    ({"resources": "VCPU:3", "resources_G": "VCPU:3", "group_policy": "none"}, []),
    ({"resources_A": "VGPU:1", "resources_B": "VGPU:1", "group_policy": "none",
      "required_N": "CUSTOM_PX", "same_subtree": "_A,_B,_N"},
     [cand({"h/gpu0": {"VGPU": 1}, "h/gpu1": {"VGPU": 1}},
           {"_A": [a], "_B": [b], "_N": ["h/numa0"]})
      for a, b in (("h/gpu0", "h/gpu1"), ("h/gpu1", "h/gpu0"))]),
], ids=["reserved-and-max-unit", "over-max-unit", "groups-summed", "sum-over-max-unit",
        "same-gpu-twice-exceeds-capacity"])
def test_amounts_of_all_groups_on_a_provider_must_fit_together(
        index: CandidateIndex, params: dict[str, str], found: list[Any]) -> None:
    assert answer(index, params) == set(found)


def test_root_required_filters_trees() -> None:
    ix = CandidateIndex([*host("a"), *host("b", root_traits=frozenset())])
    assert {rp.split("/")[0] for allocs, _ in answer(
        ix, {"resources": "VGPU:1", "root_required": "HW_CPU_X86_AMD_SEV"})
        for rp, _, _ in allocs} == {"a"}
    assert {rp.split("/")[0] for allocs, _ in answer(
        ix, {"resources": "VGPU:1", "root_required": "!HW_CPU_X86_AMD_SEV"})
        for rp, _, _ in allocs} == {"b"}


# -- index and answers ---------------------------------------------------------------------
def test_identical_trees_share_a_search_and_answer_with_their_own_uuids() -> None:
    ix = CandidateIndex([*host("a"), *host("b"), *host("c")], {"c/gpu0": {"VGPU": 1}})
    assert len(ix.trees) == 2  # a and b alike; c has a GPU taken
    found = answer(ix, TWO_GPUS_ONE_NUMA)
    assert len(found) == 4 + 4 + 2
    for allocs, maps in found:
        assert len({rp.split("/")[0] for rp, _, _ in allocs} | {rp.split("/")[0]
                                                                for _, rp in maps}) == 1
    assert cand({"c/gpu2": {"VGPU": 1}, "c/gpu3": {"VGPU": 1}},
                {"_G1": ["c/gpu3"], "_G2": ["c/gpu2"], "_NUMA": ["c/numa1"]}) in found


def test_answers_do_not_depend_on_input_order() -> None:
    providers = [*host("a"), *host("b")]
    reordered = [p for p in reversed(providers) if p.parent_uuid] + [
        p for p in providers if not p.parent_uuid]
    usages = {"b/gpu1": {"VGPU": 1}}
    assert (answer(CandidateIndex(providers, usages), TWO_GPUS_ONE_NUMA)
            == answer(CandidateIndex(reordered, usages), TWO_GPUS_ONE_NUMA))


def test_to_json_is_placements_shape_and_reads_back() -> None:
    (c,) = candidates(CandidateIndex(host("h")), parse_request({"resources": "VCPU:5"}))
    assert c.to_json() == {"allocations": {"h": {"resources": {"VCPU": 5}}},
                           "mappings": {"": ["h"]}}
    assert AllocationRequest.from_json(c.to_json()) == c


def test_an_index_names_what_it_cannot_build_from() -> None:
    gpu = ProviderState("g", "g", "missing", {"VGPU": Inventory(1)})
    root = ProviderState("r", "r", None)
    with pytest.raises(InvalidInput) as exc:
        CandidateIndex([root, root, gpu], {"nope": {"VGPU": 1}})
    assert [e.loc for e in exc.value.errors] == [
        "providers[1].uuid", "providers[2].parent_uuid", "usages[nope]"]
