"""Use-cases on quotas and priority classes.

Quotas belong to a project: reading needs ``quota.read`` on it, changing needs ``quota.write``
(admin or operator of the project's organisation, or global). Priority classes are global: any
role reads them, a global admin or operator changes them.
"""

from __future__ import annotations

from gpuplane.domain.errors import NotFound
from gpuplane.service.authz import Forbidden, Principal, require, require_global, visible_project_ids
from gpuplane.service.base import ServiceBase
from gpuplane.service.specs import PriorityClassSpec, QuotaSpec, dump, to_milli
from gpuplane.store.paging import Page
from gpuplane.store.records import PriorityClass, Quota


class PolicyService(ServiceBase):
    def _project(self, tx, principal: Principal, name: str, action: str):  # noqa: ANN001, ANN202
        try:
            project = tx.projects.get(name)
        except NotFound:
            raise NotFound(f"project {name!r} not found", code="gpuplane.project.not_found") from None
        if action == "quota.write" and not principal.may(action, org_id=project.org_id):
            # quota is the organisation's decision, not the project's own
            require(principal, "quota.read", project_id=project.id, org_id=project.org_id,
                    what=f"project {name!r}")
            raise Forbidden(f"setting quotas of project {name!r} needs an admin or operator "
                            "role on its organisation")
        require(principal, action, project_id=project.id, org_id=project.org_id,
                what=f"project {name!r}")
        return project

    def set_quota(self, principal: Principal, spec: QuotaSpec) -> Quota:
        """Create or replace one quota (project, resource, flavor); generation-guarded when
        ``spec.generation`` is given."""
        with self.store.write() as tx:
            project = self._project(tx, principal, spec.project, "quota.write")
            quota = tx.quotas.put(project.id, spec.resource, spec.flavor,
                                  to_milli(spec.guaranteed), to_milli(spec.borrowing_limit),
                                  to_milli(spec.lending_limit), self.now(), spec.generation)
            self.audit(tx, principal.name, "quota.set", "quota", quota.id, project_id=project.id,
                       org_id=project.org_id, detail=dump(spec))
            return quota

    def _visible_quota(self, tx, principal: Principal, quota_id: int, action: str) -> Quota:  # noqa: ANN001
        try:
            quota = tx.quotas.get(quota_id)
        except NotFound:
            quota = None
        if quota is None or not principal.sees(project_id=quota.project_id,
                                               org_id=tx.projects.by_id(quota.project_id).org_id):
            raise NotFound(f"no quota {quota_id}", code="gpuplane.quota.not_found")
        self._project(tx, principal, quota.project, action)
        return quota

    def get_quota(self, principal: Principal, quota_id: int) -> Quota:
        with self.store.read() as tx:
            return self._visible_quota(tx, principal, quota_id, "quota.read")

    def list_quotas(self, principal: Principal, after: int | None, limit: int,
                    project: str | None = None) -> Page[Quota]:
        with self.store.read() as tx:
            ids = visible_project_ids(principal, "quota.read", tx)
            if project is not None:
                p = self._project(tx, principal, project, "quota.read")
                ids = {p.id}
            return tx.quotas.list(ids, after, limit)

    def visible_project_names(self, principal: Principal) -> set[str] | None:
        """Names of the projects whose quotas ``principal`` may read (None: all of them)."""
        with self.store.read() as tx:
            ids = visible_project_ids(principal, "quota.read", tx)
            if ids is None:
                return None
            return {p.name for p in tx.projects.list(only_ids=ids).items}

    def delete_quota(self, principal: Principal, quota_id: int) -> None:
        with self.store.write() as tx:
            quota = self._visible_quota(tx, principal, quota_id, "quota.write")
            tx.quotas.delete(quota_id)
            project = tx.projects.by_id(quota.project_id)
            self.audit(tx, principal.name, "quota.delete", "quota", quota_id,
                       project_id=project.id, org_id=project.org_id,
                       detail={"resource": quota.resource, "flavor": quota.flavor})

    # -- priority classes ---------------------------------------------------------------------
    def create_priority_class(self, principal: Principal, spec: PriorityClassSpec) -> PriorityClass:
        require_global(principal, "priority.write", "priority classes")
        with self.store.write() as tx:
            pc = tx.priorities.add(spec.name, spec.value, spec.preemptible, spec.default,
                                   spec.description, self.now())
            self.audit(tx, principal.name, "priority_class.create", "priority_class", spec.name,
                       detail=dump(spec))
            return pc

    def update_priority_class(self, principal: Principal, name: str, spec: PriorityClassSpec
                              ) -> PriorityClass:
        require_global(principal, "priority.write", "priority classes")
        if spec.name != name:
            from gpuplane.domain.errors import FieldError, InvalidInput

            raise InvalidInput("the body names another priority class than the path", [
                FieldError("name", f"must be {name!r} (renaming is not supported)")])
        with self.store.write() as tx:
            pc = tx.priorities.update(name, value=spec.value, preemptible=spec.preemptible,
                                      is_default=spec.default, description=spec.description)
            self.audit(tx, principal.name, "priority_class.update", "priority_class", name,
                       detail=dump(spec))
            return pc

    def get_priority_class(self, principal: Principal, name: str) -> PriorityClass:
        if not principal.may_anywhere("priority.read"):
            raise Forbidden("you have no role that may read priority classes")
        with self.store.read() as tx:
            return tx.priorities.get(name)

    def list_priority_classes(self, principal: Principal, after: int | None, limit: int
                              ) -> Page[PriorityClass]:
        if not principal.may_anywhere("priority.read"):
            raise Forbidden("you have no role that may read priority classes")
        with self.store.read() as tx:
            return tx.priorities.list(after, limit)

    def delete_priority_class(self, principal: Principal, name: str) -> None:
        require_global(principal, "priority.write", "priority classes")
        with self.store.write() as tx:
            tx.priorities.delete(name)
            self.audit(tx, principal.name, "priority_class.delete", "priority_class", name)
