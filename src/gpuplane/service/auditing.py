"""Reading the audit log: scoped for auditors and admins; full export, verification and
consistency proofs for global ones; checkpoints and the public key for everyone signed in."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from gpuplane.domain.errors import FieldError, InvalidInput, NotFound
from gpuplane.governance import audit
from gpuplane.service.authz import Forbidden, Principal
from gpuplane.service.base import ServiceBase
from gpuplane.service.redact import Redactor
from gpuplane.store.records import AuditEntry, Checkpoint


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

    def _global(self, principal: Principal, what: str) -> None:
        if not principal.is_global("audit.read"):
            raise Forbidden(f"{what} needs a global auditor or admin role; scoped auditors "
                            "can page through GET /v1/audit")

    def export(self, principal: Principal) -> Iterator[str]:
        """The whole log as JSON lines with its signed checkpoints (verifiable offline with
        ``gpuplane audit verify``), as of one consistent read. Global auditors/admins only."""
        self._global(principal, "exporting the whole audit log")
        with self.store.read() as tx:
            entries, _ = tx.audit.list(None, None, None, 10**12)
            checkpoints = tx.checkpoints.list()
        yield from audit.export_jsonl(entries, checkpoints)

    def verify(self, principal: Principal) -> list[str]:
        """Verify the stored log against its own signed checkpoints with this installation's
        public key (the problems; empty: it holds). An auditor verifies an export offline."""
        from gpuplane.governance import note

        self._global(principal, "verifying the audit log")
        log = audit.parse_log(self.export(principal))
        with self.store.read() as tx:
            origin, keys = tx.checkpoints.identity()
        verifiers = [note.verifier_from_pem(origin, pem.encode()) for pem in keys]
        return audit.verify_log(log, verifiers).problems

    # -- checkpoints and proofs -------------------------------------------------------------
    def identity(self, principal: Principal) -> tuple[str, list[str]]:
        """(origin, public keys as PEM, oldest first): what verifies this log's checkpoints."""
        with self.store.read() as tx:
            return tx.checkpoints.identity()

    def checkpoints(self, principal: Principal) -> list[Checkpoint]:
        with self.store.read() as tx:
            return tx.checkpoints.list()

    def latest_checkpoint(self, principal: Principal) -> Checkpoint:
        with self.store.read() as tx:
            cp = tx.checkpoints.latest()
        if cp is None:
            raise NotFound("no checkpoint has been signed yet (the scheduler leader signs one "
                           "every audit_checkpoint_interval_s)", code="gpuplane.audit.no_checkpoint")
        return cp

    def inclusion(self, principal: Principal, seq: int, size: int | None) -> tuple[str, int, list[str]]:
        """(leaf hash, tree size, audit path) of entry ``seq``; ``size`` defaults to the latest
        checkpoint's. Scoped auditors get proofs for entries in their scope only."""
        from gpuplane.governance import checkpoints

        if not principal.may_anywhere("audit.read"):
            raise Forbidden("an inclusion proof needs an auditor or admin role")
        with self.store.read() as tx:
            entries, _ = tx.audit.list(None, None, seq - 1, 1)
            if not entries or entries[0].seq != seq:
                raise NotFound(f"no audit entry {seq}", code="gpuplane.audit.not_found")
            self._may_read(tx, principal, entries[0])
            if size is None:
                cp = tx.checkpoints.latest()
                size = cp.size if cp is not None and cp.size >= seq else tx.audit.size()
            try:
                leaf, proof = checkpoints.inclusion(tx, seq, size)
            except ValueError as exc:
                raise InvalidInput(str(exc), [FieldError("size", str(exc))]) from None
        return leaf, size, proof

    def consistency(self, principal: Principal, old: int, new: int) -> list[str]:
        from gpuplane.governance import checkpoints

        if not principal.may_anywhere("audit.read"):  # hashes only: no entry's content
            raise Forbidden("a consistency proof needs an auditor or admin role")
        with self.store.read() as tx:
            try:
                return checkpoints.consistency(tx, old, new)
            except ValueError as exc:
                raise InvalidInput(str(exc), [FieldError("new", str(exc))]) from None

    @staticmethod
    def _may_read(tx, principal: Principal, entry: AuditEntry) -> None:  # noqa: ANN001
        scope = principal.scope_ids("audit.read")
        if scope is None:
            return
        projects, orgs = scope
        if entry.project_id in (projects | tx.projects.ids_in_orgs(orgs)) or entry.org_id in orgs:
            return
        raise NotFound(f"no audit entry {entry.seq}", code="gpuplane.audit.not_found")
