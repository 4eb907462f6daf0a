"""The console's live views as the stream (``api/routers/console.py``) computes them, cheap
enough to poll on a 2,000-host fleet with thousands of workloads.

* ``fleet``: every host with its GPUs and each GPU's allocated share, as GET /v1/hosts + GET
  /v1/gpus show them (the fields the console draws), read in plain columns: allowed to whoever
  may read the inventory anywhere, as those routes are.
* ``workloads`` (``Workloads``, one per stream): the workloads the caller may list (GET
  /v1/workloads: active ones and the latest finished), without their spec (the workload page
  fetches it), sent as changes: the first event has them all (``reset``), later ones only those
  whose stored version moved (workload generation, pending reason, task generations) and the
  ids that left (``removed``). Each changed workload is read through the same service call as
  GET /v1/workloads/{w} (or the list, for many), so authorisation and redaction are the
  REST routes'. ``pending`` has each waiting workload's standing as GET
  /v1/workloads/{w}/pending gives it, computed for all of them at once (one queue order).
* ``tenancy``: quotas and usage (GET /v1/quotas, GET /v1/usage), hours rounded to 0.1.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Text, func, or_, select, type_coerce

from gpuplane.api.metrics_pool import HOLDING, _json, _placed
from gpuplane.api.schemas import QuotaOut, UserOut, WorkloadOut
from gpuplane.domain.errors import GpuplaneError, NotFound
from gpuplane.service import Principal, Services

PAGE = 1000
RECENT_FINISHED = 50       # finished workloads the view keeps
QUEUE_DETAIL_MAX = 500     # pending workloads whose standing is sent
FETCH_ONE_MAX = 100        # changed workloads read one by one; more: through the list
TERMINAL = ("Succeeded", "Failed", "Cancelled", "Lost")
FORBIDDEN = {"forbidden": True}


def guard(fn: Callable[[], Any]) -> Any:
    """A view the principal may not read is ``{"forbidden": true}``, not an error."""
    try:
        return fn()
    except GpuplaneError as exc:
        if exc.code in ("gpuplane.auth.forbidden",) or exc.code.endswith(".not_found"):
            return FORBIDDEN
        raise


def pages(list_page: Callable[[int | None, int], Any]) -> Iterator[Any]:
    after = None
    while True:
        page = list_page(after, PAGE)
        yield from page.items
        if page.next_after is None:
            return
        after = page.next_after


def whoami(svc: Services, who: Principal) -> dict:
    return UserOut.of(svc.tenancy.whoami(who)).model_dump(mode="json")


def fleet(svc: Services, who: Principal) -> dict:
    """Hosts with their GPUs and each GPU's allocated GPUs (0..1), in host id order. The view
    is the same for everyone who may read the inventory, so it is computed once per change of
    the fleet's fingerprint (``_fingerprint``) for all streams of this process, and at least
    every ``FLEET_MAX_AGE_S``."""
    if not who.may_anywhere("inventory.read"):
        return FORBIDDEN
    with svc.store.read() as tx:
        conn = tx.session.connection()
        print_ = _fingerprint(conn)
        with _FLEET_LOCK:
            hit = _FLEET.get(svc.store)
        if hit is not None and hit[0] == print_ and time.monotonic() - hit[1] < FLEET_MAX_AGE_S:
            return hit[2]
        data = _read_fleet(conn)
    with _FLEET_LOCK:
        _FLEET[svc.store] = (print_, time.monotonic(), data)
    return data


FLEET_MAX_AGE_S = 30.0
_FLEET: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # store -> (print, at, view)
_FLEET_LOCK = threading.Lock()


def _fingerprint(conn: Any) -> tuple:
    """What the fleet view is computed from, summed: sites, hosts and GPU rows (a host's
    GPUs are replaced, with new ids, under a generation-guarded host update) and the tasks
    holding resources (each change of a task bumps its generation)."""
    from gpuplane.store.tables import GpuRow, HostRow, SiteRow, TaskRow

    def sums(*cols: Any, where: Any = None) -> tuple:
        stmt = select(func.count(), *(func.coalesce(func.sum(c), 0) for c in cols))
        return tuple(conn.execute(stmt if where is None else stmt.where(where)).one())

    return (sums(SiteRow.id, SiteRow.generation), sums(HostRow.id, HostRow.generation),
            sums(GpuRow.id), sums(TaskRow.id, TaskRow.generation,
                                  where=TaskRow.phase.in_(HOLDING)))


def _read_fleet(conn: Any) -> dict:
    from gpuplane.store.tables import GpuRow, HostRow, SiteRow, TaskRow

    held: dict[tuple[str, int], int] = {}
    for (raw,) in conn.execute(select(type_coerce(TaskRow.placement, Text))
                               .where(TaskRow.phase.in_(HOLDING))):
        placed = _placed(raw)
        for key, milli in placed[1] if placed else ():
            held[key] = held.get(key, 0) + milli
    gpus: dict[int, list[dict]] = {}
    for host_id, idx, model, mode, mem, layout in conn.execute(
            select(GpuRow.host_id, GpuRow.idx, GpuRow.model, GpuRow.mode,
                   GpuRow.memory_mib, type_coerce(GpuRow.mig_layout, Text))
            .order_by(GpuRow.host_id, GpuRow.idx)):
        gpus.setdefault(host_id, []).append({
            "index": idx, "model": model, "mode": mode, "memory_mib": mem,
            "mig_layout": _json(layout) if layout not in (None, "null") else None})
    hosts = []
    for host_id, name, site, jur, state, sim, tee in conn.execute(
            select(HostRow.id, HostRow.name, SiteRow.name, SiteRow.jurisdiction,
                   HostRow.state, HostRow.simulated, HostRow.tee)
            .join(SiteRow, SiteRow.id == HostRow.site_id).order_by(HostRow.id)):
        mine = gpus.get(host_id, [])
        for g in mine:
            g["allocated"] = min(1000, held.get((name, g["index"]), 0)) / 1000
        hosts.append({"name": name, "site": site, "jurisdiction": jur, "state": state,
                      "simulated": bool(sim), "tee": tee, "gpus": mine})
    return {"hosts": hosts}


def tenancy(svc: Services, who: Principal) -> dict:
    """Quotas, usage and each visible project's fair-share standing (organisation, weight,
    cohort: as GET /v1/projects shows them)."""
    quotas = [QuotaOut.of(q).model_dump(mode="json", exclude={"updated_at"})
              for q in pages(lambda a, n: svc.policy.list_quotas(who, a, n, None))]
    projects = [{"name": p.name, "organisation": p.org, "weight": p.weight, "cohort": p.cohort}
                for p in pages(lambda a, n: svc.tenancy.list_projects(who, a, n))]
    return {"quotas": quotas, "projects": projects,
            "usage": _round(svc.usage.usage(who, None, None, None))}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


class Workloads:
    """The ``workloads`` view of one stream, sent as changes (see the module notes)."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[tuple, dict]] = {}   # uid -> (version, item)
        self.order: dict[str, int] = {}                   # uid -> pk
        self.pending: dict | None = None
        self.started = False

    def reset(self) -> None:
        self.__init__()

    def poll(self, svc: Services, who: Principal, now: float) -> dict | None:
        """The event to send (None: nothing changed); FORBIDDEN if the caller may not list
        workloads."""
        versions = _versions(svc, who)
        changed = [uid for uid, (_, version) in versions.items()
                   if uid not in self.known or self.known[uid][0] != version]
        removed = [uid for uid in self.known if uid not in versions]
        for uid in removed:
            del self.known[uid]
        fresh = _read(svc, who, changed, versions)
        for uid in changed:
            if uid in fresh:
                self.known[uid] = (versions[uid][1], fresh[uid])
            elif uid in self.known:  # gone meanwhile
                del self.known[uid]
                removed.append(uid)
        self.order = {uid: pk for uid, (pk, _) in versions.items()}
        pending = _standing(svc, [item for _, item in self.known.values()], now)
        reset = not self.started
        if not reset and not changed and not removed and pending == self.pending:
            return None
        self.started, self.pending = True, pending
        ids = list(self.known) if reset else [uid for uid in changed if uid in self.known]
        ids.sort(key=lambda uid: self.order[uid])
        return {"reset": reset, "items": [self.known[uid][1] for uid in ids],
                "removed": removed, "pending": pending}


