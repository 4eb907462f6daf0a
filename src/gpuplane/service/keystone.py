"""Keystone as identity: a Keystone token becomes a gpuplane principal (docs/keystone.md).

A request with ``X-Auth-Token`` is validated with ``GET /v3/auth/tokens`` (the token as
``X-Subject-Token``; gpuplane's own service token as ``X-Auth-Token``, or the token itself
when no service credentials are configured). What Keystone answers is mapped:

* the token's user's domain and the scope's domain -> an organisation each;
* the scoped project -> a project of the project's domain's organisation;
* the user -> a user of their domain's organisation;
* the token's roles -> role bindings, by ``keystone_project_roles`` on the project (or
  ``keystone_domain_roles`` on the organisation for a domain-scoped token), and by
  ``keystone_global_roles`` as *global* roles only when the token is scoped to
  ``keystone_global_scope``.

Tenancy is created on first use and kept in step (bindings added and removed so that the
mapped scope holds exactly what Keystone says) in one write transaction, audited with actor
``keystone``; a request whose tenancy is already in step writes nothing. The principal of a
Keystone request holds exactly the grants its token maps to: stored bindings of other scopes
(from earlier tokens, or granted in gpuplane) do not widen it, as in every OpenStack service a
project-scoped token acts on its project.

Linking: gpuplane names are global and only ``[a-z0-9-]``, Keystone names are per domain, so a
gpuplane object created for (or adopted by) Keystone is linked to the Keystone id in the
``identity_links`` table, which only this mapping writes, and is found by that id, so a rename
in Keystone keeps the gpuplane object. (The display name, ``<Keystone name> (keystone
domain|project <id>)``, and a user's email ``keystone:<id>`` say so to people; they are not
trusted: a tenant can edit them.) A project or user linked to an object of another
organisation than its domain's is refused (403). A name is the slug of the Keystone name (``ML Team`` -> ``ml-team``); when
that name is taken by another object, ``-<first 8 characters of the id>`` is appended. An
existing object is adopted only inside the organisation mapped from the same domain (a
project of that organisation with the slug name and no link, e.g. created by an
operator beforehand to set quotas; users are never adopted without their link).

Validated tokens are cached in memory (key: SHA-256 of the token) for ``keystone_cache_s``,
never beyond the token's expiry: a token revoked in Keystone is refused at most that long
after. Keystone unreachable, slow or refusing gpuplane's own credentials is a 503
(``gpuplane.keystone.unavailable``), never a 401: the caller's token may well be good.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from gpuplane.domain.errors import Conflict
from gpuplane.service.authz import ROLE_ACTIONS, Forbidden, Grant, Principal, Unauthenticated
from gpuplane.service.base import ServiceBase
from gpuplane.service.keystone_client import (KeystoneClient, KeystoneConfig, TokenCache,
                                              TokenInfo)
from gpuplane.service.login_failures import source_key
from gpuplane.store.tables import IdentityLinkRow, OrganisationRow, ProjectRow, UserRow

log = logging.getLogger("gpuplane.keystone")
ACTOR = "keystone"
CACHE_MAX_ENTRIES = 10_000
SERVICE_TOKEN_MARGIN_S = 120.0  # renew gpuplane's own token this long before it expires
NAME_MAX = 63
#: what a Keystone token (fernet, JWS, UUID) can look like; anything else is refused unasked
TOKEN_RE = re.compile(r"[A-Za-z0-9_\-.=+/]{1,8192}")


@dataclass(frozen=True)
class KeystonePrincipal(Principal):
    """A principal authenticated by a Keystone token (what the token was for, for audit and
    for the rules that only apply to Keystone callers)."""

    keystone_user_id: str = ""
    keystone_scope: str = ""  # "project <id>", "domain <id>" or "system"
    expires_at: float = 0.0


def slug(text: str) -> str:
    """A gpuplane name (``[a-z0-9-]``, at most 63) from a Keystone name; never empty."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:NAME_MAX].strip("-")
    return s or "keystone"


