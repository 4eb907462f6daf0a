"""Queue order inside a project and decayed fair-share usage."""

import math

from gpuplane.domain.requests import TaskRequest
from gpuplane.scheduling.admission.fairshare import ShareBook, UsageHistory, dominant_share
from gpuplane.scheduling.queueing import PendingQueues, PendingWorkload

T = (TaskRequest(cpu_milli=0, memory_mib=0, gpus=1),)


def w(wid, project="p", at=0.0, prio=0):
    return PendingWorkload(wid, project, T, priority=prio, submitted_at=at)


def test_queue_orders_by_priority_then_age_then_id():
    q = PendingQueues.of([w("c", at=5), w("a", at=5), w("old", at=1), w("urgent", at=9, prio=5)])
    assert [x.id for x in q.iter_project("p")] == ["urgent", "old", "a", "c"]


def test_add_and_remove_keep_the_order_and_ignore_duplicates():
    q = PendingQueues()
    for x in (w("b", at=2), w("a", at=1), w("c", at=3), w("a", at=1)):
        q.add(x)
    assert len(q) == 3
    assert q.remove("b").id == "b"
    assert q.remove("missing") is None
    assert [x.id for x in q.iter_project("p")] == ["a", "c"]
    q.remove("a"), q.remove("c")
    assert q.projects() == []


def test_decayed_usage_halves_every_half_life():
    h = UsageHistory(half_life_s=100.0)
    h.advance(0.0, {})
    h.advance(1e6, {"a": (1000.0, 0.0, 0.0)})       # held steadily: converges to the holding
    assert math.isclose(h.get("a")[0], 1000.0, rel_tol=1e-9)
    h.advance(1e6 + 100.0, {})                      # one half-life of nothing
    assert math.isclose(h.get("a")[0], 500.0, rel_tol=1e-9)


def test_zero_half_life_keeps_no_history():
    h = UsageHistory(half_life_s=0)
    h.advance(0.0, {"a": (1.0, 0.0, 0.0)})
    h.advance(10.0, {"a": (1.0, 0.0, 0.0)})
    assert h.get("a") == (0.0, 0.0, 0.0)


def test_dominant_share_takes_the_largest_resource_over_weight():
    assert dominant_share((4000.0, 10.0, 0.0), (8000.0, 100.0, 1.0), 2.0) == 0.25


def test_share_book_orders_organisations_before_projects():
    book = ShareBook((1000.0, 1.0, 1.0), {"a1": 1.0, "a2": 1.0, "b1": 1.0},
                     {"a1": "A", "a2": "A", "b1": "B"}, {"A": 1.0, "B": 1.0})
    book.charge("a1", (300.0, 0.0, 0.0))
    book.charge("b1", (200.0, 0.0, 0.0))
    # a2 holds nothing, but its organisation A holds more than B: b1 goes first.
    assert book.key("b1") < book.key("a2")