def _versions(svc: Services, who: Principal) -> dict[str, tuple[int, tuple]]:
    """{uid: (pk, version)} of the workloads the view holds: the visible active ones and the
    latest finished (a version moves whenever what GET /v1/workloads/{w} shows does)."""
    from gpuplane.service.authz import visible_project_ids
    from gpuplane.store.tables import TaskRow, WorkloadRow

    with svc.store.read() as tx:
        ids = visible_project_ids(who, "workload.read", tx)
        conn = tx.session.connection()
        mine = select(WorkloadRow.pk)
        if ids is not None:
            mine = mine.where(WorkloadRow.project_id.in_(list(ids)))
        active = mine.where(WorkloadRow.phase.not_in(TERMINAL))
        finished = mine.where(WorkloadRow.phase.in_(TERMINAL)) \
            .order_by(WorkloadRow.pk.desc()).limit(RECENT_FINISHED)
        held = or_(WorkloadRow.pk.in_(active), WorkloadRow.pk.in_(finished.subquery().select()))
        rows = list(conn.execute(select(WorkloadRow.pk, WorkloadRow.uid, WorkloadRow.generation,
                                        type_coerce(WorkloadRow.pending_reason, Text))
                                 .where(held)))
        tasks = dict(((pk, (n, gens)) for pk, n, gens in conn.execute(
            select(TaskRow.workload_pk, func.count(), func.sum(TaskRow.generation))
            .where(or_(TaskRow.workload_pk.in_(active),
                       TaskRow.workload_pk.in_(finished.subquery().select())))
            .group_by(TaskRow.workload_pk))))
    return {uid: (pk, (gen, str(reason), tasks.get(pk))) for pk, uid, gen, reason in rows}


