"""kill -9 of `gpuplane up` while submissions are in flight: nothing accepted is lost, nothing
leaks, running tasks are adopted or accounted as lost (DESIGN invariant 5)."""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time

import httpx
import pytest

from .conftest import kill_leftover_tasks, wait_phase

pytestmark = pytest.mark.slow

LOCAL = {"gpuplane.io/driver": "local"}


def local_job(name: str, seconds: int) -> dict:
    return {"name": name, "tasks": [{"command": ["sleep", str(seconds)], "selector": LOCAL,
                                     "resources": {"cpu": 0.05, "memory": 16}}]}


def sim_job(name: str, seconds: float) -> dict:
    return {"name": name, "labels": {"gpuplane.io/sim-duration-s": str(seconds)},
            "tasks": [{"command": ["train"], "resources": {"cpu": 1, "memory": 1024,
                                                           "gpus": 1}}]}


def submit_concurrently(url: str, token: str, bodies: list[dict], acked: list[str],
                        threads: int = 8) -> list[threading.Thread]:
    work: queue.Queue = queue.Queue()
    for b in bodies:
        work.put(b)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=10,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    r = c.post("/v1/workloads", json=body)
                except httpx.HTTPError:
                    continue  # the server died: this submission was never answered
                if r.status_code == 201:
                    acked.append(body["name"])

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


def pid_of(home, wid: str, index: int = 0) -> int:
    files = sorted((home / "local").glob(f"{wid}.{index}.*.json"))
    return int(json.loads(files[-1].read_text())["data"]["pid"])


def test_kill_9_with_200_submissions_in_flight_loses_nothing(make_server, db_url):
    srv = make_server(db_url).start()
    try:
        _crash_and_check(srv, db_url)
    finally:
        kill_leftover_tasks(srv.home)


def _crash_and_check(srv, db_url) -> None:
    with srv.client() as c:
        keep = [c.post("/v1/workloads", json=local_job(f"keep-{i}", 120)).json()["id"]
                for i in range(2)]
        victim = c.post("/v1/workloads", json=local_job("victim", 120)).json()["id"]
        for ref in (*keep, victim):
            assert wait_phase(c, ref, {"Running"})["status"]["phase"] == "Running"

    bodies = [local_job(f"load-{i}", 30) if i % 4 == 0 else sim_job(f"load-{i}", 20)
              for i in range(200)]
    acked: list[str] = []
    threads = submit_concurrently(srv.url, srv.token, bodies, acked)
    deadline = time.monotonic() + 60
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.kill9()
    for t in threads:
        t.join(timeout=30)
    answered = set(acked)
    assert 60 <= len(answered) < 200, "the crash must hit while submissions are in flight"

    victim_pid = pid_of(srv.home, victim)
    os.killpg(victim_pid, signal.SIGKILL)  # dies while gpuplane is down: no exit status
    srv.proc = None
    srv.start()

    with srv.client() as c:
        names, cursor = set(), None
        while True:
            page = c.get("/v1/workloads", params={"limit": 500, "cursor": cursor}).json()
            names |= {w["name"] for w in page["items"]}
            cursor = page["next_cursor"]
            if not cursor:
                break
        missing = answered - names
        assert not missing, f"{len(missing)} acknowledged submissions lost: {sorted(missing)[:5]}"

        for ref in keep:  # the new leader (once the dead one's lease expired) adopts them
            deadline = time.monotonic() + 30
            while True:
                reasons = [e["reason"] for e in c.get(f"/v1/workloads/{ref}/events",
                                                      params={"limit": 500}).json()["items"]]
                if "Adopted" in reasons or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert "Adopted" in reasons, reasons
            assert wait_phase(c, ref, {"Running"})["status"]["phase"] == "Running"
        lost = wait_phase(c, victim, {"Lost"})
        assert lost["status"]["phase"] == "Lost", lost["status"]

    _no_allocation_of_a_dead_task(srv, db_url)