def name_candidates(name: str, keystone_id: str) -> list[str]:
    """The names gpuplane tries, in order, for the object of Keystone ``name``/``keystone_id``:
    the slug, then the slug with a short and then the whole id appended."""
    base, tag = slug(name), slug(keystone_id)
    out = [base]
    for suffix in (tag[:8], tag):
        head = base[:NAME_MAX - len(suffix) - 1].strip("-")
        cand = f"{head}-{suffix}" if head else suffix[:NAME_MAX]
        if cand not in out:
            out.append(cand)
    return out


def minimal_roles(roles: set[str]) -> set[str]:
    """``roles`` without those another of them entirely includes (Keystone's implied roles
    make an admin token carry manager, member and reader too: one ``admin`` binding is kept,
    not four)."""
    actions = {r: ROLE_ACTIONS[r] for r in roles}
    return {r for r in roles if not any(actions[r] < actions[o] for o in roles if o != r)}


def _domain_link(domain_id: str) -> str:
    return f"(keystone domain {domain_id})"


def _project_link(project_id: str) -> str:
    return f"(keystone project {project_id})"


def _user_link(user_id: str) -> str:
    return f"keystone:{user_id}"


def _display(name: str, link: str) -> str:
    return f"{name[:200]} {link}"


# -- the Keystone client --------------------------------------------------------------------
@dataclass
class _Mapped:
    """Where a token lands in gpuplane (ids), and the grants it maps to."""

    user_id: int
    user_name: str
    grants: tuple[Grant, ...]


