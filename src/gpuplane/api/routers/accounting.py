"""/v1/usage and /v1/audit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from gpuplane.api.deps import Pg, Svc, Who, encode_cursor
from gpuplane.api.problems import responses
from gpuplane.api.schemas import AuditEntryOut, AuditVerifyOut, PageOut, UsageOut
from gpuplane.domain.validation import PRINTABLE_RE
from gpuplane.domain.workloads import NAME_RE

router = APIRouter(prefix="/v1", tags=["accounting"], responses=responses(401, 403, 422))


@router.get("/usage", response_model=list[UsageOut], responses=responses(404))
def usage(svc: Svc, who: Who,
          project: Annotated[str | None, Query(pattern=NAME_RE, max_length=63)] = None,
          since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
          until: Annotated[float | None, Query(ge=0, le=1e11)] = None) -> list[dict]:
    """Resource-hours per project you can see (real and simulated apart) and current use."""
    return svc.usage.usage(who, project, since, until)


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
    """The whole chain as JSON lines, for ``gpuplane audit verify FILE`` (global roles only)."""
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
