"""Use-cases on tenants: organisations, projects, users, role bindings, API tokens.

Acting for a user (a token for them, a binding to them, revoking one of theirs, deleting them)
follows the no-escalation rule of ``authz``: the caller must hold every binding the user holds
(``_require_manage``), and a new binding must be one the caller holds on that scope. A user the
caller may not name (another organisation's, or one without an organisation for all but global
roles) answers exactly like a name nobody holds (``_unknown_user``), so names do not leak.
"""

from __future__ import annotations

from gpuplane.domain.errors import NotFound
from gpuplane.service.auth import AuthService
from gpuplane.service.authz import (Forbidden, Grant, Principal, grants_from_bindings, require,
                                    require_global)
from gpuplane.service.base import ServiceBase
from gpuplane.service.specs import (OrganisationSpec, ProjectSpec, ProjectUpdate, RoleBindingSpec,
                                    TokenSpec, UserSpec, dump)
from gpuplane.store.paging import Page
from gpuplane.store.records import ApiToken, Organisation, Project, RoleBinding, User


class TenancyService(ServiceBase):
    # -- organisations ------------------------------------------------------------------------
    def create_organisation(self, principal: Principal, spec: OrganisationSpec) -> Organisation:
        require_global(principal, "org.write", "organisations")
        with self.store.write() as tx:
            org = tx.orgs.add(spec.name, spec.display_name, self.now())
            self.audit(tx, principal.name, "organisation.create", "organisation", spec.name,
                       org_id=org.id)
            return org

    def get_organisation(self, principal: Principal, name: str) -> Organisation:
        with self.store.read() as tx:
            try:
                org = tx.orgs.get(name)
            except NotFound:
                org = None
            if org is None or not principal.sees(org_id=org.id):
                raise NotFound(f"organisation {name!r} not found",
                               code="gpuplane.organisation.not_found")
            return org

    def list_organisations(self, principal: Principal, after: int | None, limit: int
                           ) -> Page[Organisation]:
        with self.store.read() as tx:
            if principal.is_global("org.read"):
                return tx.orgs.list(after, limit)
            ids = {g.scope_id for g in principal.grants if g.scope_kind == "organisation"}
            ids |= {g.org_id for g in principal.grants if g.scope_kind == "project" and g.org_id}
            return tx.orgs.list(after, limit, only_ids=ids)

    def delete_organisation(self, principal: Principal, name: str) -> None:
        require_global(principal, "org.write", "organisations")
        with self.store.write() as tx:
            org = tx.orgs.get(name)
            tx.orgs.delete(name)
            self.audit(tx, principal.name, "organisation.delete", "organisation", name,
                       org_id=org.id)

    # -- projects -----------------------------------------------------------------------------
    def create_project(self, principal: Principal, spec: ProjectSpec) -> Project:
        with self.store.write() as tx:
            org = tx.orgs.get(spec.organisation)
            require(principal, "project.write", org_id=org.id,
                    what=f"organisation {spec.organisation!r}")
            project = tx.projects.add(spec.name, org.id, spec.display_name, spec.weight,
                                      spec.cohort, self.now(), spec.classification)
            self.audit(tx, principal.name, "project.create", "project", spec.name,
                       project_id=project.id, org_id=org.id, detail=dump(spec))
            return project

    def _visible_project(self, tx, principal: Principal, name: str, action: str) -> Project:  # noqa: ANN001
        try:
            project = tx.projects.get(name)
        except NotFound:
            raise NotFound(f"project {name!r} not found", code="gpuplane.project.not_found") from None
        require(principal, action, project_id=project.id, org_id=project.org_id,
                what=f"project {name!r}")
        return project

    def get_project(self, principal: Principal, name: str) -> Project:
        with self.store.read() as tx:
            return self._visible_project(tx, principal, name, "project.read")

    def list_projects(self, principal: Principal, after: int | None, limit: int,
                      organisation: str | None = None) -> Page[Project]:
        from gpuplane.service.authz import visible_project_ids

        with self.store.read() as tx:
            ids = visible_project_ids(principal, "project.read", tx)
            org_id = tx.orgs.get(organisation).id if organisation else None
            return tx.projects.list(after, limit, only_ids=ids, org_id=org_id)

    def update_project(self, principal: Principal, name: str, spec: ProjectUpdate) -> Project:
        """Change weight, cohort or display name (needs project.write on the organisation)."""
        with self.store.write() as tx:
            project = self._visible_project(tx, principal, name, "project.read")
            if not principal.may("project.write", org_id=project.org_id):
                raise Forbidden(f"changing project {name!r} needs an admin role on its "
                                "organisation")
            values = {k: v for k, v in spec.model_dump(exclude={"generation"},
                                                       exclude_unset=True).items()}
            updated = tx.projects.update(name, spec.generation or project.generation, **values)
            self.audit(tx, principal.name, "project.update", "project", name,
                       project_id=project.id, org_id=project.org_id, detail=values)
            return updated

    def delete_project(self, principal: Principal, name: str) -> None:
        with self.store.write() as tx:
            project = self._visible_project(tx, principal, name, "project.read")
            if not principal.may("project.write", org_id=project.org_id):
                raise Forbidden(f"deleting project {name!r} needs an admin role on its "
                                "organisation")
            tx.projects.delete(name)
            self.audit(tx, principal.name, "project.delete", "project", name,
                       project_id=project.id, org_id=project.org_id)

    # -- users and roles ----------------------------------------------------------------------
    def create_user(self, principal: Principal, spec: UserSpec) -> User:
        with self.store.write() as tx:
            org_id = tx.orgs.get(spec.organisation).id if spec.organisation else None
            if org_id is None:
                require_global(principal, "user.write", "users without an organisation")
            else:
                require(principal, "user.write", org_id=org_id,
                        what=f"organisation {spec.organisation!r}")
            user = tx.users.add(spec.name, spec.email, org_id, self.now())
            self.audit(tx, principal.name, "user.create", "user", spec.name, org_id=org_id)
            return user

    def _visible_user(self, tx, principal: Principal, name: str, action: str) -> User:  # noqa: ANN001
        """The user ``name`` if ``action`` reaches their organisation (global roles only for a
        user without one), or it is the caller reading itself; else 403 where the caller may
        read the organisation's users, and otherwise 404 exactly like a name nobody holds."""
        try:
            user = tx.users.get(name)
        except NotFound:
            raise _unknown_user(name) from None
        if user.id == principal.user_id and action == "user.read":
            return user
        if principal.may(action, org_id=user.org_id) if user.org_id else principal.is_global(action):
            return user
        if user.org_id is not None and principal.sees(org_id=user.org_id) \
                and principal.may("user.read", org_id=user.org_id):
            raise Forbidden(f"your roles do not allow {action} on user {name!r}")
        raise _unknown_user(name)

    def _named_user(self, tx, principal: Principal, name: str, action: str) -> User:  # noqa: ANN001
        """The user ``name`` as the object of ``action`` (binding a role): any user for a global
        holder of ``action``, otherwise yourself or a user of an organisation where ``action``
        is yours (a project binding counts for its organisation). A user of another
        organisation answers exactly like a name nobody holds."""
        try:
            user = tx.users.get(name)
        except NotFound:
            raise _unknown_user(name) from None
        orgs = principal.org_ids(action)
        if user.id == principal.user_id or orgs is None or user.org_id in orgs:
            return user
        if user.org_id is not None and principal.may("user.read", org_id=user.org_id):
            raise Forbidden(f"your roles do not allow {action} on user {name!r}")
        raise _unknown_user(name)

    def _require_manage(self, tx, principal: Principal, user: User, action: str,  # noqa: ANN001
                        verb: str) -> None:
        """No escalation: the caller's ``action`` must reach every binding ``user`` holds and
        the caller must hold each of them (see ``Principal.may_manage``)."""
        orgs = tx.projects.org_ids_of(b.scope_id for b in user.roles if b.scope_kind == "project")
        if not principal.may_manage(action, grants_from_bindings(user.roles, orgs)):
            raise Forbidden(f"user {user.name!r} holds roles beyond yours; only someone whose "
                            f"roles cover all of them may {verb} them")

    def get_user(self, principal: Principal, name: str) -> User:
        with self.store.read() as tx:
            return self._visible_user(tx, principal, name, "user.read")

    def whoami(self, principal: Principal) -> User:
        with self.store.read() as tx:
            return tx.users.by_id(principal.user_id)

    def list_users(self, principal: Principal, after: int | None, limit: int) -> Page[User]:
        with self.store.read() as tx:
            scope = principal.scope_ids("user.read")
            if scope is None:
                return tx.users.list(after, limit)
            _, orgs = scope
            page = tx.users.list(after, limit, org_ids=orgs)
            if after is None and all(u.id != principal.user_id for u in page.items):
                page = Page([tx.users.by_id(principal.user_id), *page.items], page.next_after)
            return page

    def delete_user(self, principal: Principal, name: str) -> None:
        with self.store.write() as tx:
            user = self._visible_user(tx, principal, name, "user.write")
            self._require_manage(tx, principal, user, "user.write", "delete")
            tx.users.delete(name)
            self.audit(tx, principal.name, "user.delete", "user", name, org_id=user.org_id)

    def _scope(self, tx, kind: str, name: str | None) -> tuple[int, int | None, int | None]:  # noqa: ANN001
        """(scope id, project id, org id) of a binding scope."""
        if kind == "global":
            return 0, None, None
        if kind == "organisation":
            org = tx.orgs.get(name)
            return org.id, None, org.id
        project = tx.projects.get(name)
        return project.id, project.id, project.org_id

    def _require_grant(self, principal: Principal, kind: str, project_id: int | None,
                       org_id: int | None, what: str) -> None:
        if kind == "global":
            require_global(principal, "role.grant", "global roles")
        else:
            require(principal, "role.grant", project_id=project_id, org_id=org_id, what=what)

    def grant_role(self, principal: Principal, spec: RoleBindingSpec) -> RoleBinding:
        """Bind a role: the caller needs role.grant on the scope, must itself hold everything
        the role allows there, and must hold every binding the user already has."""
        with self.store.write() as tx:
            scope_id, project_id, org_id = self._scope(tx, spec.scope, spec.scope_name)
            what = "global" if spec.scope == "global" else f"{spec.scope} {spec.scope_name!r}"
            self._require_grant(principal, spec.scope, project_id, org_id, what)
            if not principal.holds(Grant(spec.role, spec.scope, scope_id, org_id)):
                raise Forbidden(f"you may grant only roles you hold yourself: {spec.role!r} on "
                                f"{what} allows more than your roles do")
            user = self._named_user(tx, principal, spec.user, "role.grant")
            if user.id != principal.user_id:
                self._require_manage(tx, principal, user, "role.grant", "bind roles to")
            binding = tx.users.bind(user.id, spec.role, spec.scope, scope_id, self.now())
            self.audit(tx, principal.name, "role.grant", "user", spec.user,
                       project_id=project_id, org_id=org_id, detail=dump(spec))
            return binding

    def list_role_bindings(self, principal: Principal, user: str) -> list[RoleBinding]:
        with self.store.read() as tx:
            return list(self._visible_user(tx, principal, user, "user.read").roles)

    def revoke_role(self, principal: Principal, binding_id: int) -> None:
        with self.store.write() as tx:
            b = tx.users.binding(binding_id)
            _, project_id, org_id = self._scope(tx, b.scope_kind, b.scope_name or None)
            if b.scope_kind != "global" and not principal.sees(project_id=project_id,
                                                               org_id=org_id):
                raise NotFound(f"no role binding {binding_id}",
                               code="gpuplane.role_binding.not_found")
            self._require_grant(principal, b.scope_kind, project_id, org_id,
                                f"{b.scope_kind} {b.scope_name!r}")
            user = tx.users.get(b.user)
            if user.id != principal.user_id:
                self._require_manage(tx, principal, user, "role.grant", "revoke roles of")
            tx.users.unbind(binding_id)
            self.audit(tx, principal.name, "role.revoke", "user", b.user, project_id=project_id,
                       org_id=org_id, detail={"role": b.role, "scope": b.scope_kind,
                                              "scope_name": b.scope_name})

    # -- API tokens ---------------------------------------------------------------------------
    def create_token(self, principal: Principal, spec: TokenSpec) -> tuple[ApiToken, str]:
        """Issue a token for yourself, or (admin) for a user of your organisation who holds
        no binding beyond yours. Not with a Keystone token: a gpuplane token would outlive its
        revocation in Keystone (docs/keystone.md)."""
        from gpuplane.service.keystone import KeystonePrincipal

        if isinstance(principal, KeystonePrincipal):
            raise Forbidden("gpuplane API tokens cannot be created with a Keystone token (they "
                            "would outlive its revocation in Keystone); keep using Keystone "
                            "tokens")
        with self.store.write() as tx:
            name = spec.user or principal.name
            if name == principal.name:
                user = tx.users.by_id(principal.user_id)
            else:
                user = self._visible_user(tx, principal, name, "token.manage")
                self._require_manage(tx, principal, user, "token.manage", "issue tokens for")
            rec, token = AuthService(self.store, self.clock).issue_token(
                tx, user.id, spec.name, spec.expires_in_s)
            self.audit(tx, principal.name, "token.create", "user", user.name, org_id=user.org_id,
                       detail={"token": rec.prefix, "name": spec.name})
            return rec, token

    def _visible_token(self, tx, principal: Principal, token_id: int) -> ApiToken:  # noqa: ANN001
        rec = tx.tokens.get(token_id)
        if rec.user_id == principal.user_id:
            return rec
        user = tx.users.by_id(rec.user_id)
        allowed = principal.may("token.manage", org_id=user.org_id) if user.org_id \
            else principal.is_global("token.manage")
        if not allowed:
            raise NotFound(f"no API token {token_id}", code="gpuplane.token.not_found")
        return rec

    def get_token(self, principal: Principal, token_id: int) -> ApiToken:
        with self.store.read() as tx:
            return self._visible_token(tx, principal, token_id)

    def list_tokens(self, principal: Principal, after: int | None, limit: int) -> Page[ApiToken]:
        with self.store.read() as tx:
            if principal.is_global("token.manage"):
                return tx.tokens.list(None, after, limit)
            return tx.tokens.list([principal.user_id], after, limit)

    def revoke_token(self, principal: Principal, token_id: int) -> None:
        with self.store.write() as tx:
            rec = self._visible_token(tx, principal, token_id)
            if rec.user_id != principal.user_id:
                self._require_manage(tx, principal, tx.users.by_id(rec.user_id), "token.manage",
                                     "revoke tokens of")
            tx.tokens.revoke(token_id, self.now())
            self.audit(tx, principal.name, "token.revoke", "user", rec.user,
                       detail={"token": rec.prefix})


def _unknown_user(name: str) -> NotFound:
    """The one answer for a user name that does not exist *for the caller*."""
    return NotFound(f"user {name!r} not found", code="gpuplane.user.not_found")