def _read(svc: Services, who: Principal, uids: list[str], versions: dict) -> dict[str, dict]:
    """The items of ``uids``, through the service (list or one by one)."""
    def item(w: Any) -> dict:
        return WorkloadOut.of(w).model_dump(mode="json", exclude={"spec"})

    out: dict[str, dict] = {}
    want = set(uids)
    if len(want) > FETCH_ONE_MAX:
        for phase in ("Pending", "Admitted", "Running"):
            for w in pages(lambda a, n, p=phase: svc.workloads.list_workloads(who, a, n, None, p)):
                if w.id in want:
                    out[w.id] = item(w)
    for uid in sorted(want - set(out), key=lambda u: versions[u][0]):
        try:
            out[uid] = item(svc.workloads.get_workload(who, uid))
        except NotFound:
            continue  # deleted meanwhile
    return out


def _standing(svc: Services, items: list[dict], now: float) -> dict[str, dict]:
    """GET /v1/workloads/{w}/pending of every pending item (the first QUEUE_DETAIL_MAX), with
    one queue order for all (``retry_after_s`` in whole seconds: the view changes when the
    standing does, not every poll)."""
    from gpuplane.service.workloads import standing

    waiting = sorted((w for w in items if w["status"]["phase"] == "Pending"),
                     key=lambda w: w["status"]["submitted_at"])[:QUEUE_DETAIL_MAX]
    if not waiting:
        return {}
    with svc.store.read() as tx:
        position = {uid: i + 1 for i, uid in enumerate(tx.workloads.queue_order(now))}
    out = {}
    for w in waiting:
        st = w["status"]
        one = standing(w["id"], st["phase"],
                       [t["not_before"] for t in st["tasks"] if t["phase"] == "Pending"],
                       st["cancel_requested"], st["pending_reason"], position.get(w["id"]), now)
        if one["retry_after_s"] is not None:
            one["retry_after_s"] = round(one["retry_after_s"])
        out[w["id"]] = one
    return out
