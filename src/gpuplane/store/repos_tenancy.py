"""Repositories for organisations, projects, users, role bindings, API tokens."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, delete, select, update
from sqlalchemy.orm import Session

from gpuplane.domain.errors import Conflict, NotFound
from gpuplane.store.generations import guarded_update
from gpuplane.store.paging import Page, paginate
from gpuplane.store.records import ApiToken, Organisation, Project, RoleBinding, User
from gpuplane.store.tables import (ApiTokenRow, OrganisationRow, ProjectRow, RoleBindingRow,
                                   UserRow, WorkloadRow)


def _org(row: OrganisationRow) -> Organisation:
    return Organisation(row.id, row.name, row.display_name, row.generation, row.created_at)


class OrgRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, name: str, display_name: str, now: float) -> Organisation:
        if self.s.execute(select(OrganisationRow.id).where(OrganisationRow.name == name)).first():
            raise Conflict(f"organisation {name!r} already exists", code="gpuplane.organisation.exists")
        row = OrganisationRow(name=name, display_name=display_name, generation=1, created_at=now)
        self.s.add(row)
        self.s.flush()
        return _org(row)

    def get(self, name: str) -> Organisation:
        row = self.s.execute(select(OrganisationRow).where(OrganisationRow.name == name)
                             ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no organisation named {name!r}", code="gpuplane.organisation.not_found")
        return _org(row)

    def by_id(self, org_id: int) -> Organisation:
        row = self.s.get(OrganisationRow, org_id)
        if row is None:
            raise NotFound(f"no organisation {org_id}", code="gpuplane.organisation.not_found")
        return _org(row)

    def list(self, after: int | None = None, limit: int = 1000,
             only_ids: Iterable[int] | None = None) -> Page[Organisation]:
        stmt = select(OrganisationRow)
        if only_ids is not None:
            stmt = stmt.where(OrganisationRow.id.in_(list(only_ids)))
        return paginate(self.s, stmt, OrganisationRow.id, after, limit, _org, lambda r: r.id)

    def delete(self, name: str) -> None:
        org = self.get(name)
        if self.s.execute(select(ProjectRow.id).where(ProjectRow.org_id == org.id)).first():
            raise Conflict(f"organisation {name!r} still has projects; delete them first",
                           code="gpuplane.organisation.in_use")
        if self.s.execute(select(UserRow.id).where(UserRow.org_id == org.id)).first():
            raise Conflict(f"organisation {name!r} still has users; delete them first",
                           code="gpuplane.organisation.in_use")
        self.s.execute(delete(RoleBindingRow).where(RoleBindingRow.scope_kind == "organisation",
                                                    RoleBindingRow.scope_id == org.id))
        self.s.execute(delete(OrganisationRow).where(OrganisationRow.id == org.id))


def _project(r: ProjectRow, org: str) -> Project:
    return Project(r.id, r.name, r.org_id, org, r.display_name, r.weight, r.cohort,
                   r.generation, r.created_at, r.classification)


class ProjectRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def _convert(self, rows: list[ProjectRow]) -> list[Project]:
        orgs = {o.id: o.name for o in self.s.execute(
            select(OrganisationRow).where(OrganisationRow.id.in_({r.org_id for r in rows}))
        ).scalars()} if rows else {}
        return [_project(r, orgs[r.org_id]) for r in rows]

    def add(self, name: str, org_id: int, display_name: str, weight: float, cohort: str | None,
            now: float, classification: str | None = None) -> Project:
        if self.s.execute(select(ProjectRow.id).where(ProjectRow.name == name)).first():
            raise Conflict(f"project {name!r} already exists", code="gpuplane.project.exists")
        row = ProjectRow(name=name, org_id=org_id, display_name=display_name, weight=weight,
                         cohort=cohort, classification=classification, generation=1,
                         created_at=now)
        self.s.add(row)
        self.s.flush()
        return self._convert([row])[0]

    def get(self, name: str) -> Project:
        found = self.s.execute(select(ProjectRow, OrganisationRow.name)
                               .join(OrganisationRow, OrganisationRow.id == ProjectRow.org_id)
                               .where(ProjectRow.name == name)).first()
        if found is None:
            raise NotFound(f"no project named {name!r}", code="gpuplane.project.not_found")
        return _project(*found)

    def by_id(self, project_id: int) -> Project:
        row = self.s.get(ProjectRow, project_id)
        if row is None:
            raise NotFound(f"no project {project_id}", code="gpuplane.project.not_found")
        return self._convert([row])[0]

    def list(self, after: int | None = None, limit: int = 100_000,
             only_ids: Iterable[int] | None = None, org_id: int | None = None) -> Page[Project]:
        stmt = select(ProjectRow)
        if only_ids is not None:
            stmt = stmt.where(ProjectRow.id.in_(list(only_ids)))
        if org_id is not None:
            stmt = stmt.where(ProjectRow.org_id == org_id)
        page = paginate(self.s, stmt, ProjectRow.id, after, limit, lambda r: r, lambda r: r.id)
        return Page(self._convert(page.items), page.next_after)

    def ids_in_orgs(self, org_ids: Iterable[int]) -> set[int]:
        org_ids = list(org_ids)
        if not org_ids:
            return set()
        return set(self.s.execute(select(ProjectRow.id).where(ProjectRow.org_id.in_(org_ids))
                                  ).scalars())

    def org_ids_of(self, project_ids: Iterable[int]) -> dict[int, int]:
        """Organisation id of each of ``project_ids`` that exists."""
        project_ids = list(project_ids)
        if not project_ids:
            return {}
        return dict(self.s.execute(select(ProjectRow.id, ProjectRow.org_id)
                                   .where(ProjectRow.id.in_(project_ids))).tuples().all())

    def update(self, name: str, seen_generation: int, **values: object) -> Project:
        row_id = self.get(name).id
        guarded_update(self.s, ProjectRow, ProjectRow.id, row_id, seen_generation,
                       f"project {name!r}", **values)
        return self.get(name)

    def delete(self, name: str) -> None:
        project = self.get(name)
        if self.s.execute(select(WorkloadRow.pk).where(WorkloadRow.project_id == project.id)).first():
            raise Conflict(f"project {name!r} still has workloads; delete them first",
                           code="gpuplane.project.in_use")
        self.s.execute(delete(RoleBindingRow).where(RoleBindingRow.scope_kind == "project",
                                                    RoleBindingRow.scope_id == project.id))
        self.s.execute(delete(ProjectRow).where(ProjectRow.id == project.id))


class UserRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def _scope_name(self, kind: str, scope_id: int) -> str:
        if kind == "organisation":
            row = self.s.get(OrganisationRow, scope_id)
            return row.name if row else "?"
        if kind == "project":
            row = self.s.get(ProjectRow, scope_id)
            return row.name if row else "?"
        return ""

    def _bindings(self, user_ids: list[int]) -> dict[int, list[RoleBinding]]:
        out: dict[int, list[RoleBinding]] = {u: [] for u in user_ids}
        if not user_ids:
            return out
        names = dict(self.s.execute(select(UserRow.id, UserRow.name)
                                    .where(UserRow.id.in_(user_ids))).tuples().all())
        rows = self.s.execute(select(RoleBindingRow).where(RoleBindingRow.user_id.in_(user_ids))
                              .order_by(RoleBindingRow.id)).scalars()
        for r in rows:
            out[r.user_id].append(RoleBinding(r.id, names[r.user_id], r.role, r.scope_kind,
                                              r.scope_id, self._scope_name(r.scope_kind, r.scope_id),
                                              r.created_at))
        return out

    def _convert(self, rows: list[UserRow]) -> list[User]:
        roles = self._bindings([r.id for r in rows])
        orgs = {}
        for r in rows:
            if r.org_id is not None and r.org_id not in orgs:
                orgs[r.org_id] = self.s.get(OrganisationRow, r.org_id).name
        return [User(r.id, r.name, r.email, r.org_id, orgs.get(r.org_id), r.disabled,
                     r.created_at, tuple(roles[r.id])) for r in rows]

    def add(self, name: str, email: str, org_id: int | None, now: float) -> User:
        if self.s.execute(select(UserRow.id).where(UserRow.name == name)).first():
            raise Conflict(f"user {name!r} already exists", code="gpuplane.user.exists")
        row = UserRow(name=name, email=email, org_id=org_id, disabled=False, created_at=now)
        self.s.add(row)
        self.s.flush()
        return self._convert([row])[0]

    def get(self, name: str) -> User:
        row = self.s.execute(select(UserRow).where(UserRow.name == name)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no user named {name!r}", code="gpuplane.user.not_found")
        return self._convert([row])[0]

    def by_id(self, user_id: int) -> User:
        row = self.s.get(UserRow, user_id)
        if row is None:
            raise NotFound(f"no user {user_id}", code="gpuplane.user.not_found")
        return self._convert([row])[0]

    def count(self) -> int:
        return len(self.s.execute(select(UserRow.id).limit(1)).all())

    def list(self, after: int | None = None, limit: int = 1000,
             org_ids: Iterable[int] | None = None) -> Page[User]:
        stmt = select(UserRow)
        if org_ids is not None:
            stmt = stmt.where(UserRow.org_id.in_(list(org_ids)))
        page = paginate(self.s, stmt, UserRow.id, after, limit, lambda r: r, lambda r: r.id)
        return Page(self._convert(page.items), page.next_after)

    def set_disabled(self, name: str, disabled: bool) -> User:
        row = self.s.execute(select(UserRow).where(UserRow.name == name)).scalar_one()
        row.disabled = disabled
        self.s.flush()
        return self.get(name)

    def delete(self, name: str) -> None:
        user = self.get(name)
        self.s.execute(delete(ApiTokenRow).where(ApiTokenRow.user_id == user.id))
        self.s.execute(delete(RoleBindingRow).where(RoleBindingRow.user_id == user.id))
        self.s.execute(delete(UserRow).where(UserRow.id == user.id))

    def bind(self, user_id: int, role: str, scope_kind: str, scope_id: int, now: float) -> RoleBinding:
        exists = self.s.execute(select(RoleBindingRow.id).where(
            RoleBindingRow.user_id == user_id, RoleBindingRow.role == role,
            RoleBindingRow.scope_kind == scope_kind, RoleBindingRow.scope_id == scope_id)).first()
        if exists:
            raise Conflict("this role binding already exists", code="gpuplane.role_binding.exists")
        row = RoleBindingRow(user_id=user_id, role=role, scope_kind=scope_kind, scope_id=scope_id,
                             created_at=now)
        self.s.add(row)
        self.s.flush()
        return self.binding(row.id)

    def binding(self, binding_id: int) -> RoleBinding:
        row = self.s.get(RoleBindingRow, binding_id)
        if row is None:
            raise NotFound(f"no role binding {binding_id}", code="gpuplane.role_binding.not_found")
        return next(b for b in self._bindings([row.user_id])[row.user_id] if b.id == binding_id)

    def grants(self, user_id: int) -> list[tuple[str, str, int, int | None]]:
        """The user's role bindings as (role, scope kind, scope id, organisation of a project
        scope), in binding order: what authorisation needs, in one statement (every
        authenticated request reads it)."""
        return [tuple(r) for r in self.s.execute(
            select(RoleBindingRow.role, RoleBindingRow.scope_kind, RoleBindingRow.scope_id,
                   ProjectRow.org_id)
            .outerjoin(ProjectRow, and_(RoleBindingRow.scope_kind == "project",
                                        ProjectRow.id == RoleBindingRow.scope_id))
            .where(RoleBindingRow.user_id == user_id).order_by(RoleBindingRow.id))]

    def unbind(self, binding_id: int) -> None:
        self.s.execute(delete(RoleBindingRow).where(RoleBindingRow.id == binding_id))


def _token(row: ApiTokenRow, user: str) -> ApiToken:
    return ApiToken(row.id, row.user_id, user, row.name, row.prefix, row.created_at,
                    row.expires_at, row.revoked_at, row.last_used_at)


class TokenRepo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, user_id: int, name: str, prefix: str, token_hash: str, now: float,
            expires_at: float | None) -> ApiToken:
        row = ApiTokenRow(user_id=user_id, name=name, prefix=prefix, token_hash=token_hash,
                          created_at=now, expires_at=expires_at)
        self.s.add(row)
        self.s.flush()
        return _token(row, self.s.get(UserRow, user_id).name)

    def by_hash(self, token_hash: str) -> tuple[ApiToken, bool] | None:
        """The token with this hash and whether its user is disabled (one statement: every
        authenticated request reads it)."""
        found = self.s.execute(select(ApiTokenRow, UserRow.name, UserRow.disabled)
                               .join(UserRow, UserRow.id == ApiTokenRow.user_id)
                               .where(ApiTokenRow.token_hash == token_hash)).first()
        return None if found is None else (_token(found[0], found[1]), bool(found[2]))

    def get(self, token_id: int) -> ApiToken:
        row = self.s.get(ApiTokenRow, token_id)
        if row is None:
            raise NotFound(f"no API token {token_id}", code="gpuplane.token.not_found")
        return _token(row, self.s.get(UserRow, row.user_id).name)

    def list(self, user_ids: Iterable[int] | None, after: int | None = None,
             limit: int = 1000) -> Page[ApiToken]:
        stmt = select(ApiTokenRow)
        if user_ids is not None:
            stmt = stmt.where(ApiTokenRow.user_id.in_(list(user_ids)))
        names = dict(self.s.execute(select(UserRow.id, UserRow.name)).tuples().all())
        return paginate(self.s, stmt, ApiTokenRow.id, after, limit,
                        lambda r: _token(r, names.get(r.user_id, "?")), lambda r: r.id)

    def revoke(self, token_id: int, now: float) -> None:
        self.s.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id,
                                                 ApiTokenRow.revoked_at.is_(None))
                       .values(revoked_at=now).execution_options(synchronize_session=False))

    def touch(self, token_id: int, now: float) -> None:
        self.s.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id)
                       .values(last_used_at=now).execution_options(synchronize_session=False))
