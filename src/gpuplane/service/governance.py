"""Use-cases of governance: policy documents and host attestation.

Policies (``residency``, ``attestation``, ``cost-model``) are global: any authenticated role
reads them; only a global admin sets them (``governance.write``), and each change is an audit
entry carrying the new document's hash. Attestation follows RFC 9334's roles: gpuplane (the
verifier and relying party) issues a nonce for a host; the host (the attester: its agent, or an
operator on its behalf) sends evidence bound to that nonce; the appraisal result, with its EAR
claims set and reasons, is stored and audited, and placement of confidential work follows it.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from gpuplane.domain.errors import FieldError, InvalidInput, NotFound
from gpuplane.governance import policies
from gpuplane.service.authz import Forbidden, Principal, require_global
from gpuplane.service.base import ServiceBase
from gpuplane.store.records import AttestationResult, PolicyDocument


def load_policy(tx, name: str) -> BaseModel | None:  # noqa: ANN001
    """The policy ``name`` in force, parsed; ``None`` when none was set. A stored document
    that does not parse raises: nothing is decided on a policy gpuplane cannot read."""
    doc = tx.policy_docs.get(name)
    return None if doc is None else policies.parse_policy(name, doc.data)


def residency_policy(tx) -> policies.ResidencyPolicy | None:  # noqa: ANN001
    return load_policy(tx, "residency")  # type: ignore[return-value]


def attestation_policy(tx) -> policies.AttestationPolicy:  # noqa: ANN001
    return load_policy(tx, "attestation") or policies.AttestationPolicy()  # type: ignore[return-value]


def _check_attestation(policy: policies.AttestationPolicy) -> None:
    """Roots and measurements the verifiers can use (InvalidInput naming the field)."""
    from gpuplane.governance.attestation.host import appraisal_policy

    for kind in ("sev-snp", "tdx", "nvidia-cc"):
        try:
            appraisal_policy(policy, kind)
        except ValueError as exc:
            raise InvalidInput("the attestation policy is not usable", [
                FieldError(str(exc).split(":", 1)[0], str(exc))]) from None


class GovernanceService(ServiceBase):
    # -- policies -------------------------------------------------------------------------------
    def set_policy(self, principal: Principal, name: str, data: Mapping[str, Any]
                   ) -> PolicyDocument:
        require_global(principal, "governance.write", f"the {name} policy")
        parsed = policies.parse_policy(name, data)
        if isinstance(parsed, policies.AttestationPolicy):
            _check_attestation(parsed)
        doc = parsed.model_dump(mode="json")
        digest = policies.document_hash(doc)
        with self.store.write() as tx:
            stored = tx.policy_docs.put(name, doc, digest, principal.name, self.now())
            tx.audit.set_policy_hash(policies.policy_set_hash(
                {d.name: d.hash for d in tx.policy_docs.list()}))
            self.audit(tx, principal.name, "policy.set", "policy", name,
                       detail={"version": stored.version, "hash": digest})
            return stored

    def get_policy(self, principal: Principal, name: str) -> PolicyDocument:
        if name not in policies.POLICY_MODELS:
            raise NotFound(f"no policy kind {name!r}; known: "
                           f"{', '.join(sorted(policies.POLICY_MODELS))}",
                           code="gpuplane.policy.not_found")
        with self.store.read() as tx:
            doc = tx.policy_docs.get(name)
        if doc is None:
            default = policies.POLICY_MODELS[name]
            try:
                data = default().model_dump(mode="json")
            except Exception:  # noqa: BLE001 - a policy without defaults has no document
                raise NotFound(f"the {name} policy is not set",
                               code="gpuplane.policy.not_found") from None
            return PolicyDocument(name, data, 0, policies.document_hash(data), "", 0.0)
        return doc

    def list_policies(self, principal: Principal) -> list[PolicyDocument]:
        with self.store.read() as tx:
            return tx.policy_docs.list()

    # -- attestation ----------------------------------------------------------------------------
    def challenge(self, principal: Principal, host: str) -> tuple[str, float]:
        """A fresh nonce (hex, 32 bytes) for ``host``'s next evidence, and when it expires."""
        require_global(principal, "inventory.write", f"host {host!r}")
        now = self.now()
        nonce = secrets.token_hex(32)
        with self.store.write() as tx:
            tx.hosts.get(host)
            ttl = attestation_policy(tx).nonce_ttl_s
            tx.attestation.add_challenge(nonce, host, now, now + ttl)
        return nonce, now + ttl

    def submit_evidence(self, principal: Principal, host: str, kind: str, nonce: str,
                        evidence_b64: str, certificates_b64: list[str],
                        collateral: str | None) -> AttestationResult:
        """Appraise ``host``'s evidence for a nonce issued to it; store, audit and return the
        result (a failing appraisal is a result too, with its reasons)."""
        from gpuplane.governance.attestation.host import appraise_for_host

        require_global(principal, "inventory.write", f"host {host!r}")
        try:
            evidence = base64.b64decode(evidence_b64, validate=True)
            certs = [base64.b64decode(c, validate=True) for c in certificates_b64]
        except ValueError:
            raise InvalidInput("evidence and certificates must be base64", [
                FieldError("evidence", "not base64")]) from None
        now = self.now()
        with self.store.write() as tx:
            tx.hosts.get(host)
            policy = attestation_policy(tx)
            fresh = tx.attestation.take_challenge(nonce, host, now)
            appraisal = appraise_for_host(kind, evidence, certs, collateral, nonce, policy,
                                          datetime.fromtimestamp(now, UTC), fresh)
            result = tx.attestation.add_result(
                host, kind, appraisal.passed, appraisal.status, appraisal.reasons,
                appraisal.claims, appraisal.ear, now, appraisal.expires_at)
            self.audit(tx, principal.name, "host.attest", "host", host,
                       outcome="ok" if appraisal.passed else "refused",
                       detail={"kind": kind, "status": appraisal.status,
                               "reasons": list(appraisal.reasons),
                               "expires_at": appraisal.expires_at, "ear": appraisal.ear})
            return result

    def attestation_results(self, principal: Principal, host: str) -> list[AttestationResult]:
        if not principal.may_anywhere("inventory.read"):
            raise Forbidden("you have no role that may read the inventory")
        with self.store.read() as tx:
            tx.hosts.get(host)
            return tx.attestation.history(host)


