"""/v1/quotas, /v1/priority-classes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from gpuplane.api.deps import Pg, Svc, Who, page_out
from gpuplane.api.problems import responses
from gpuplane.api.schemas import PageOut, PriorityClassOut, QuotaOut
from gpuplane.domain.workloads import NAME_RE
from gpuplane.service.specs import PriorityClassSpec, QuotaSpec

router = APIRouter(prefix="/v1", tags=["policy"], responses=responses(401, 403, 422))
Name = Annotated[str, Path(pattern=NAME_RE, max_length=63)]
Id = Annotated[int, Path(ge=1, le=2**62)]


@router.put("/quotas", response_model=QuotaOut, responses=responses(404, 409))
def set_quota(body: QuotaSpec, svc: Svc, who: Who) -> QuotaOut:
    """Create or replace the quota of (project, resource, flavor). Pass ``generation`` to fail
    with 409 if someone else changed it since you read it."""
    return QuotaOut.of(svc.policy.set_quota(who, body))


@router.get("/quotas", response_model=PageOut[QuotaOut], responses=responses(404))
def list_quotas(svc: Svc, who: Who, pg: Pg,
                project: Annotated[str | None, Query(pattern=NAME_RE, max_length=63)] = None
                ) -> dict:
    return page_out(svc.policy.list_quotas(who, pg.after, pg.limit, project), QuotaOut.of)


@router.get("/quotas/{quota_id}", response_model=QuotaOut, responses=responses(404))
def get_quota(quota_id: Id, svc: Svc, who: Who) -> QuotaOut:
    return QuotaOut.of(svc.policy.get_quota(who, quota_id))


@router.delete("/quotas/{quota_id}", status_code=204, responses=responses(404))
def delete_quota(quota_id: Id, svc: Svc, who: Who) -> Response:
    svc.policy.delete_quota(who, quota_id)
    return Response(status_code=204)


@router.post("/priority-classes", status_code=201, response_model=PriorityClassOut,
             responses=responses(409))
def create_priority_class(body: PriorityClassSpec, svc: Svc, who: Who) -> PriorityClassOut:
    return PriorityClassOut.of(svc.policy.create_priority_class(who, body))


@router.get("/priority-classes", response_model=PageOut[PriorityClassOut])
def list_priority_classes(svc: Svc, who: Who, pg: Pg) -> dict:
    return page_out(svc.policy.list_priority_classes(who, pg.after, pg.limit),
                    PriorityClassOut.of)


@router.get("/priority-classes/{priority_class}", response_model=PriorityClassOut,
            responses=responses(404))
def get_priority_class(priority_class: Name, svc: Svc, who: Who) -> PriorityClassOut:
    return PriorityClassOut.of(svc.policy.get_priority_class(who, priority_class))


@router.put("/priority-classes/{priority_class}", response_model=PriorityClassOut,
            responses=responses(404))
def update_priority_class(priority_class: Name, body: PriorityClassSpec, svc: Svc, who: Who
                          ) -> PriorityClassOut:
    return PriorityClassOut.of(svc.policy.update_priority_class(who, priority_class, body))


@router.delete("/priority-classes/{priority_class}", status_code=204, responses=responses(404))
def delete_priority_class(priority_class: Name, svc: Svc, who: Who) -> Response:
    svc.policy.delete_priority_class(who, priority_class)
    return Response(status_code=204)