def _no_allocation_of_a_dead_task(srv, db_url) -> None:
    from gpuplane.drivers.base import DriverHandle
    from gpuplane.drivers.local import LocalDriver
    from gpuplane.drivers.sim import SimDriver
    from gpuplane.store import Store

    store = Store(db_url or f"sqlite:///{srv.home / 'gpuplane.db'}")
    local, sim = LocalDriver(srv.home / "check", host="e2e-local"), SimDriver(srv.home / "check")
    try:
        with store.read() as tx:
            active = tx.tasks.list_active()
        assert active, "the check needs running work"
        for t in active:
            if not t.handle:
                assert t.phase.value == "Admitted", t  # placed, about to be started
                continue
            h = DriverHandle.from_dict(t.handle)
            ended = (local if h.driver == "local" else sim).ended(h)
            if ended:  # it may have just finished; the loop must then release it promptly
                time.sleep(2)
                with store.read() as tx:
                    again = tx.tasks.get(t.id)
                assert not again.phase.holds_resources, f"allocation of a dead task: {again}"
    finally:
        store.dispose()


def test_never_two_leaders_and_each_of_1000_workloads_placed_exactly_once(make_server, db_url):
    if db_url is None:
        pytest.skip("two processes share a database only on PostgreSQL")
    a = make_server(db_url).start()
    b = make_server(db_url, args=("--no-demo",)).start()
    bodies = [sim_job(f"w-{i}", 0.5) for i in range(1000)]
    acked_a: list[str] = []
    acked_b: list[str] = []
    ta = submit_concurrently(a.url, a.token, bodies[0::2], acked_a, threads=4)
    tb = submit_concurrently(b.url, b.token, bodies[1::2], acked_b, threads=4)
    while len(acked_a) + len(acked_b) < 400:
        time.sleep(0.05)
    leader = a if _leader_port(a, b) == a.port else b
    leader.kill9()  # the follower must take over after the lease expires
    for t in ta + tb:
        t.join(timeout=120)
    leader.proc = None
    leader.start()
    survivor = b if leader is a else a
    # resubmit what the killed process never answered (names are unique: 409 = already there)
    answered = set(acked_a) | set(acked_b)
    with survivor.client() as c:
        for body in bodies:
            if body["name"] not in answered:
                r = c.post("/v1/workloads", json=body)
                assert r.status_code in (201, 409), r.text

    from gpuplane.store import Store

    store = Store(db_url)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with store.read() as tx:
                phases = tx.workloads.count_by_phase()
            if phases.get("Succeeded", 0) == 1000:
                break
            time.sleep(1)
        assert phases.get("Succeeded", 0) == 1000, phases
        admits = _admits(store)
        assert len(admits) == 1000 and set(admits.values()) == {1}
    finally:
        store.dispose()
    _assert_one_leader_at_a_time([a.home / "lease.log", b.home / "lease.log"])


def _holder(srv) -> str | None:
    return httpx.get(f"{srv.url}/healthz").json()["leader"]


def _leader_port(a, b, timeout: float = 20) -> int:
    """The port of the process both agree holds the lease (it may move under heavy load)."""
    deadline = time.monotonic() + timeout
    while True:
        ha, hb = _holder(a), _holder(b)
        if ha and ha == hb:
            return int(ha.split(":")[1])
        assert time.monotonic() < deadline, f"no agreed leader: {ha} vs {hb}"
        time.sleep(0.2)


