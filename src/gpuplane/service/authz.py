"""Authorisation: roles, the actions they allow, and the scopes they apply to.

A user holds role bindings ``(role, scope)``; a scope is ``global``, one ``organisation`` (all its
projects) or one ``project``. An action on a project's object is allowed if some binding grants
the action and its scope covers the project. Actions on shared infrastructure (sites, hosts,
priority classes) are read with any binding that grants ``inventory.read`` and written only with a
*global* binding.

No escalation (as Kubernetes RBAC has it): acting *for* a user (issuing them a token, binding
or revoking their roles, deleting them) would hand the caller that user's powers, so the
caller must already hold every one of them: ``may_manage`` checks that the management action
reaches the scope of each of the user's bindings and that the caller holds each binding's
role there (``holds``). A new binding must be one the caller holds too.

Visibility versus permission: an object of a project the caller has *no* binding on does not
exist for them (404, ``gpuplane.*.not_found``), so names of other tenants' objects never leak;
an object they can see but not change gives 403 (``gpuplane.auth.forbidden``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gpuplane.domain.errors import GpuplaneError, NotFound

ROLES = ("admin", "operator", "member", "viewer", "auditor")
SCOPES = ("global", "organisation", "project")

_READ_COMMON = {"inventory.read", "org.read", "project.read", "quota.read", "usage.read",
                "priority.read"}
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(_READ_COMMON | {
        "inventory.write", "org.write", "project.write", "user.read", "user.write", "role.grant",
        "token.manage", "quota.write", "priority.write", "workload.read", "workload.write",
        "workload.logs", "audit.read", "governance.write"}),
    "operator": frozenset(_READ_COMMON | {
        "inventory.write", "user.read", "quota.write", "priority.write", "workload.read",
        "workload.write", "workload.logs"}),
    "member": frozenset(_READ_COMMON | {"workload.read", "workload.write", "workload.logs"}),
    "viewer": frozenset(_READ_COMMON | {"workload.read", "workload.logs"}),
    "auditor": frozenset(_READ_COMMON | {"user.read", "workload.read", "audit.read"}),
}


class Unauthenticated(GpuplaneError):
    def __init__(self, detail: str = "missing or invalid bearer token; send "
                 "'Authorization: Bearer <token>' (see $GPUPLANE_HOME/admin-token)") -> None:
        super().__init__(code="gpuplane.auth.unauthenticated", detail=detail)


class Forbidden(GpuplaneError):
    def __init__(self, detail: str) -> None:
        super().__init__(code="gpuplane.auth.forbidden", detail=detail)


@dataclass(frozen=True)
class Grant:
    role: str
    scope_kind: str
    scope_id: int  # 0 for global
    org_id: int | None  # the organisation of a project scope (for org checks)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user and their role bindings, loaded once per request."""

    user_id: int
    name: str
    grants: tuple[Grant, ...]

    @classmethod
    def system(cls, name: str = "system") -> Principal:
        """The control plane itself (control loop, bootstrap): a global admin."""
        return cls(0, name, (Grant("admin", "global", 0, None),))

    def _grants_for(self, action: str) -> list[Grant]:
        return [g for g in self.grants if action in ROLE_ACTIONS.get(g.role, ())]

    def is_global(self, action: str) -> bool:
        return any(g.scope_kind == "global" for g in self._grants_for(action))

    def may(self, action: str, *, project_id: int | None = None, org_id: int | None = None) -> bool:
        """True if a binding grants ``action`` on the project (and its org) or on the org."""
        return any(_covers(g, project_id, org_id) for g in self._grants_for(action))

    def may_anywhere(self, action: str) -> bool:
        return bool(self._grants_for(action))

    def may_on(self, action: str, scope: Grant) -> bool:
        """True if ``action`` is granted on the whole scope of binding ``scope``."""
        if scope.scope_kind == "global":
            return self.is_global(action)
        if scope.scope_kind == "organisation":
            return self.may(action, org_id=scope.scope_id)
        return self.may(action, project_id=scope.scope_id, org_id=scope.org_id)

    def holds(self, binding: Grant) -> bool:
        """True if the caller may do everything ``binding`` allows, wherever it allows it."""
        return all(self.may_on(a, binding) for a in ROLE_ACTIONS.get(binding.role, ()))

    def may_manage(self, action: str, bindings: Iterable[Grant]) -> bool:
        """No escalation: True if ``action`` reaches the scope of every one of ``bindings`` and
        the caller holds each of them, so acting for their holder gives it nothing new."""
        return all(self.may_on(action, b) and self.holds(b) for b in bindings)

    def org_ids(self, action: str) -> set[int] | None:
        """Organisations where some binding grants ``action`` (a project binding counts for its
        organisation); None means every organisation (a global binding)."""
        scope = self.scope_ids(action)
        if scope is None:
            return None
        return scope[1] | {g.org_id for g in self._grants_for(action)
                           if g.scope_kind == "project" and g.org_id is not None}

    def sees(self, *, project_id: int | None = None, org_id: int | None = None) -> bool:
        """True if any binding at all covers the project/org (then 403, not 404, applies)."""
        for g in self.grants:
            if _covers(g, project_id, org_id):
                return True
            if g.scope_kind == "project" and project_id is None and org_id is not None \
                    and g.org_id == org_id:
                return True  # a project member sees its organisation
        return False

    def scope_ids(self, action: str) -> tuple[set[int], set[int]] | None:
        """(project ids, organisation ids) where ``action`` is granted; None means everywhere."""
        projects: set[int] = set()
        orgs: set[int] = set()
        for g in self._grants_for(action):
            if g.scope_kind == "global":
                return None
            if g.scope_kind == "organisation":
                orgs.add(g.scope_id)
            else:
                projects.add(g.scope_id)
        return projects, orgs


