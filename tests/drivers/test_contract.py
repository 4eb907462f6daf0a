"""The driver contract (drivers/base.py), run against every driver."""

from __future__ import annotations

from gpuplane.drivers.base import DriverHandle, TaskState, capabilities

from .conftest import wait_until


def states(driver, handles):
    return [o.state for o in driver.observe(handles)]


def test_a_started_task_is_running_then_succeeds(harness):
    d = harness.make()
    h = d.start(harness.task("t-1", 0.3), harness.placement())
    assert h.driver == d.kind and h.task_id == "t-1" and h.host == "h1"
    assert states(d, [h]) == [TaskState.RUNNING]
    assert wait_until(lambda: states(d, [h]) == [TaskState.SUCCEEDED])
    (obs,) = d.observe([h])
    assert obs.exit_code == 0


def test_observe_answers_one_observation_per_handle_in_order(harness):
    d = harness.make()
    hs = [d.start(harness.task(f"t-{i}", None if i % 2 else 0.0), harness.placement())
          for i in range(4)]
    assert wait_until(lambda: [o.task_id for o in d.observe(hs)] == ["t-0", "t-1", "t-2", "t-3"]
                      and states(d, hs)[0] == TaskState.SUCCEEDED)
    assert states(d, hs)[1] == TaskState.RUNNING
    for h in hs:
        d.stop(h, grace_s=1)


def test_stop_cancels_and_is_idempotent(harness):
    d = harness.make()
    h = d.start(harness.task("t-stop", None), harness.placement())
    d.stop(h, grace_s=2)
    d.stop(h, grace_s=2)
    assert wait_until(lambda: states(d, [h]) == [TaskState.CANCELLED])


def test_stopping_an_unknown_task_returns_silently(harness):
    d = harness.make()
    d.stop(DriverHandle(driver=d.kind, task_id="nobody", host="h1", data={}), grace_s=0.1)


def test_a_handle_without_driver_data_is_lost_not_an_error(harness):
    d = harness.make()
    (obs,) = d.observe([DriverHandle(driver=d.kind, task_id="ghost", host="h1", data={})])
    assert obs.state == TaskState.LOST and obs.message


def test_a_restarted_driver_adopts_a_running_task_from_its_stored_handle(harness):
    d1 = harness.make()
    h = d1.start(harness.task("t-adopt", None), harness.placement())
    stored = DriverHandle.from_dict(h.to_dict())
    d2 = harness.make()  # a new process: knows the task only from the handle
    (obs,) = d2.observe([stored])
    assert obs.state == TaskState.RUNNING
    d2.stop(stored, grace_s=2)
    assert wait_until(lambda: states(d2, [stored]) == [TaskState.CANCELLED])


def test_logs_are_readable_from_an_offset(harness):
    d = harness.make()
    h = d.start(harness.task("t-log", 0.0), harness.placement())
    assert "StreamsLogs" in capabilities(d)
    wait_until(lambda: states(d, [h]) != [TaskState.RUNNING])
    data, off = d.read_logs(h, 0)
    more, off2 = d.read_logs(h, off)
    assert off == len(data) and more == b"" and off2 == off