def _assert_one_leader_at_a_time(logs) -> None:
    """Each holder's leadership spans (from "acquired" to its last granted ``valid_until``)
    never overlap another holder's span."""
    spans: list[tuple[float, float, str]] = []
    current: dict[str, list[float]] = {}
    for path in logs:
        if not path.exists():  # this process never led (the restarted one may win the lease)
            continue
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e["event"] == "acquired":
                span = current[e["holder"]] = [e["at"], e["valid_until"]]
                spans.append(span)  # type: ignore[arg-type]
                span.append(e["holder"])  # type: ignore[arg-type]
            elif e["event"] == "renewed" and e["holder"] in current:
                current[e["holder"]][1] = max(current[e["holder"]][1], e["valid_until"])
    spans.sort()
    assert len({s[2] for s in spans}) >= 2, "the test must see a change of leader"
    for s1, s2 in zip(spans, spans[1:]):
        assert s1[1] <= s2[0], f"{s1[2]} led until {s1[1]}, {s2[2]} from {s2[0]}"
    print(f"leaders: {[(s[2], round(s[1] - s[0], 1)) for s in spans]}", file=sys.stderr)


def test_a_leader_paused_past_its_lease_resumes_and_commits_nothing(make_server, db_url):
    """SIGSTOP the leader for longer than its lease (GPUPLANE_LEASE_TTL_S=3), let the other
    process take over, SIGCONT: the resumed process learns it lost the lease (its writes are
    fenced by the lease epoch, judged on the database's clock) and every workload is admitted
    exactly once."""
    if db_url is None:
        pytest.skip("two processes share a database only on PostgreSQL")
    a = make_server(db_url).start()
    b = make_server(db_url, args=("--no-demo",)).start()
    leader, other = (a, b) if _leader_port(a, b) == a.port else (b, a)
    bodies = [sim_job(f"p-{i}", 0.5) for i in range(300)]
    acked: list[str] = []
    threads = submit_concurrently(other.url, other.token, bodies, acked, threads=4)
    while len(acked) < 60:
        time.sleep(0.05)
    from gpuplane.store import Store

    store = Store(db_url)
    try:
        epoch = store.leases.get().epoch
        for _attempt in range(6):
            # a pause that lands inside a write transaction holds PostgreSQL's write lock, so
            # nobody (the lease included) can write until it resumes: pause again then
            leader.proc.send_signal(signal.SIGSTOP)
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline and not _held_by(store, other):
                time.sleep(0.2)
            took_over = _held_by(store, other)
            if took_over:
                time.sleep(2.0)  # the new leader admits and starts work meanwhile
            leader.proc.send_signal(signal.SIGCONT)
            if took_over:
                break
            time.sleep(1.0)
        assert took_over, "the other process must take the lease while the leader is paused"
        assert store.leases.get().epoch > epoch
        for t in threads:
            t.join(timeout=120)
        # every stored workload (some were stored but not answered in time while the pause
        # held the write lock) runs to the end, admitted exactly once
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with store.read() as tx:
                phases = tx.workloads.count_by_phase()
            if set(phases) == {"Succeeded"}:
                break
            time.sleep(1)
        stored = sum(phases.values())
        assert set(phases) == {"Succeeded"} and stored >= len(acked), phases
        admits = _admits(store)
        assert len(admits) == stored and set(admits.values()) == {1}
    finally:
        store.dispose()
    lost = [json.loads(line) for line in (leader.home / "lease.log").read_text().splitlines()
            if json.loads(line)["event"] == "lost"]
    assert lost, "the resumed process must record that it lost the lease"
    print(f"resumed leader: {[e.get('why') for e in lost]}", file=sys.stderr)
    assert "scheduler lease lost by" in leader.log.read_text()
    _assert_one_leader_at_a_time([a.home / "lease.log", b.home / "lease.log"])


def _admits(store) -> dict[str, int]:
    """How many ``workload.admit`` audit entries each workload has."""
    admits: dict[str, int] = {}
    after = None
    with store.read() as tx:
        while True:
            entries, after = tx.audit.list(action="workload.admit", after=after, limit=5000)
            for e in entries:
                admits[e.object_id] = admits.get(e.object_id, 0) + 1
            if after is None:
                return admits


def _held_by(store, srv) -> bool:
    """Whether ``srv``'s process holds the scheduler lease (read from the database, since a
    paused process answers no HTTP)."""
    holder = store.leases.get().holder
    return bool(holder) and int(holder.split(":")[1]) == srv.port
