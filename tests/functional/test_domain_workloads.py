"""The workload domain (pure): spec validation, phase state machine, aggregation, retries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpuplane.domain.errors import Conflict
from gpuplane.domain.workloads import (TERMINAL, Phase, RetryPolicy, WorkloadSpec,
                                       aggregate_phase, can_transition, check_task_transition,
                                       parse_memory_mib)


@pytest.mark.parametrize(("text", "mib"), [(512, 512), ("512Mi", 512), ("4Gi", 4096),
                                           ("1.5G", 1536), ("2GiB", 2048), ("1Ti", 1048576),
                                           ("1536Ki", 2)])
def test_memory_amounts_are_read_in_mib(text, mib):
    assert parse_memory_mib(text) == mib


@pytest.mark.parametrize("bad", ["lots", "-1Gi", "1e9Gi", "4 GB extra", True, -1])
def test_unreadable_memory_is_refused(bad):
    with pytest.raises(ValueError):
        parse_memory_mib(bad)


def test_spec_errors_carry_every_field_path():
    with pytest.raises(ValidationError) as err:
        WorkloadSpec.model_validate({"name": "x", "tasks": [
            {"replicas": 0, "resources": {"gpus": -1, "cpu": 0}}], "topology": {"level": "moon"}})
    locs = {tuple(e["loc"]) for e in err.value.errors()}
    assert {("tasks", 0, "replicas"), ("tasks", 0, "resources", "gpus"),
            ("tasks", 0, "resources", "cpu"), ("topology", "level")} <= locs


def test_shapes_that_cannot_be_placed_are_refused():
    for resources in ({"gpus": 2, "gpu_milli": 500}, {"gpus": 2, "mig_profile": "1g.10gb"},
                      {"gpus": 1, "gpu_milli": 500, "mig_profile": "1g.10gb"}):
        with pytest.raises(ValidationError):
            WorkloadSpec.model_validate({"name": "x", "tasks": [{"resources": resources}]})
    with pytest.raises(ValidationError, match="topology needs gang"):
        WorkloadSpec.model_validate({"name": "x", "tasks": [{}], "topology": {"level": "host"}})
    with pytest.raises(ValidationError, match="unique"):
        WorkloadSpec.model_validate({"name": "x", "tasks": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ValidationError, match="tasks in all"):
        WorkloadSpec.model_validate({"name": "x", "tasks": [{"replicas": 1000}] * 5})


def test_task_slots_number_every_replica_once():
    spec = WorkloadSpec.model_validate({"name": "x", "tasks": [
        {"name": "ps", "replicas": 1}, {"name": "worker", "replicas": 3}]})
    assert [(i, g.name, r) for i, g, r in spec.task_slots()] == [
        (0, "ps", 0), (1, "worker", 0), (2, "worker", 1), (3, "worker", 2)]


def test_terminal_phases_are_final_and_illegal_moves_raise():
    for phase in TERMINAL:
        assert all(not can_transition(phase, other) for other in Phase if other != phase)
    with pytest.raises(Conflict):
        check_task_transition(Phase.SUCCEEDED, Phase.RUNNING)
    with pytest.raises(Conflict):
        check_task_transition(Phase.PENDING, Phase.RUNNING)  # must be admitted first


@settings(max_examples=200, derandomize=True, database=None)
@given(st.lists(st.sampled_from(list(Phase)), min_size=1, max_size=8), st.booleans())
def test_aggregate_phase_follows_its_tasks(phases, cancel):
    agg = aggregate_phase(phases, cancel)
    if all(p.terminal for p in phases):
        assert agg.terminal
        if not cancel and Phase.CANCELLED not in phases and Phase.FAILED not in phases \
                and Phase.LOST not in phases:
            assert agg is Phase.SUCCEEDED
    else:
        assert not agg.terminal
        assert (agg is Phase.RUNNING) == (Phase.RUNNING in phases)


def test_retry_backoff_doubles_up_to_its_maximum():
    policy = RetryPolicy(limit=5, backoff_s=10, backoff_max_s=60)
    assert [policy.delay_s(n) for n in range(0, 6)] == [0, 10, 20, 40, 60, 60]


def test_placement_shares_count_mig_slices_and_fractions():
    from gpuplane.domain.workloads import TaskPlacement

    assert TaskPlacement("h", (0, 1), 1000).share_milli() == {0: 1000, 1: 1000}
    assert TaskPlacement("h", (3,), 250).total_milli == 250
    mig = TaskPlacement("h", (2,), 0, ({"gpu_index": 2, "profile": "3g.40gb", "start": 0},))
    assert mig.share_milli() == {2: 428}
    assert TaskPlacement("h", (), 0).total_milli == 0
