"""MIG catalogue and layouts (domain/mig.py): profile tables, maximal layouts, invalid starts."""

from __future__ import annotations

from fractions import Fraction

import pytest

from gpuplane.domain.errors import Conflict, InvalidInput
from gpuplane.domain.mig import (
    MIG_MODELS,
    MIG_PROFILES,
    MigInstance,
    MigInstanceRef,
    MigLayout,
    check_profile_name,
    creatable_starts,
    free_instances,
    get_profile,
    layout_from_profiles,
    layout_problems,
    mig_model,
    models_offering,
    obtainable_counts,
    occupy,
    give_back,
    placement_options,
    reclaim_options,
    request_usage_milli,
    take,
    usage,
    usage_milli,
    vacate,
    validate,
    with_instance,
    without_instance,
)

# The NVIDIA MIG user guide tables, typed in again independently of the catalogue:
# name -> (compute slices of 7, memory slices of 8, instances available, start slots).
ONE = (0, 1, 2, 3, 4, 5, 6)
EXPECTED = {
    "A100-40GB": {
        "1g.5gb": (1, 1, 7, ONE), "1g.5gb+me": (1, 1, 1, ONE), "1g.10gb": (1, 2, 4, (0, 2, 4, 6)),
        "2g.10gb": (2, 2, 3, (0, 2, 4)), "3g.20gb": (3, 4, 2, (0, 4)), "4g.20gb": (4, 4, 1, (0,)),
        "7g.40gb": (7, 8, 1, (0,)),
    },
    "A100-80GB": {
        "1g.10gb": (1, 1, 7, ONE), "1g.10gb+me": (1, 1, 1, ONE), "1g.20gb": (1, 2, 4, (0, 2, 4, 6)),
        "2g.20gb": (2, 2, 3, (0, 2, 4)), "3g.40gb": (3, 4, 2, (0, 4)), "4g.40gb": (4, 4, 1, (0,)),
        "7g.80gb": (7, 8, 1, (0,)),
    },
    "H100-80GB": {
        "1g.10gb": (1, 1, 7, ONE), "1g.10gb+me": (1, 1, 1, ONE), "1g.20gb": (1, 2, 4, (0, 2, 4, 6)),
        "2g.20gb": (2, 2, 3, (0, 2, 4)), "3g.40gb": (3, 4, 2, (0, 4)), "4g.40gb": (4, 4, 1, (0,)),
        "7g.80gb": (7, 8, 1, (0,)),
    },
    "H100-94GB": {
        "1g.12gb": (1, 1, 7, ONE), "1g.12gb+me": (1, 1, 1, ONE), "1g.24gb": (1, 2, 4, (0, 2, 4, 6)),
        "2g.24gb": (2, 2, 3, (0, 2, 4)), "3g.47gb": (3, 4, 2, (0, 4)), "4g.47gb": (4, 4, 1, (0,)),
        "7g.94gb": (7, 8, 1, (0,)),
    },
    "H200-141GB": {
        "1g.18gb": (1, 1, 7, ONE), "1g.18gb+me": (1, 1, 1, ONE), "1g.35gb": (1, 2, 4, (0, 2, 4, 6)),
        "2g.35gb": (2, 2, 3, (0, 2, 4)), "3g.71gb": (3, 4, 2, (0, 4)), "4g.71gb": (4, 4, 1, (0,)),
        "7g.141gb": (7, 8, 1, (0,)),
    },
}
ALL = [(m, p) for m in EXPECTED for p in EXPECTED[m]]


_SHAPE_INDEX = {"1g": 0, "1g+me": 1, "1g.2m": 2, "2g": 3, "3g": 4, "4g": 5, "7g": 6}


def _size(model: str, shape: str) -> str:
    """Profile name of a shape ("1g", "1g.2m" = 1g with two memory slices, "2g", ...)."""
    return list(EXPECTED[model])[_SHAPE_INDEX[shape]]


def test_catalogue_covers_exactly_the_documented_models() -> None:
    assert set(MIG_MODELS) == set(EXPECTED)
    for model in EXPECTED:
        assert list(MIG_PROFILES[model]) == list(EXPECTED[model])


