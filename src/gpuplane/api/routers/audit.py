"""/v1/audit: the audit log, its export, checkpoints and proofs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from gpuplane.api.deps import Pg, Svc, Who, encode_cursor
from gpuplane.api.problems import responses
from gpuplane.api.schemas import AuditEntryOut, AuditVerifyOut, PageOut
from gpuplane.domain.validation import PRINTABLE_RE
from gpuplane.store import records as r

router = APIRouter(prefix="/v1", tags=["audit"], responses=responses(401, 403, 422))


@router.get("/audit", response_model=PageOut[AuditEntryOut])
def list_audit(svc: Svc, who: Who, pg: Pg,
               action: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE_RE)] = None,
               ) -> dict:
    """Audit entries in your scope (auditors and admins), in chain order."""
    entries, after = svc.audit.list_entries(who, pg.after, pg.limit, action)
    return {"items": [AuditEntryOut.of(e) for e in entries], "next_cursor": encode_cursor(after)}


@router.get("/audit/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                             "description": "The whole chain, one JSON entry per line."}})
def export_audit(svc: Svc, who: Who) -> StreamingResponse:
    """The whole log as JSON lines with its signed checkpoints, for ``gpuplane audit verify
    FILE`` (global auditors and admins)."""
    lines = svc.audit.export(who)
    first = next(lines, "")  # raises Forbidden before the response starts
    def body():  # noqa: ANN202
        if first:
            yield first
        yield from lines
    return StreamingResponse(body(), media_type="application/x-ndjson")


@router.get("/audit/verify", response_model=AuditVerifyOut)
def verify_audit(svc: Svc, who: Who) -> AuditVerifyOut:
    problems = svc.audit.verify(who)
    return AuditVerifyOut(intact=not problems, problems=problems)


class AuditKeyOut(BaseModel):
    origin: str = Field(description="The log's name in its checkpoints.")
    public_keys: list[str] = Field(description="Ed25519 public keys (PEM) that signed its "
                                               "checkpoints, oldest first; the last signs now.")


class CheckpointOut(BaseModel):
    size: int
    root_hash: str
    note: str = Field(description="The signed checkpoint (C2SP tlog-checkpoint, signed note).")
    reason: str
    timestamp_token: str | None = Field(description="RFC 3161 token (base64), if anchored.")
    created_at: float

    @classmethod
    def of(cls, c: r.Checkpoint) -> CheckpointOut:
        return cls(size=c.size, root_hash=c.root_hash, note=c.note, reason=c.reason,
                   timestamp_token=c.timestamp_token, created_at=c.created_at)


class InclusionOut(BaseModel):
    seq: int
    size: int
    leaf_hash: str
    proof: list[str] = Field(description="RFC 9162 audit path, hex, leaf to root.")


class ConsistencyOut(BaseModel):
    old_size: int
    new_size: int
    proof: list[str] = Field(description="RFC 9162 consistency proof, hex.")


Size = Annotated[int, Query(ge=0, le=2**53)]


@router.get("/audit/key", response_model=AuditKeyOut)
def audit_key(svc: Svc, who: Who) -> AuditKeyOut:
    """The public keys that verify this log's checkpoints (keep one for offline checks)."""
    origin, keys = svc.audit.identity(who)
    return AuditKeyOut(origin=origin, public_keys=keys)


@router.get("/audit/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(svc: Svc, who: Who) -> list[CheckpointOut]:
    return [CheckpointOut.of(c) for c in svc.audit.checkpoints(who)]


@router.get("/audit/checkpoint", response_model=CheckpointOut, responses=responses(404))
def latest_checkpoint(svc: Svc, who: Who) -> CheckpointOut:
    """The latest signed checkpoint; save its ``note`` to verify later exports against."""
    return CheckpointOut.of(svc.audit.latest_checkpoint(who))


@router.get("/audit/proof/inclusion", response_model=InclusionOut, responses=responses(404))
def inclusion_proof(svc: Svc, who: Who, seq: Annotated[int, Query(ge=1, le=2**53)],
                    size: Size | None = None) -> InclusionOut:
    """Proof that entry ``seq`` is in the tree of ``size`` entries (default: the latest
    checkpoint's size)."""
    leaf, size, proof = svc.audit.inclusion(who, seq, size)
    return InclusionOut(seq=seq, size=size, leaf_hash=leaf, proof=proof)


@router.get("/audit/proof/consistency", response_model=ConsistencyOut)
def consistency_proof(svc: Svc, who: Who, old: Size, new: Size) -> ConsistencyOut:
    """Proof that the tree of ``new`` entries extends the tree of ``old`` entries."""
    return ConsistencyOut(old_size=old, new_size=new,
                          proof=svc.audit.consistency(who, old, new))
