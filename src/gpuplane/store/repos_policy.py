"""Repositories for quotas and priority classes."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from gpuplane.domain.errors import Conflict, NotFound
from gpuplane.store.generations import guarded_update
from gpuplane.store.paging import Page, paginate
from gpuplane.store.records import PriorityClass, Quota
from gpuplane.store.tables import PriorityClassRow, ProjectRow, QuotaRow


class QuotaRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def _convert(self, rows: list[QuotaRow]) -> list[Quota]:
        names = dict(self.s.execute(select(ProjectRow.id, ProjectRow.name).where(
            ProjectRow.id.in_({r.project_id for r in rows}))).tuples().all()) if rows else {}
        return [Quota(r.id, r.project_id, names[r.project_id], r.resource, r.flavor,
                      r.guaranteed_milli, r.borrowing_limit_milli, r.lending_limit_milli,
                      r.generation, r.updated_at) for r in rows]

    def find(self, project_id: int, resource: str, flavor: str) -> Quota | None:
        row = self.s.execute(select(QuotaRow).where(
            QuotaRow.project_id == project_id, QuotaRow.resource == resource,
            QuotaRow.flavor == flavor)).scalar_one_or_none()
        return None if row is None else self._convert([row])[0]

    def get(self, quota_id: int) -> Quota:
        row = self.s.get(QuotaRow, quota_id)
        if row is None:
            raise NotFound(f"no quota {quota_id}", code="gpuplane.quota.not_found")
        return self._convert([row])[0]

    def put(self, project_id: int, resource: str, flavor: str, guaranteed_milli: int,
            borrowing_limit_milli: int | None, lending_limit_milli: int | None, now: float,
            seen_generation: int | None = None) -> Quota:
        """Create or replace; with ``seen_generation`` the replace is generation-guarded."""
        existing = self.find(project_id, resource, flavor)
        values = dict(guaranteed_milli=guaranteed_milli,
                      borrowing_limit_milli=borrowing_limit_milli,
                      lending_limit_milli=lending_limit_milli, updated_at=now)
        if existing is None:
            if seen_generation not in (None, 0):
                raise Conflict("this quota does not exist any more; reload and try again",
                               code="gpuplane.generation.conflict")
            row = QuotaRow(project_id=project_id, resource=resource, flavor=flavor, generation=1,
                           **values)
            self.s.add(row)
            self.s.flush()
            return self._convert([row])[0]
        guarded_update(self.s, QuotaRow, QuotaRow.id, existing.id,
                       existing.generation if seen_generation is None else seen_generation,
                       f"quota {resource}/{flavor} of project {existing.project!r}", **values)
        return self.get(existing.id)

    def list(self, project_ids: Iterable[int] | None = None, after: int | None = None,
             limit: int = 100_000) -> Page[Quota]:
        stmt = select(QuotaRow)
        if project_ids is not None:
            stmt = stmt.where(QuotaRow.project_id.in_(list(project_ids)))
        page = paginate(self.s, stmt, QuotaRow.id, after, limit, lambda r: r, lambda r: r.id)
        return Page(self._convert(page.items), page.next_after)

    def list_all(self) -> list[Quota]:
        return self.list().items

    def delete(self, quota_id: int) -> None:
        self.s.execute(delete(QuotaRow).where(QuotaRow.id == quota_id))


def _pc(r: PriorityClassRow) -> PriorityClass:
    return PriorityClass(r.id, r.name, r.value, r.preemptible, r.is_default, r.description,
                         r.created_at)


class PriorityRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, name: str, value: int, preemptible: bool, is_default: bool, description: str,
            now: float) -> PriorityClass:
        if self.s.execute(select(PriorityClassRow.id).where(PriorityClassRow.name == name)).first():
            raise Conflict(f"priority class {name!r} already exists",
                           code="gpuplane.priority_class.exists")
        if is_default:
            self._clear_default()
        row = PriorityClassRow(name=name, value=value, preemptible=preemptible,
                               is_default=is_default, description=description, created_at=now)
        self.s.add(row)
        self.s.flush()
        return _pc(row)

    def _clear_default(self) -> None:
        self.s.execute(update(PriorityClassRow).values(is_default=False)
                       .execution_options(synchronize_session=False))
        self.s.expire_all()

    def get(self, name: str) -> PriorityClass:
        row = self.s.execute(select(PriorityClassRow).where(PriorityClassRow.name == name)
                             ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no priority class named {name!r}",
                           code="gpuplane.priority_class.not_found")
        return _pc(row)

    def default(self) -> PriorityClass | None:
        row = self.s.execute(select(PriorityClassRow).where(PriorityClassRow.is_default.is_(True))
                             ).scalars().first()
        return None if row is None else _pc(row)

    def list(self, after: int | None = None, limit: int = 1000) -> Page[PriorityClass]:
        return paginate(self.s, select(PriorityClassRow), PriorityClassRow.id, after, limit, _pc,
                        lambda r: r.id)

    def update(self, name: str, **values: object) -> PriorityClass:
        row = self.s.execute(select(PriorityClassRow).where(PriorityClassRow.name == name)
                             ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no priority class named {name!r}",
                           code="gpuplane.priority_class.not_found")
        if values.get("is_default"):
            self._clear_default()
            row = self.s.get(PriorityClassRow, row.id)
        for k, v in values.items():
            setattr(row, k, v)
        self.s.flush()
        return _pc(row)

    def delete(self, name: str) -> None:
        pc = self.get(name)
        self.s.execute(delete(PriorityClassRow).where(PriorityClassRow.id == pc.id))