@pytest.mark.parametrize("model,name", ALL, ids=[f"{m} {p}" for m, p in ALL])
def test_profile_table_matches_the_nvidia_user_guide(model: str, name: str) -> None:
    prof = get_profile(model, name)
    compute, memory, max_n, starts = EXPECTED[model][name]
    assert (prof.compute_slices, prof.memory_slices, prof.max_instances, prof.starts) == \
        (compute, memory, max_n, starts)
    assert prof.media_extensions == name.endswith("+me")
    # memory_mib never exceeds the nominal size in the name (a lower bound of the hardware)
    nominal_gb = int(name.split(".")[1].split("gb")[0])
    assert 0.9 * nominal_gb * 10**9 / 2**20 <= prof.memory_mib <= nominal_gb * 1024
    # every documented start keeps the instance inside the 8 memory slices
    assert all(s + prof.memory_slices <= 8 for s in prof.starts)


@pytest.mark.parametrize("model", list(EXPECTED))
@pytest.mark.parametrize("name_index", range(7))
def test_homogeneous_layout_reaches_the_documented_instance_count(model: str,
                                                                  name_index: int) -> None:
    name = list(EXPECTED[model])[name_index]
    layout = MigLayout.empty(model)
    while starts := creatable_starts(layout, name):
        layout = with_instance(layout, name, starts[0])
    assert len(layout.instances) == EXPECTED[model][name][2]
    assert validate(layout) is layout


@pytest.mark.parametrize("model", list(EXPECTED))
@pytest.mark.parametrize("shapes,leftover", [
    (["1g"] * 7, {}),
    (["2g"] * 3, {"1g": [6], "1g.2m": [6]}),
    (["3g"] * 2, {}),
    (["4g", "3g"], {}),
    (["7g"], {}),
    (["1g.2m"] * 4, {}),
], ids=["7 x 1g", "3 x 2g (+1 1g)", "2 x 3g", "4g + 3g", "7g", "4 x 1g two-slice"])
def test_maximal_layouts(model: str, shapes: list[str], leftover: dict[str, list[int]]) -> None:
    layout = layout_from_profiles(model, [_size(model, s) for s in shapes])
    assert layout_problems(layout) == []
    for shape in ("1g", "1g.2m", "2g", "3g", "4g", "7g"):
        assert list(creatable_starts(layout, _size(model, shape))) == leftover.get(shape, []), shape


def test_three_2g_plus_one_1g_fills_all_compute() -> None:
    layout = layout_from_profiles("H100-80GB", ["2g.20gb"] * 3 + ["1g.10gb"])
    assert layout.compute_used == 7
    assert [(i.profile, i.start) for i in layout.instances] == [
        ("2g.20gb", 0), ("2g.20gb", 2), ("2g.20gb", 4), ("1g.10gb", 6)]