def _covers(g: Grant, project_id: int | None, org_id: int | None) -> bool:
    """True if binding ``g`` reaches the project (and its org) or the org."""
    if g.scope_kind == "global":
        return True
    if g.scope_kind == "organisation" and org_id is not None and g.scope_id == org_id:
        return True
    return g.scope_kind == "project" and project_id is not None and g.scope_id == project_id


def require(principal: Principal, action: str, *, project_id: int | None = None,
            org_id: int | None = None, what: str = "this object") -> None:
    """Raise NotFound if the caller cannot see the scope, Forbidden if they may not act."""
    if principal.may(action, project_id=project_id, org_id=org_id):
        return
    if project_id is None and org_id is None:
        raise Forbidden(f"your roles do not allow {action} on {what}")
    if not principal.sees(project_id=project_id, org_id=org_id):
        raise NotFound(f"{what} not found", code=_not_found_code(what))
    raise Forbidden(f"your roles do not allow {action} on {what}; ask an admin of its "
                    "organisation or project for a role that does")


def require_global(principal: Principal, action: str, what: str) -> None:
    if not principal.is_global(action):
        roles = " or ".join(r for r in ROLES if action in ROLE_ACTIONS[r])
        raise Forbidden(f"{action} on {what} needs a global {roles} role")


def _not_found_code(what: str) -> str:
    word = what.split()[0] if what else "object"
    return f"gpuplane.{word}.not_found" if word in {"workload", "project", "organisation",
                                                     "quota", "user", "token"} \
        else "gpuplane.not_found"


def visible_project_ids(principal: Principal, action: str, tx) -> set[int] | None:  # noqa: ANN001
    """Project ids where ``action`` is granted (None: all projects). Every tenant-scoped
    query filters with this."""
    scope = principal.scope_ids(action)
    if scope is None:
        return None
    projects, orgs = scope
    return projects | tx.projects.ids_in_orgs(orgs)


def grants_from_bindings(bindings: Iterable, project_orgs: dict[int, int]) -> tuple[Grant, ...]:  # noqa: ANN001
    return tuple(Grant(b.role, b.scope_kind, b.scope_id,
                       project_orgs.get(b.scope_id) if b.scope_kind == "project" else None)
                 for b in bindings)
