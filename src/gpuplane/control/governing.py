"""Governance in the control loop (a ``ControlLoop`` mixin): residency and attestation before
each cycle, the fresh-appraisal gate before a confidential task starts, the re-check of
running confidential work when its host's appraisal expires, and signed audit checkpoints.

Residency and attestation are placement filters (DESIGN invariant 4): a workload the
residency policy confines gets the allowed jurisdiction's host label in its selector, and a
confidential one the ``gpuplane.io/confidential`` label, which the snapshot gives only to hosts
whose CPU and GPU appraisals pass and have not expired. Every placement (admission, requeue,
preemption, backfill) goes through that selector, so none can land elsewhere. A workload the
policy refuses outright waits with a pending reason naming the rule.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuplane.control.containment import one_line
from gpuplane.control.execution import REASON_PREEMPTED
from gpuplane.domain.workloads import PendingReason, Phase, Workload
from gpuplane.governance import policies
from gpuplane.service.governance import attestation_policy, residency_policy

log = logging.getLogger("gpuplane.control")


@dataclass
class GovernanceView:
    """What the policies say at one instant (read with the cycle's snapshot)."""

    residency: policies.ResidencyPolicy | None
    attestation: policies.AttestationPolicy
    classifications: Mapping[str, str | None]  # project -> classification
    attested: set[str] = field(default_factory=set)  # hosts a confidential task may use now
    fresh: set[str] = field(default_factory=set)  # ... and start on now

    def allowed(self, w: Workload) -> tuple[tuple[str, ...] | None, PendingReason | None]:
        """The jurisdictions ``w`` may be placed in (None = anywhere), or why it waits."""
        r = w.spec.residency
        d = policies.residency(r.jurisdictions,
                               r.classification or self.classifications.get(w.project),
                               self.residency)
        if d.denied:
            return None, PendingReason(d.code, d.message, {"rule": d.rule})
        if w.spec.confidential and not self.attested:
            return None, PendingReason(
                "attestation.no_attested_host",
                "confidential: no host has a passing, unexpired CPU and GPU appraisal",
                {"policy": "attestation"})
        return d.jurisdictions, None


def governance_view(tx: Any, hosts: Sequence[Any], now: float) -> GovernanceView:
    att = attestation_policy(tx)
    results = tx.attestation.latest()
    names = [h.name for h in hosts]
    gpu_hosts = [h.name for h in hosts if h.gpus]
    return GovernanceView(
        residency=residency_policy(tx), attestation=att,
        classifications={p.name: p.classification for p in tx.projects.list().items},
        attested=policies.attested_hosts(results, gpu_hosts, names, att, now),
        fresh=policies.attested_hosts(results, gpu_hosts, names, att, now,
                                      max_age_s=att.fresh_s))


@dataclass
class AuditSigning:
    """How the leader signs audit checkpoints: the key (from a file outside the database), the
    configured origin, the interval, and the optional anchors (witnesses that cosign, an
    RFC 3161 authority that timestamps; ``http`` is the client they are reached with)."""

    key: Any
    origin: str | None = None
    every_s: float = 300.0
    witnesses: Sequence[Any] = ()
    tsa_url: str | None = None
    http: Any = None
    #: witness name -> the log size it last cosigned (a 409 corrects a wrong guess)
    witnessed: dict[str, int] = field(default_factory=dict)
    last: float = float("-inf")


class Governing:
    """Mixin of ``ControlLoop`` (uses its store, clock, ``_fenced``, ``_active``, ``_contain``)."""

    audit: AuditSigning | None = None

    def launch_refusals(self, tx: Any, candidates: Iterable[tuple[Workload, Any]],
                        now: float) -> dict[int, str]:
        """Task id -> why, for confidential tasks whose host has no fresh passing appraisal:
        they are not started (DESIGN invariant 4) but put back in the queue."""
        confidential = [(w, t) for w, t in candidates if w.spec.confidential]
        if not confidential:
            return {}
        view = governance_view(tx, tx.hosts.list_all(), now)
        return {t.id: (f"host {t.placement.host} has no passing appraisal younger than "
                       f"{view.attestation.fresh_s:g} s")
                for w, t in confidential if t.placement.host not in view.fresh}

    def refuse_starts(self, refusals: Mapping[int, str], now: float,
                      reason: str = "AttestationStale", code: str = "attestation.stale") -> None:
        """Put these admitted, unstarted tasks back in the queue (``reason``), each audited as
        ``task.start_refused`` with ``code`` and why."""
        from gpuplane.governance import audit
        from gpuplane.service import lifecycle

        with self._fenced().write() as tx:
            for task_id, why in refusals.items():
                t = tx.tasks.get(task_id)
                if t.phase != Phase.ADMITTED or t.handle:
                    continue
                lifecycle.requeue_task(tx, t.id, t.generation, now, reason, why)
                w = tx.workloads.get(t.workload_id)
                p = tx.projects.get(w.project)
                audit.record(tx, at=now, actor="scheduler", action="task.start_refused",
                             object_kind="task", object_id=f"{w.id}/{t.index}",
                             project_id=p.id, org_id=p.org_id, outcome="refused",
                             detail={"reason": code, "message": why})

    def recheck_attestation(self, report: Any) -> None:
        """Running confidential tasks on hosts whose appraisal expired or failed: evicted
        (signalled and requeued through the preemption protocol) or flagged once, as the
        attestation policy says."""
        from gpuplane.governance import audit

        now = self.clock()
        with self.store.read() as tx:
            active, hosts = self._active(tx)
            running = [(w, t) for w in active if w.spec.confidential
                       for t in w.tasks if t.phase == Phase.RUNNING and t.placement is not None
                       and t.reason != REASON_PREEMPTED]
            if not running:
                return
            view = governance_view(tx, hosts, now)
        lapsed = [(w, t) for w, t in running if t.placement.host not in view.attested
                  and (t.id, t.attempt) not in self._flagged]
        if not lapsed:
            return
        evict = view.attestation.on_expiry == "evict"
        with self._fenced().write() as tx:
            for w, t in lapsed:
                why = (f"host {t.placement.host}'s attestation expired or failed; the "
                       f"policy says {view.attestation.on_expiry}")
                cur = tx.tasks.get(t.id)
                if cur.phase != Phase.RUNNING or cur.attempt != t.attempt:
                    continue  # it ended or restarted since it was read: nothing to do
                p = tx.projects.get(w.project)
                if evict:
                    tx.tasks.update(t.id, cur.generation, reason=REASON_PREEMPTED, message=why,
                                    preemption={"beneficiary": "", "beneficiary_name": "",
                                                "code": "attestation.expired", "reason": why,
                                                "grace_s": self.cycle_options.grace_s,
                                                "decided_at": now})
                tx.events.add(now, "Warning", "AttestationExpired", f"task {t.index}: {why}",
                              workload_uid=w.id, task_index=t.index)
                audit.record(tx, at=now, actor="scheduler", action="task.attestation_expired",
                             object_kind="task", object_id=f"{w.id}/{t.index}",
                             project_id=p.id, org_id=p.org_id, outcome="evict" if evict else
                             "flag", detail={"host": t.placement.host, "message": why})
        self._flagged.update((t.id, t.attempt) for _, t in lapsed)

    def sign_checkpoint(self, report: Any = None, reason: str = "interval") -> None:
        """Sign a checkpoint of the audit log when due (and the log grew), then anchor it."""
        a, now = self.audit, self.clock()
        if a is None or (reason == "interval" and now - a.last < a.every_s):
            return
        from gpuplane.governance import checkpoints   # lazy: cryptography, only when signing

        with self._fenced().write() as tx:
            notary = checkpoints.notary_for(tx, a.key, a.origin)
            cp = checkpoints.make_checkpoint(tx, notary, reason, now)
        a.last = now
        if cp is None:
            return
        log.info("signed audit checkpoint: %d entries, root %s", cp.size, cp.root_hash[:16])
        if a.witnesses or a.tsa_url:
            self._anchor(a, cp)

    def _anchor(self, a: AuditSigning, cp: Any) -> None:
        """Witness cosignatures and a timestamp for ``cp``, stored with it (network calls
        outside any transaction; a failing anchor is logged, the checkpoint stands)."""
        import httpx

        from gpuplane.governance import anchoring, checkpoints, merkle

        def proof_from(old: int) -> list[bytes]:
            with self.store.read() as tx:
                return [bytes.fromhex(h) for h in checkpoints.consistency(tx, old, cp.size)] \
                    if 0 < old < cp.size else []

        signed, token = cp.note, None
        client = a.http or httpx.Client()
        try:
            for w in a.witnesses:
                try:
                    line, size = anchoring.cosign_with(w, cp.note, a.witnessed.get(w.name, 0),
                                                       proof_from, client)
                except (httpx.HTTPError, merkle.ProofError, ValueError) as exc:
                    log.warning("witness %s: %s", w.name, one_line(exc))
                    continue
                a.witnessed[w.name] = size
                if line:
                    signed += line
            if a.tsa_url:
                token = anchoring.timestamp(cp.note, a.tsa_url, client)
        finally:
            if a.http is None:
                client.close()
        if signed != cp.note or token:
            with self._fenced().write() as tx:
                tx.checkpoints.set_note(cp.id, signed, token)

    def final_checkpoint(self) -> None:
        """A checkpoint at a graceful shutdown, so the log's tail is signed."""
        try:
            self.sign_checkpoint(reason="shutdown")
        except Exception as exc:  # noqa: BLE001 - the next leader signs the next one
            log.warning("no audit checkpoint at shutdown: %s", one_line(exc))


def audit_signing(settings: Any) -> AuditSigning:
    """The leader's ``AuditSigning`` from ``Settings`` (key file created 0600 if absent)."""
    from gpuplane.domain.errors import FieldError, InvalidInput
    from gpuplane.governance import anchoring
    from gpuplane.governance.checkpoints import load_or_create_key

    try:
        witnesses = anchoring.parse_witnesses(settings.audit_witnesses)
    except ValueError as exc:
        raise InvalidInput("GPUPLANE_AUDIT_WITNESSES is not valid", [
            FieldError("audit_witnesses", str(exc))]) from None
    return AuditSigning(load_or_create_key(settings.audit_key_path), settings.audit_origin,
                        settings.audit_checkpoint_interval_s, witnesses, settings.audit_tsa_url)