class WitnessService(ServiceBase):
    """This installation as a witness: its key is the audit key, its name its log origin."""

    STATE = "witness"

    def _identity(self, settings) -> tuple[Any, str]:  # noqa: ANN001
        from gpuplane.governance.checkpoints import default_origin, load_or_create_key

        key = load_or_create_key(settings.audit_key_path)
        with self.store.read() as tx:
            origin, _ = tx.checkpoints.identity()
        return key, origin or settings.audit_origin or default_origin(key)

    def verifier_key(self, settings) -> str:  # noqa: ANN001
        from gpuplane.governance import note

        key, name = self._identity(settings)
        return note.verifier_key(name, key.public_key(), note.ALG_COSIGNATURE_V1)

    def add_checkpoint(self, settings, body: str) -> str:  # noqa: ANN001
        from gpuplane.governance import note, witness

        key, name = self._identity(settings)
        old_size, proof, signed = witness.parse_add_checkpoint(body)
        with self.store.write() as tx:
            policy = load_policy(tx, "witness")
            logs = {w.origin: [note.parse_verifier_key(k) for k in w.keys]
                    for w in (policy.logs if policy is not None else [])}
            doc = tx.scheduler_state.get([self.STATE]).get(self.STATE)
            state = {o: witness.LogState(s["size"], bytes.fromhex(s["root"]))
                     for o, s in (doc.data if doc else {}).items()}
            line, state = witness.add_checkpoint(state, logs, signed, old_size, proof, key, name,
                                                 self.now())
            tx.scheduler_state.put(self.STATE, {o: {"size": s.size, "root": s.root_hash.hex()}
                                                for o, s in state.items()}, 0, self.now())
        return line
