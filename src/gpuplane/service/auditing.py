"""Reading the audit chain: scoped for auditors and admins; full export for global ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from gpuplane.governance import audit
from gpuplane.service.authz import Forbidden, Principal
from gpuplane.service.base import ServiceBase
from gpuplane.service.redact import Redactor
from gpuplane.store.records import AuditEntry


class AuditService(ServiceBase):
    def list_entries(self, principal: Principal, after: int | None, limit: int,
                     action: str | None = None) -> tuple[list[AuditEntry], int | None]:
        """Entries of the projects/organisations where the caller has ``audit.read``; global
        auditors and admins see every entry (infrastructure and login failures too)."""
        scope = principal.scope_ids("audit.read")
        with self.store.read() as tx:
            if scope is None:
                return tx.audit.list(None, None, after, limit, action)
            projects, orgs = scope
            if not projects and not orgs:
                raise Forbidden("reading the audit log needs an auditor or admin role")
            projects = projects | tx.projects.ids_in_orgs(orgs)
            entries, next_after = tx.audit.list(projects, orgs, after, limit, action)
            # a preemption's entry names its beneficiary: unnamed when in another tenant
            # (``hash`` still covers the stored entry; verify with the global export)
            redact = Redactor(tx, principal, "audit.read")
            return [dataclasses.replace(e, detail=redact.value(dict(e.detail)))
                    if e.detail else e for e in entries], next_after

    def export(self, principal: Principal) -> Iterator[str]:
        """The whole chain as JSON lines (verifiable offline). Global auditors/admins only."""
        if not principal.is_global("audit.read"):
            raise Forbidden("exporting the whole audit chain needs a global auditor or admin "
                            "role; scoped auditors can page through GET /v1/audit")
        after = None
        while True:
            with self.store.read() as tx:
                entries, after = tx.audit.list(None, None, after, 1000)
            yield from audit.export_jsonl(entries)
            if after is None:
                return

    def verify(self, principal: Principal) -> list[str]:
        """Verify the stored chain; the list of problems (empty: intact)."""
        lines = list(self.export(principal))
        import json

        return audit.verify_entries([json.loads(line) for line in lines])