class KeystoneService(ServiceBase):
    """Authenticates ``X-Auth-Token`` requests against Keystone (see the module docstring)."""

    def __init__(self, store, clock, log_source=None, *, config: KeystoneConfig,  # noqa: ANN001
                 auth=None, client: KeystoneClient | None = None) -> None:  # noqa: ANN001
        super().__init__(store, clock, log_source)
        self.config = config
        self.auth = auth  # AuthService: failed validations count towards its per-source throttle
        self.client = client or KeystoneClient(config, clock=self.now)
        self.cache = TokenCache()

    def close(self) -> None:
        self.client.close()

    # -- authentication -------------------------------------------------------------------
    def authenticate(self, token: str, source: str | None = None) -> KeystonePrincipal:
        """The principal of Keystone token ``token``: from the cache, else validated by
        Keystone and mapped (tenancy created or brought in step). Unauthenticated (401) when
        Keystone says the token is not valid; KeystoneUnavailable (503) when it cannot say.
        Blocks on Keystone for at most ``timeout_s`` per request it sends."""
        now = self.now()
        key = TokenCache.key(token)
        cached = self.cache.get(key, now)
        if cached is not None:
            return cached
        if self.auth is not None and source is not None:
            self.auth.check_source(source_key(source), now)
        body = self.client.validate(token) if TOKEN_RE.fullmatch(token) else None
        if body is None:
            self._failed(source, "invalid keystone token")
            raise Unauthenticated("Keystone does not accept this token (unknown, expired or "
                                  "revoked); get a new one (e.g. `openstack token issue`) and "
                                  "send it as X-Auth-Token")
        try:
            info = TokenInfo.parse(body)
        except Unauthenticated:
            self._failed(source, "unscoped keystone token")
            raise
        if info.expires_at <= now:
            self._failed(source, "expired keystone token")
            raise Unauthenticated("the Keystone token has expired; get a new one")
        principal = self.principal_for(info)
        if self.config.cache_s > 0:
            self.cache.put(key, min(now + self.config.cache_s, info.expires_at), principal)
        return principal

    def _failed(self, source: str | None, reason: str) -> None:
        if self.auth is None:
            return
        if source is not None:
            self.auth.write_failures(self.auth.failures.failed(source_key(source), reason, None,
                                                               self.now()))
            return
        with self.store.write() as tx:
            self.audit(tx, "anonymous", "auth.login_failed", "token", "keystone",
                       outcome="denied", detail={"reason": reason})

    def principal_for(self, info: TokenInfo) -> KeystonePrincipal:
        """Map a validated token: read first; only when something must change (first use,
        changed roles, a renamed project) one write transaction creates or updates it."""
        with self.store.read() as tx:
            mapped = self._map(tx, info, write=False)
        if mapped is None:
            for attempt in (1, 2):
                try:
                    with self.store.write() as tx:
                        mapped = self._map(tx, info, write=True)
                    break
                except Conflict:
                    if attempt == 2:  # another process created the same names meanwhile
                        raise
        assert mapped is not None
        if mapped.user_id < 0:
            raise Unauthenticated(f"the gpuplane user {mapped.user_name!r} of this Keystone user "
                                  "is disabled in gpuplane; ask a gpuplane admin")
        if info.scope == "system" and not mapped.grants:
            raise Forbidden("system-scoped Keystone tokens give no gpuplane role here; ask for "
                            "a project-scoped token (or set GPUPLANE_KEYSTONE_GLOBAL_SCOPE=system)")
        return KeystonePrincipal(mapped.user_id, mapped.user_name, mapped.grants,
                                 keystone_user_id=info.user_id,
                                 keystone_scope=(info.scope if info.scope == "system"
                                                 else f"{info.scope} {info.scope_id}"),
                                 expires_at=info.expires_at)

    # -- mapping --------------------------------------------------------------------------
    def is_global_scope(self, info: TokenInfo) -> bool:
        """True if ``info``'s scope is ``keystone_global_scope``."""
        want = self.config.global_scope
        if not want:
            return False
        if want == "system":
            return info.scope == "system"
        return info.scope == "project" and want in (info.scope_id,
                                                    f"{info.domain_name}/{info.scope_name}")

    def desired_roles(self, info: TokenInfo) -> tuple[set[str], set[str]]:
        """(gpuplane roles on the token's project or organisation, gpuplane global roles)."""
        table = self.config.domain_roles if info.scope == "domain" else self.config.project_roles
        scoped = {table[r] for r in info.roles if r in table} if info.scope != "system" else set()
        glob = ({self.config.global_roles[r] for r in info.roles if r in self.config.global_roles}
                if self.is_global_scope(info) else set())
        return minimal_roles(scoped), minimal_roles(glob)

    def _map(self, tx, info: TokenInfo, *, write: bool) -> _Mapped | None:  # noqa: ANN001
        """Find (and with ``write`` create or update) the organisations, project, user and
        bindings of ``info``. Without ``write``: None as soon as anything is missing or out
        of step. A disabled user comes back with ``user_id`` -1."""
        scoped_roles, global_roles = self.desired_roles(info)
        user_org = self._org(tx, info.user_domain_id, info.user_domain_name, write)
        if user_org is None:
            return None
        scope_kind, scope_id, scope_org = "global", 0, None
        if info.scope == "project":
            org = user_org if info.domain_id == info.user_domain_id else \
                self._org(tx, info.domain_id, info.domain_name, write)
            if org is None:
                return None
            project = self._project(tx, info, org, write)
            if project is None:
                return None
            scope_kind, scope_id, scope_org = "project", project.id, org.id
        elif info.scope == "domain":
            org = user_org if info.domain_id == info.user_domain_id else \
                self._org(tx, info.domain_id, info.domain_name, write)
            if org is None:
                return None
            scope_kind, scope_id = "organisation", org.id
        user = self._user(tx, info, user_org, write)
        if user is None:
            return None
        if user.disabled:
            return _Mapped(-1, user.name, ())
        in_step = True
        if scope_kind != "global":
            in_step = self._bindings(tx, info, user, scope_kind, scope_id, scoped_roles, write)
        # global bindings are only known from a token of the global scope; others leave them
        in_step &= self._bindings(tx, info, user, "global", 0,
                                  global_roles if self.is_global_scope(info) else None, write)
        if not in_step and not write:
            return None
        grants = [Grant(r, scope_kind, scope_id, scope_org if scope_kind == "project" else None)
                  for r in sorted(scoped_roles) if scope_kind != "global"]
        grants += [Grant(r, "global", 0, None) for r in sorted(global_roles)]
        return _Mapped(user.id, user.name, tuple(grants))

    def _free_name(self, tx, repo: str, name: str, keystone_id: str) -> str:  # noqa: ANN001
        getter = getattr(tx, repo).get
        from gpuplane.domain.errors import NotFound

        for cand in name_candidates(name, keystone_id):
            try:
                getter(cand)
            except NotFound:
                return cand
        raise Conflict(f"no free gpuplane name for Keystone {repo[:-1]} {name!r} "
                       f"({keystone_id}); tried {', '.join(name_candidates(name, keystone_id))}",
                       code="gpuplane.keystone.name_taken")

    @staticmethod
    def _linked(tx, kind: str, external_id: str, model: type) -> Any:  # noqa: ANN001
        """The row linked to Keystone's ``external_id`` (``kind``: organisation, project,
        user), or None; a link whose object was deleted is dropped."""
        link = tx.session.execute(select(IdentityLinkRow).where(
            IdentityLinkRow.provider == ACTOR, IdentityLinkRow.kind == kind,
            IdentityLinkRow.external_id == external_id)).scalars().first()
        if link is None:
            return None
        row = tx.session.get(model, link.object_id)
        if row is None:
            tx.session.delete(link)
            tx.session.flush()
        return row

    def _link(self, tx, kind: str, external_id: str, object_id: int) -> None:  # noqa: ANN001
        tx.session.add(IdentityLinkRow(provider=ACTOR, kind=kind, external_id=external_id,
                                       object_id=object_id, created_at=self.now()))
        tx.session.flush()

    @staticmethod
    def _is_linked(tx, kind: str, object_id: int) -> bool:  # noqa: ANN001
        return tx.session.execute(select(IdentityLinkRow.id).where(
            IdentityLinkRow.kind == kind, IdentityLinkRow.object_id == object_id)
            ).first() is not None

    def _org(self, tx, domain_id: str, domain_name: str, write: bool):  # noqa: ANN001, ANN202
        row = self._linked(tx, "organisation", domain_id, OrganisationRow)
        want = _display(domain_name, _domain_link(domain_id))
        if row is not None and row.display_name == want:
            return tx.orgs.by_id(row.id)
        if not write:
            return None
        if row is not None:  # renamed in Keystone: the display name follows, the name stays
            row.display_name = want
            row.generation += 1
            tx.session.flush()
            self.audit(tx, ACTOR, "organisation.update", "organisation", row.name, org_id=row.id,
                       detail={"display_name": want, "keystone_domain": domain_id})
            return tx.orgs.by_id(row.id)
        name = self._free_name(tx, "orgs", domain_name, domain_id)
        org = tx.orgs.add(name, want, self.now())
        self._link(tx, "organisation", domain_id, org.id)
        self.audit(tx, ACTOR, "organisation.create", "organisation", name, org_id=org.id,
                   detail={"keystone_domain": domain_id, "keystone_name": domain_name})
        return org

    def _project(self, tx, info: TokenInfo, org, write: bool):  # noqa: ANN001, ANN202
        want = _display(info.scope_name, _project_link(info.scope_id))
        row = self._linked(tx, "project", info.scope_id, ProjectRow)
        if row is not None and row.org_id != org.id:
            raise Forbidden(f"Keystone project {info.scope_id} is linked to gpuplane project "
                            f"{row.name} of another organisation than its domain's")
        if row is not None and row.display_name == want:
            return tx.projects.by_id(row.id)
        if not write:
            return None
        if row is not None:
            tx.projects.update(row.name, row.generation, display_name=want)
            self.audit(tx, ACTOR, "project.update", "project", row.name, project_id=row.id,
                       org_id=org.id, detail={"display_name": want,
                                              "keystone_project": info.scope_id})
            return tx.projects.by_id(row.id)
        base = slug(info.scope_name)
        adopt = tx.session.execute(select(ProjectRow).where(ProjectRow.name == base)
                                   ).scalars().first()
        if adopt is not None and adopt.org_id == org.id and \
                not self._is_linked(tx, "project", adopt.id):
            tx.projects.update(adopt.name, adopt.generation, display_name=want)
            self._link(tx, "project", info.scope_id, adopt.id)
            self.audit(tx, ACTOR, "project.update", "project", adopt.name, project_id=adopt.id,
                       org_id=org.id, detail={"display_name": want, "adopted": True,
                                              "keystone_project": info.scope_id})
            return tx.projects.by_id(adopt.id)
        name = self._free_name(tx, "projects", info.scope_name, info.scope_id)
        project = tx.projects.add(name, org.id, want, 1.0, None, self.now())
        self._link(tx, "project", info.scope_id, project.id)
        self.audit(tx, ACTOR, "project.create", "project", name, project_id=project.id,
                   org_id=org.id, detail={"keystone_project": info.scope_id,
                                          "keystone_name": info.scope_name,
                                          "keystone_domain": info.domain_id})
        return project

    def _user(self, tx, info: TokenInfo, org, write: bool):  # noqa: ANN001, ANN202
        row = self._linked(tx, "user", info.user_id, UserRow)
        if row is not None and row.org_id == org.id:
            return tx.users.by_id(row.id)
        if row is not None:
            raise Forbidden(f"Keystone user {info.user_id} is linked to gpuplane user "
                            f"{row.name} of another organisation than their domain's")
        if not write:
            return None
        name = self._free_name(tx, "users", info.user_name, info.user_id)
        user = tx.users.add(name, _user_link(info.user_id), org.id, self.now())
        self._link(tx, "user", info.user_id, user.id)
        self.audit(tx, ACTOR, "user.create", "user", name, org_id=org.id,
                   detail={"keystone_user": info.user_id, "keystone_name": info.user_name,
                           "keystone_domain": info.user_domain_id})
        return user

    def _bindings(self, tx, info: TokenInfo, user, kind: str, scope_id: int,  # noqa: ANN001
                  desired: set[str] | None, write: bool) -> bool:
        """Make ``user``'s bindings on one scope exactly ``desired`` (None: leave them).
        True if they already were."""
        if desired is None:
            return True
        have = {b.role: b for b in user.roles if b.scope_kind == kind and b.scope_id == scope_id}
        add, drop = desired - set(have), set(have) - desired
        if not add and not drop:
            return True
        if not write:
            return False
        project_id = scope_id if kind == "project" else None
        org_id = scope_id if kind == "organisation" else None
        if kind == "project":
            org_id = tx.projects.by_id(scope_id).org_id
        detail = {"scope": kind, "keystone_roles": list(info.roles),
                  "keystone_scope": f"{info.scope} {info.scope_id}"}
        for role in sorted(drop):
            b = have[role]
            tx.users.unbind(b.id)
            self.audit(tx, ACTOR, "role.revoke", "user", user.name, project_id=project_id,
                       org_id=org_id, detail={"role": role, "scope_name": b.scope_name, **detail})
        for role in sorted(add):
            b = tx.users.bind(user.id, role, kind, scope_id, self.now())
            self.audit(tx, ACTOR, "role.grant", "user", user.name, project_id=project_id,
                       org_id=org_id, detail={"role": role, "scope_name": b.scope_name, **detail})
        return False
