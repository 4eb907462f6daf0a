"""Repositories for sites, hosts and their GPUs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gpuplane.domain.errors import Conflict, NotFound
from gpuplane.store.bulk import among
from gpuplane.store.generations import guarded_update, guarded_update_many
from gpuplane.store.paging import Page, paginate
from gpuplane.store.records import Gpu, HostRecord, Site
from gpuplane.store.tables import GpuRow, HostRow, SiteRow, TaskRow


def _site(row: SiteRow) -> Site:
    return Site(row.id, row.name, row.jurisdiction, row.region, row.provider, dict(row.labels or {}),
                row.generation, row.created_at)


class SiteRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, name: str, jurisdiction: str, region: str, provider: str,
            labels: dict[str, str], now: float) -> Site:
        if self.s.execute(select(SiteRow.id).where(SiteRow.name == name)).first():
            raise Conflict(f"site {name!r} already exists", code="gpuplane.site.exists")
        row = SiteRow(name=name, jurisdiction=jurisdiction, region=region, provider=provider,
                      labels=labels, generation=1, created_at=now)
        self.s.add(row)
        self.s.flush()
        return _site(row)

    def get(self, name: str) -> Site:
        row = self.s.execute(select(SiteRow).where(SiteRow.name == name)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no site named {name!r}", code="gpuplane.site.not_found")
        return _site(row)

    def list(self, after: int | None = None, limit: int = 1000) -> Page[Site]:
        return paginate(self.s, select(SiteRow), SiteRow.id, after, limit, _site, lambda r: r.id)

    def delete(self, name: str) -> None:
        site = self.get(name)
        if self.s.execute(select(HostRow.id).where(HostRow.site_id == site.id)).first():
            raise Conflict(f"site {name!r} still has hosts; delete them first",
                           code="gpuplane.site.in_use")
        self.s.execute(delete(SiteRow).where(SiteRow.id == site.id))


class HostRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def _record(self, row: HostRow, site: SiteRow, gpus: Sequence[GpuRow]) -> HostRecord:
        return HostRecord(
            id=row.id, name=row.name, site=site.name, jurisdiction=site.jurisdiction,
            cpu_milli=row.cpu_milli, memory_mib=row.memory_mib, rack=row.rack,
            labels=dict(row.labels or {}), taints=tuple(row.taints or ()), tee=row.tee,
            driver=row.driver, simulated=row.simulated, declared=row.declared, state=row.state,
            heartbeat_at=row.heartbeat_at, generation=row.generation, created_at=row.created_at,
            gpus=tuple(Gpu(g.idx, g.model, g.memory_mib, g.numa, g.nvlink_domain, g.mode,
                           tuple(g.mig_layout) if g.mig_layout is not None else None, g.uuid)
                       for g in sorted(gpus, key=lambda g: g.idx)))

    def _records(self, rows: Sequence[HostRow]) -> list[HostRecord]:
        if not rows:
            return []
        ids = [r.id for r in rows]
        sites = {s.id: s for s in self.s.execute(
            select(SiteRow).where(SiteRow.id.in_({r.site_id for r in rows}))).scalars()}
        gpus: dict[int, list[GpuRow]] = {i: [] for i in ids}
        # plain rows (same attribute names), not ORM objects: 16,000 GPUs load ~5x faster
        for g in self.s.execute(select(GpuRow.__table__)
                                .where(among(self.s, GpuRow.host_id, ids))):
            gpus[g.host_id].append(g)
        return [self._record(r, sites[r.site_id], gpus[r.id]) for r in rows]

    def add(self, name: str, site: str, cpu_milli: int, memory_mib: int, gpus: Sequence[Gpu],
            now: float, rack: str = "", labels: dict[str, str] | None = None,
            taints: list[dict] | None = None, tee: str | None = None, driver: str = "sim",
            simulated: bool = True, declared: bool = False) -> HostRecord:
        if self.s.execute(select(HostRow.id).where(HostRow.name == name)).first():
            raise Conflict(f"host {name!r} already exists", code="gpuplane.host.exists")
        site_row = self.s.execute(select(SiteRow).where(SiteRow.name == site)).scalar_one_or_none()
        if site_row is None:
            raise NotFound(f"no site named {site!r}; register the site first",
                           code="gpuplane.site.not_found")
        row = HostRow(name=name, site_id=site_row.id, cpu_milli=cpu_milli, memory_mib=memory_mib,
                      rack=rack, labels=labels or {}, taints=taints or [], tee=tee, driver=driver,
                      simulated=simulated, declared=declared, state="ready", heartbeat_at=now,
                      generation=1, created_at=now)
        self.s.add(row)
        self.s.flush()
        return self._with_gpus(row, name, gpus)

    def replace(self, name: str, seen_generation: int, cpu_milli: int, memory_mib: int,
                gpus: Sequence[Gpu], **values: object) -> HostRecord:
        """Replace a host's capacity, GPUs and attributes (generation-guarded). Conflict
        (``gpuplane.host.in_use``) if a GPU that an active task holds would disappear."""
        row = self._row(name)
        from gpuplane.store.repos_workloads import ACTIVE_PHASES

        kept = {g.index for g in gpus}
        for placement in self.s.execute(select(TaskRow.placement).where(
                TaskRow.host_id == row.id, TaskRow.phase.in_(ACTIVE_PHASES))).scalars():
            held = set((placement or {}).get("gpu_indices", ()))
            if held - kept:
                raise Conflict(f"host {name!r}: GPU(s) {sorted(held - kept)} are in use by "
                               "running tasks; drain the host first", code="gpuplane.host.in_use")
        guarded_update(self.s, HostRow, HostRow.id, row.id, seen_generation, f"host {name!r}",
                       cpu_milli=cpu_milli, memory_mib=memory_mib, **values)
        self.s.execute(delete(GpuRow).where(GpuRow.host_id == row.id))
        return self._with_gpus(row, name, gpus)

    def _with_gpus(self, row: HostRow, name: str, gpus: Sequence[Gpu]) -> HostRecord:
        """Store ``gpus`` as the GPUs of host ``row`` and return the host as stored."""
        for g in gpus:
            self.s.add(GpuRow(host_id=row.id, idx=g.index, model=g.model, memory_mib=g.memory_mib,
                              numa=g.numa, nvlink_domain=g.nvlink_domain, mode=g.mode,
                              mig_layout=list(g.mig_layout) if g.mig_layout is not None else None,
                              uuid=g.uuid))
        self.s.flush()
        return self.get(name)

    def _row(self, name: str) -> HostRow:
        row = self.s.execute(select(HostRow).where(HostRow.name == name)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no host named {name!r}", code="gpuplane.host.not_found")
        return row

    def get(self, name: str) -> HostRecord:
        return self._records([self._row(name)])[0]

    def id_of(self, name: str) -> int:
        return self._row(name).id

    def list(self, after: int | None = None, limit: int = 100_000,
             site: str | None = None) -> Page[HostRecord]:
        stmt = select(HostRow)
        if site is not None:
            stmt = stmt.join(SiteRow, SiteRow.id == HostRow.site_id).where(SiteRow.name == site)
        page = paginate(self.s, stmt, HostRow.id, after, limit, lambda r: r, lambda r: r.id)
        return Page(self._records(page.items), page.next_after)

    def list_all(self) -> list[HostRecord]:
        """Every host with its GPUs (the control loop's inventory read)."""
        rows = self.s.execute(select(HostRow.__table__).order_by(HostRow.id)).all()
        return self._records(rows)

    def shapes(self) -> list[tuple[int, int, tuple[tuple[str, str], ...]]]:
        """(cpu_milli, memory_mib, ((model, mode) per GPU)) of every host, in two light
        queries (what a submission's feasibility check needs, not whole records)."""
        gpus: dict[int, list[tuple[str, str]]] = {}
        for host_id, model, mode in self.s.execute(
                select(GpuRow.host_id, GpuRow.model, GpuRow.mode).order_by(GpuRow.host_id)):
            gpus.setdefault(host_id, []).append((model, mode))
        return [(cpu, mem, tuple(gpus.get(hid, ()))) for hid, cpu, mem in self.s.execute(
            select(HostRow.id, HostRow.cpu_milli, HostRow.memory_mib).order_by(HostRow.id))]

    def gpu_models(self) -> set[str]:
        return set(self.s.execute(select(GpuRow.model).distinct()).scalars())

    def set_state(self, name: str, state: str, seen_generation: int | None = None) -> HostRecord:
        """Move a host to ready/cordoned/draining/down, guarded by generation when given."""
        row = self._row(name)
        guarded_update(self.s, HostRow, HostRow.id, row.id,
                       row.generation if seen_generation is None else seen_generation,
                       f"host {name!r}", state=state)
        return self.get(name)

    def bump_generation(self, name: str, seen_generation: int) -> int:
        """Claim a host for an allocation change: Conflict if it changed since read."""
        row = self._row(name)
        return guarded_update(self.s, HostRow, HostRow.id, row.id, seen_generation,
                              f"host {name!r}")

    def lock_generations(self, names: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Lock (PostgreSQL: ``FOR UPDATE``, in id order) the named hosts; name -> (id,
        generation). Absent names are left out."""
        names = sorted(set(names))
        if not names:
            return {}
        rows = self.s.execute(select(HostRow.id, HostRow.name, HostRow.generation)
                              .where(HostRow.name.in_(names)).order_by(HostRow.id)
                              .with_for_update()).all()
        return {r.name: (r.id, r.generation) for r in rows}

    def locations(self, names: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Host name -> (site, jurisdiction) for the named hosts that exist."""
        names = sorted(set(names))
        if not names:
            return {}
        rows = self.s.execute(select(HostRow.name, SiteRow.name, SiteRow.jurisdiction)
                              .join(SiteRow, SiteRow.id == HostRow.site_id)
                              .where(HostRow.name.in_(names))).all()
        return {r[0]: (r[1], r[2]) for r in rows}

    def bump_many(self, seen: Sequence[tuple[int, int]]) -> None:
        """Claim many hosts at once: (host id, generation seen); Conflict if any moved."""
        guarded_update_many(self.s, HostRow, "id", [(hid, g, {}) for hid, g in seen], "host")

    def heartbeat(self, name: str, now: float) -> None:
        self._row(name).heartbeat_at = now
        self.s.flush()

    def delete(self, name: str) -> None:
        row = self._row(name)
        from gpuplane.store.repos_workloads import ACTIVE_PHASES

        busy = self.s.execute(select(TaskRow.id).where(TaskRow.host_id == row.id,
                                                       TaskRow.phase.in_(ACTIVE_PHASES))).first()
        if busy:
            raise Conflict(f"host {name!r} still runs tasks; drain it first",
                           code="gpuplane.host.in_use")
        self.s.execute(delete(GpuRow).where(GpuRow.host_id == row.id))
        self.s.execute(delete(HostRow).where(HostRow.id == row.id))
