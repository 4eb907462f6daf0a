"""Admissions are applied per workload (SQLite, and PostgreSQL when given): what changed
between the cycle's read and its write costs only the decisions made on it, never the cycle."""

from __future__ import annotations

import pytest

from gpuplane.control import loop as loop_module
from gpuplane.domain.workloads import Phase
from gpuplane.service.authz import Principal

SIM = {"gpuplane.io/sim-duration-s": "3600"}


def _admits(store, wid: str) -> int:  # noqa: ANN001
    with store.read() as tx:
        entries, _ = tx.audit.list(action="workload.admit", limit=1000)
    return sum(1 for e in entries if e.object_id == wid)


def _race(monkeypatch, before_apply) -> list:  # noqa: ANN001
    """Run ``before_apply(decisions)`` (committed on its own) after the cycle decided and before
    the loop writes; returns the decisions seen."""
    seen = []
    real = loop_module.store_apply.apply_decisions

    def racing(store, decisions, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.append(decisions)
        before_apply(decisions)
        return real(store, decisions, *args, **kwargs)

    monkeypatch.setattr(loop_module.store_apply, "apply_decisions", racing)
    return seen


def _submit(plane, n: int) -> list:  # noqa: ANN001
    return [plane.submit(name=f"w{i}", labels=SIM,
                         tasks=[{"resources": {"gpus": 1}, "command": ["x"]}]) for i in range(n)]


def test_a_cancel_during_the_apply_loses_only_that_workloads_admission(plane, monkeypatch):
    ws = _submit(plane, 5)
    victim = ws[2]

    def cancel(decisions) -> None:  # noqa: ANN001
        assert victim.id in decisions.admits
        plane.workloads.cancel_workload(Principal.system(), victim.id)

    _race(monkeypatch, cancel)
    report = plane.loop.tick()
    assert report.admitted == 4 and report.conflicts == 1, report
    assert plane.get(victim.id).phase == Phase.CANCELLED and _admits(plane.store, victim.id) == 0
    for w in ws:
        if w.id != victim.id:
            assert plane.get(w.id).phase == Phase.RUNNING and _admits(plane.store, w.id) == 1


def test_a_host_that_changed_during_the_apply_loses_only_the_admissions_on_it(plane, monkeypatch):
    ws = _submit(plane, 6)
    lost: list[str] = []

    def bump(decisions) -> None:  # noqa: ANN001
        host = next(iter(decisions.admits.values()))[0].host
        lost.extend(wid for wid, ps in decisions.admits.items()
                    if any(p is not None and p.host == host for p in ps))
        with plane.store.write() as tx:
            tx.hosts.bump_generation(host, tx.hosts.get(host).generation)

    seen = _race(monkeypatch, bump)
    report = plane.loop.tick()
    kept = [w for w in ws if w.id not in lost]
    assert lost and len(seen[0].admits) == 6
    assert report.admitted == len(kept) and report.conflicts == len(lost), report
    for w in ws:
        want = Phase.PENDING if w.id in lost else Phase.RUNNING
        assert plane.get(w.id).phase == want
    monkeypatch.undo()
    plane.loop.tick()  # decided again on fresh data
    assert all(plane.get(w.id).phase == Phase.RUNNING for w in ws)
    assert all(_admits(plane.store, w.id) == 1 for w in ws)


@pytest.mark.parametrize("batch", [1, 2], ids=["one per transaction", "two per transaction"])
def test_admissions_split_over_transactions_claim_each_host_once_per_batch(plane, monkeypatch,
                                                                          batch):
    monkeypatch.setattr(loop_module.store_apply, "ADMIT_BATCH", batch)
    ws = _submit(plane, 5)
    report = plane.loop.tick()
    assert report.admitted == 5 and report.conflicts == 0, report
    assert all(plane.get(w.id).phase == Phase.RUNNING for w in ws)


def test_pending_reasons_are_written_only_when_they_change(plane):
    for i in range(2):  # the two simulated hosts' 4 GPUs each, busy
        plane.submit(name=f"busy{i}", tasks=[{"resources": {"gpus": 4}, "command": ["sleep 600"]}])
    plane.loop.tick()
    w = plane.submit(name="waits", tasks=[{"resources": {"gpus": 4}, "command": ["x"]}])
    plane.loop.tick()
    first = plane.get(w.id).pending_reason
    assert first is not None
    with plane.store.write() as tx:  # an unchanged reason is not written again
        tx.workloads.set_pending_reason(w.id, type(first)(first.code, first.message,
                                                           {"marker": True}))
    plane.loop.tick()
    assert plane.get(w.id).pending_reason.detail == {"marker": True}