def test_exhaustive_search_finds_the_only_arrangement_of_3g_2g_1g_1g() -> None:
    # lowest-start-first would put 3g at 0 and strand the last 1g at slice 7; 3g must go to 4
    layout = layout_from_profiles("H100-80GB", ["1g.10gb", "3g.40gb", "1g.10gb", "2g.20gb"])
    assert [(i.profile, i.start) for i in layout.instances] == [
        ("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3), ("3g.40gb", 4)]
    with pytest.raises(Conflict) as err:
        layout_from_profiles("H100-80GB", ["4g.40gb", "3g.40gb", "1g.10gb"])
    assert err.value.code == "gpuplane.mig.slot_unavailable"


@pytest.mark.parametrize("profile,start", [
    ("3g.40gb", 2), ("3g.40gb", 1), ("2g.20gb", 6), ("2g.20gb", 1), ("1g.10gb", 7),
    ("1g.20gb", 1), ("4g.40gb", 4), ("7g.80gb", 1),
])
def test_invalid_start_is_rejected(profile: str, start: int) -> None:
    empty = MigLayout.empty("H100-80GB")
    assert start not in creatable_starts(empty, profile)
    with pytest.raises(Conflict) as err:
        with_instance(empty, profile, start)
    assert err.value.code == "gpuplane.mig.slot_unavailable"
    bad = MigLayout("H100-80GB", (MigInstance(start, profile),))
    problems = layout_problems(bad)
    assert len(problems) == 1 and problems[0].loc == "mig_layout.instances[0].start"
    with pytest.raises(InvalidInput) as err2:
        validate(bad)
    assert err2.value.code == "gpuplane.mig.invalid_layout"


def test_overlap_compute_and_count_limits_are_reported_together() -> None:
    bad = MigLayout("A100-40GB", (
        MigInstance(0, "7g.40gb"), MigInstance(0, "1g.5gb+me"), MigInstance(1, "1g.5gb+me"),
        MigInstance(3, "9g.99gb")))
    text = " | ".join(f"{p.loc}: {p.msg}" for p in layout_problems(bad))
    assert "overlaps" in text
    assert "9 compute slices" in text
    assert "2 instances of 1g.5gb+me" in text
    assert "'9g.99gb' is not a MIG profile of A100-40GB" in text


@pytest.mark.parametrize("instances", [
    [("4g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)],
    [("3g.40gb", 0), ("1g.10gb", 4), ("1g.10gb", 5), ("1g.20gb", 6)],
    [("1g.10gb", 0), ("1g.10gb+me", 1), ("2g.20gb", 2), ("3g.40gb", 4)],
    [("1g.20gb", 0), ("1g.20gb", 2), ("1g.20gb", 4), ("1g.20gb", 6)],
    [("2g.20gb", 0), ("2g.20gb", 2), ("3g.40gb", 4)],
], ids=lambda v: " + ".join(f"{p}@{s}" for p, s in v))
def test_mixed_layouts_are_valid_and_full(instances: list[tuple[str, int]]) -> None:
    layout = MigLayout.empty("H100-80GB")
    for profile, start in instances:
        layout = with_instance(layout, profile, start)
    assert layout_problems(layout) == []
    # nothing else fits any more
    assert all(not creatable_starts(layout, p) for p in MIG_PROFILES["H100-80GB"])


def test_occupy_vacate_and_destroy() -> None:
    layout = with_instance(MigLayout.empty("H200"), "3g.71gb", 4)
    assert free_instances(layout, "3g.71gb") == (MigInstance(4, "3g.71gb"),)
    busy = occupy(layout, 4)
    assert free_instances(busy, "3g.71gb") == ()
    assert layout.at(4).occupied is False  # the original is unchanged
    for op, target, code in [(occupy, busy, "gpuplane.mig.already_occupied"),
                             (vacate, layout, "gpuplane.mig.not_occupied"),
                             (without_instance, busy, "gpuplane.mig.instance_busy"),
                             (vacate, MigLayout.empty("H200"), "gpuplane.mig.no_instance")]:
        with pytest.raises(Conflict) as err:
            op(target, 4)
        assert err.value.code == code
    assert vacate(busy, 4) == layout
    assert without_instance(layout, 4) == MigLayout.empty("H200-141GB")


def test_unknown_model_and_profile_are_domain_errors_naming_the_valid_ones() -> None:
    with pytest.raises(InvalidInput) as err:
        MigLayout.empty("V100M32")
    assert err.value.code == "gpuplane.mig.unknown_model"
    assert "H100-80GB" in err.value.detail and err.value.errors[0].loc == "mig_layout.model"
    with pytest.raises(InvalidInput) as err:
        get_profile("A100-40GB", "3g.40gb")
    assert err.value.code == "gpuplane.mig.unknown_profile"
    assert "3g.20gb" in err.value.detail
    with pytest.raises(InvalidInput) as err:
        with_instance(MigLayout.empty("H100-80GB"), "5g.50gb", 0)
    assert err.value.code == "gpuplane.mig.unknown_profile"
    with pytest.raises(InvalidInput) as err:
        check_profile_name("3g.41gb")
    assert err.value.code == "gpuplane.mig.unknown_profile"
    assert creatable_starts(MigLayout.empty("H100-80GB"), "3g.20gb") == ()


@pytest.mark.parametrize("alias,canonical", [
    ("NVIDIA H100 80GB HBM3", None), ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("a100-pcie-40gb", "A100-40GB"), ("H200", "H200-141GB"), ("H100 NVL", "H100-94GB"),
    ("H100-SXM5-80GB", "H100-80GB"),
])
def test_model_aliases(alias: str, canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(InvalidInput):
            mig_model(alias)
    else:
        assert mig_model(alias) == canonical


def test_profile_names_are_normalized() -> None:
    assert get_profile("H100-80GB", "nvidia.com/mig-3g.40gb").name == "3g.40gb"
    assert get_profile("H100-80GB", "MIG 1g.10gb+me").name == "1g.10gb+me"
    assert set(models_offering("3g.40gb")) == {"A100-80GB", "H100-80GB"}
    assert set(models_offering("1g.10gb")) == {"A100-40GB", "A100-80GB", "H100-80GB"}


def test_usage_weight_counts_compute_slices() -> None:
    assert usage("H100-80GB", "7g.80gb") == 1
    assert usage("H100-80GB", "3g.40gb") == Fraction(3, 7)
    assert usage("A100-40GB", "1g.10gb") == usage("A100-40GB", "1g.5gb") == Fraction(1, 7)
    assert usage_milli("H100-80GB", "7g.80gb") == 1000
    assert usage_milli("H100-80GB", "1g.10gb") == 142
    full = layout_from_profiles("H100-80GB", ["1g.10gb"] * 7)
    assert sum(full.profile_of(i).usage_milli for i in full.instances) <= 1000
    assert sum(full.profile_of(i).usage for i in full.instances) == 1


def test_request_usage_is_known_before_a_model_is_chosen() -> None:
    assert request_usage_milli("7g.141gb") == 1000
    assert request_usage_milli("nvidia.com/mig-3g.40gb") == 428
    assert request_usage_milli("1g.10gb") == 142  # 1g on A100-40GB and on H100 alike
    for model in EXPECTED:  # names never disagree between models
        for name, prof in MIG_PROFILES[model].items():
            assert request_usage_milli(name) == prof.usage_milli
    with pytest.raises(InvalidInput) as err:
        request_usage_milli("2g.99gb")
    assert err.value.code == "gpuplane.mig.unknown_profile"


def test_placement_options_prefers_slots_that_keep_large_profiles() -> None:
    empty = MigLayout.empty("H100-80GB")
    assert placement_options(empty) == 34
    at0 = placement_options(with_instance(empty, "1g.10gb", 0))
    at6 = placement_options(with_instance(empty, "1g.10gb", 6))
    assert at6 > at0  # a 1g at slice 6 keeps the 4g.40gb creatable
    assert obtainable_counts(with_instance(empty, "1g.10gb", 6))["4g.40gb"] == 1
    assert obtainable_counts(with_instance(empty, "1g.10gb", 0))["4g.40gb"] == 0
    # a free existing instance counts as obtainable; an occupied one does not
    one = with_instance(empty, "3g.40gb", 0)
    assert obtainable_counts(one)["3g.40gb"] == 2
    assert obtainable_counts(occupy(one, 0))["3g.40gb"] == 1


def test_take_and_give_back_apply_placement_entries() -> None:
    empty = MigLayout.empty("A100-80GB")
    created = take(empty, MigInstanceRef(0, "3g.40gb", 4, created=True))
    assert created.at(4) == MigInstance(4, "3g.40gb", True)
    freed = give_back(created, MigInstanceRef(0, "3g.40gb", 4, created=True))
    assert freed.at(4) == MigInstance(4, "3g.40gb", False)  # kept for reuse
    assert take(freed, MigInstanceRef(0, "3g.40gb", 4)) == created
    with pytest.raises(Conflict) as err:  # the instance at 4 is not a 2g
        take(freed, MigInstanceRef(0, "2g.20gb", 4))
    assert err.value.code == "gpuplane.mig.no_instance"


def test_reclaim_destroys_only_idle_instances_in_the_way() -> None:
    idle = layout_from_profiles("H100-80GB", ["1g.10gb"] * 7)
    assert creatable_starts(idle, "3g.40gb") == ()
    assert reclaim_options(idle, "3g.40gb") == ((0, (0, 1, 2, 3)), (4, (4, 5, 6)))
    held = occupy(idle, 5)
    assert reclaim_options(held, "3g.40gb") == ((0, (0, 1, 2, 3)),)
    assert reclaim_options(held, "7g.80gb") == ()
    after = take(held, MigInstanceRef(0, "3g.40gb", 0, created=True, reclaims=(0, 1, 2, 3)))
    assert layout_problems(after) == []
    assert [(i.profile, i.start, i.occupied) for i in after.instances] == [
        ("3g.40gb", 0, True), ("1g.10gb", 4, False), ("1g.10gb", 5, True), ("1g.10gb", 6, False)]
    with pytest.raises(Conflict) as err:  # a held instance is never destroyed
        take(held, MigInstanceRef(0, "3g.40gb", 4, created=True, reclaims=(4, 5, 6)))
    assert err.value.code == "gpuplane.mig.instance_busy"
