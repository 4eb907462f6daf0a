"""/v1/usage: accounting and chargeback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from gpuplane.api.deps import Svc, Who
from gpuplane.api.problems import responses
from gpuplane.api.schemas import UsageOut
from gpuplane.api.schemas_accounting import By, ChargebackFormat, ChargebackOut, Instant, Spread
from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.workloads import NAME_RE

router = APIRouter(prefix="/v1", tags=["accounting"], responses=responses(401, 403, 422))


@router.get("/usage", response_model=list[UsageOut], responses=responses(404))
def usage(svc: Svc, who: Who,
          project: Annotated[str | None, Query(pattern=NAME_RE, max_length=63)] = None,
          since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
          until: Annotated[float | None, Query(ge=0, le=1e11)] = None) -> list[dict]:
    """Resource-hours per project you can see (real and simulated apart) and current use."""
    return svc.usage.usage(who, project, since, until)


_CSV = {"content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON; or CSV with format=csv (grouped rows) or format=focus (FinOps "
                       "FOCUS-style rows)"}


@router.get("/usage/chargeback", response_model=ChargebackOut, responses={200: _CSV})
def chargeback(svc: Svc, who: Who,
               by: Annotated[By, Query(description="group rows by")] = "project",
               since: Annotated[Instant, Query(
                   description="ISO 8601 or epoch seconds; default: start of the UTC month")
               ] = None,
               until: Annotated[Instant, Query(
                   description="ISO 8601 or epoch seconds; default: now")] = None,
               spread: Annotated[Spread, Query(
                   description="move idle capacity onto the tenants of each host")] = "off",
               format: Annotated[ChargebackFormat, Query()] = "json",  # noqa: A002
               ) -> object:
    """Chargeback per org, project or user: GPU-hours by fraction (whole, MIG, shared), CPU
    and memory, their cost, spread idle, and GPU time lost to preemption (not charged). Global
    operators, admins and auditors also get each host's reconciliation: charged + idle + lost
    = capacity x time."""
    try:
        out = svc.usage.chargeback(who, by, since, until, spread, format)
    except InvalidInput as exc:  # the service names its arguments; here they are query fields
        raise InvalidInput(exc.detail, [FieldError(f"query.{e.loc}", e.msg)
                                        for e in exc.errors]) from None
    if isinstance(out, str):
        name = "focus" if format == "focus" else "chargeback"
        return Response(out, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="gpuplane-{name}.csv"'})
    return out
