"""/v1/workloads (+ cancel, events, pending, logs) and /v1/events."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from gpuplane.api.deps import Pg, Svc, Who, page_out
from gpuplane.api.follow import FollowLimits, FollowResponse, follow_chunks
from gpuplane.api.problems import responses
from gpuplane.api.schemas import EventOut, PageOut, PendingOut, WorkloadOut
from gpuplane.domain.workloads import NAME_RE, WorkloadSpec
from gpuplane.service.logs import LogChunk

router = APIRouter(prefix="/v1", tags=["workloads"], responses=responses(401, 403, 422))
Ref = Annotated[str, Path(pattern=NAME_RE, max_length=63,
                          description="Workload id (wl-...) or name.")]
ProjectQ = Annotated[str | None, Query(pattern=NAME_RE, max_length=63,
                                       description="Project, to choose among equal names.")]
PhaseQ = Literal["Pending", "Admitted", "Running", "Succeeded", "Failed", "Cancelled", "Lost"]


@router.post("/workloads", status_code=201, response_model=WorkloadOut,
             responses=responses(404, 409))
def submit_workload(body: WorkloadSpec, svc: Svc, who: Who) -> WorkloadOut:
    """Submit a workload. 201 means it is stored and will not be lost."""
    return WorkloadOut.of(svc.workloads.submit_workload(who, body))


@router.get("/workloads", response_model=PageOut[WorkloadOut], responses=responses(404))
def list_workloads(svc: Svc, who: Who, pg: Pg, project: ProjectQ = None,
                   phase: PhaseQ | None = None) -> dict:
    return page_out(svc.workloads.list_workloads(who, pg.after, pg.limit, project, phase),
                    WorkloadOut.of)


@router.get("/workloads/{workload}", response_model=WorkloadOut, responses=responses(404, 409))
def get_workload(workload: Ref, svc: Svc, who: Who, project: ProjectQ = None) -> WorkloadOut:
    return WorkloadOut.of(svc.workloads.get_workload(who, workload, project))


@router.post("/workloads/{workload}/cancel", response_model=WorkloadOut,
             responses=responses(404, 409))
def cancel_workload(workload: Ref, svc: Svc, who: Who, project: ProjectQ = None) -> WorkloadOut:
    """Stop a workload: pending tasks at once, running ones after their grace period."""
    return WorkloadOut.of(svc.workloads.cancel_workload(who, workload, project))


@router.delete("/workloads/{workload}", status_code=204, responses=responses(404, 409))
def delete_workload(workload: Ref, svc: Svc, who: Who, project: ProjectQ = None) -> Response:
    """Forget a finished workload (409 while it is active: cancel it first)."""
    svc.workloads.delete_workload(who, workload, project)
    return Response(status_code=204)


@router.get("/workloads/{workload}/events", response_model=PageOut[EventOut],
            responses=responses(404, 409))
def list_workload_events(workload: Ref, svc: Svc, who: Who, pg: Pg,
                         project: ProjectQ = None) -> dict:
    return page_out(svc.workloads.list_events(who, pg.after, pg.limit, workload, project),
                    EventOut.of)


@router.get("/workloads/{workload}/pending", response_model=PendingOut,
            responses=responses(404, 409))
def pending_reason(workload: Ref, svc: Svc, who: Who, project: ProjectQ = None) -> dict:
    """Why the workload waits: reason code and message, queue position, backoff."""
    return svc.workloads.pending_info(who, workload, project)


@router.get("/workloads/{workload}/logs", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Log bytes from `offset`; the header "
                                            "X-Gpuplane-Next-Offset says where to continue."},
                       **responses(404, 409, 429)})
def workload_logs(request: Request, workload: Ref, svc: Svc, who: Who, project: ProjectQ = None,
                  task: Annotated[int, Query(ge=0, le=100_000)] = 0,
                  offset: Annotated[int, Query(ge=0, le=2**53)] = 0,
                  limit: Annotated[int, Query(ge=1, le=1_048_576)] = 65_536,
                  follow: bool = False) -> Response:
    """A task's log (latest attempt). ``follow=true`` streams until the task finishes, no new
    bytes came for GPUPLANE_LOG_FOLLOW_IDLE_S, or GPUPLANE_LOG_FOLLOW_MAX_S passed; 429 when the
    caller (GPUPLANE_LOG_FOLLOW_PER_USER) or the server (GPUPLANE_LOG_FOLLOW_MAX) already
    serves as many follow streams as allowed."""
    wl, chunk = svc.workloads.read_logs(who, workload, task, offset, limit, project)
    available = chunk is not None
    data = chunk.data if chunk else b""
    next_offset = chunk.next_offset if chunk else offset
    complete = chunk.complete if chunk else wl.phase.terminal
    headers = {"X-Gpuplane-Next-Offset": str(next_offset),
               "X-Gpuplane-Log-Complete": str(complete).lower(),
               "X-Gpuplane-Log-Available": str(available).lower()}
    if not follow or complete or not available:
        return Response(data, media_type="text/plain; charset=utf-8", headers=headers)

    def read(pos: int) -> tuple[bool, LogChunk | None]:
        now_wl, more = svc.workloads.read_logs(who, workload, task, pos, limit, project)
        return now_wl.phase.terminal, more

    settings = request.app.state.settings
    limits = FollowLimits(settings.log_follow_idle_s, settings.log_follow_max_s)
    return FollowResponse(follow_chunks(request, data, next_offset, read, limits),
                          request.app.state.log_follow, who.user_id,
                          media_type="text/plain; charset=utf-8",
                          headers={"X-Gpuplane-Log-Available": "true"})


@router.get("/events", response_model=PageOut[EventOut], responses=responses(404))
def list_events(svc: Svc, who: Who, pg: Pg, project: ProjectQ = None) -> dict:
    """Events of the workloads you can see, oldest first."""
    return page_out(svc.workloads.list_events(who, pg.after, pg.limit, None, project),
                    EventOut.of)
