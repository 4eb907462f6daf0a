"""/v1/sites, /v1/hosts, /v1/gpu-models: shared infrastructure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from gpuplane.api.deps import Pg, Svc, Who, page_out
from gpuplane.api.problems import responses
from gpuplane.api.schemas import GpuListItemOut, HostOut, PageOut, SiteOut
from gpuplane.domain.validation import PRINTABLE_RE
from gpuplane.domain.workloads import NAME_RE
from gpuplane.service.specs import HOST_NAME_RE, HostSpec, HostStateSpec, SiteSpec

router = APIRouter(prefix="/v1", tags=["inventory"], responses=responses(401, 403, 422))
SiteName = Annotated[str, Path(pattern=NAME_RE, max_length=63)]
HostName = Annotated[str, Path(pattern=HOST_NAME_RE, max_length=253)]


@router.post("/sites", status_code=201, response_model=SiteOut, responses=responses(409))
def create_site(body: SiteSpec, svc: Svc, who: Who) -> SiteOut:
    return SiteOut.of(svc.inventory.create_site(who, body))


@router.get("/sites", response_model=PageOut[SiteOut])
def list_sites(svc: Svc, who: Who, pg: Pg) -> dict:
    return page_out(svc.inventory.list_sites(who, pg.after, pg.limit), SiteOut.of)


@router.get("/sites/{site}", response_model=SiteOut, responses=responses(404))
def get_site(site: SiteName, svc: Svc, who: Who) -> SiteOut:
    return SiteOut.of(svc.inventory.get_site(who, site))


@router.delete("/sites/{site}", status_code=204, responses=responses(404, 409))
def delete_site(site: SiteName, svc: Svc, who: Who) -> Response:
    svc.inventory.delete_site(who, site)
    return Response(status_code=204)


@router.post("/hosts", status_code=201, response_model=HostOut, responses=responses(404, 409))
def register_host(body: HostSpec, svc: Svc, who: Who) -> HostOut:
    return HostOut.of(svc.inventory.register_host(who, body))


@router.get("/hosts", response_model=PageOut[HostOut])
def list_hosts(svc: Svc, who: Who, pg: Pg,
               site: Annotated[str | None, Query(pattern=NAME_RE, max_length=63)] = None) -> dict:
    return page_out(svc.inventory.list_hosts(who, pg.after, pg.limit, site), HostOut.of)


@router.get("/hosts/{host}", response_model=HostOut, responses=responses(404))
def get_host(host: HostName, svc: Svc, who: Who) -> HostOut:
    return HostOut.of(svc.inventory.get_host(who, host))


@router.put("/hosts/{host}", response_model=HostOut, responses=responses(404, 409))
def update_host(host: HostName, body: HostSpec, svc: Svc, who: Who,
                generation: Annotated[int | None, Query(ge=1, le=2**31)] = None) -> HostOut:
    """Replace a host's capacity, GPUs, labels and taints (its site, driver and state stay).
    ``?generation=`` fails with 409 if the host changed since you read it."""
    return HostOut.of(svc.inventory.update_host(who, host, body, generation))


@router.put("/hosts/{host}/state", response_model=HostOut, responses=responses(404, 409))
def set_host_state(host: HostName, body: HostStateSpec, svc: Svc, who: Who) -> HostOut:
    """Cordon, drain, mark down, or make a host ready again."""
    return HostOut.of(svc.inventory.set_host_state(who, host, body))


@router.post("/hosts/{host}/cordon", response_model=HostOut, responses=responses(404, 409))
def cordon_host(host: HostName, svc: Svc, who: Who) -> HostOut:
    return HostOut.of(svc.inventory.set_host_state(who, host, HostStateSpec(state="cordoned")))


@router.post("/hosts/{host}/drain", response_model=HostOut, responses=responses(404, 409))
def drain_host(host: HostName, svc: Svc, who: Who) -> HostOut:
    return HostOut.of(svc.inventory.set_host_state(who, host, HostStateSpec(state="draining")))


@router.post("/hosts/{host}/uncordon", response_model=HostOut, responses=responses(404, 409))
def uncordon_host(host: HostName, svc: Svc, who: Who) -> HostOut:
    return HostOut.of(svc.inventory.set_host_state(who, host, HostStateSpec(state="ready")))


@router.delete("/hosts/{host}", status_code=204, responses=responses(404, 409))
def delete_host(host: HostName, svc: Svc, who: Who) -> Response:
    svc.inventory.delete_host(who, host)
    return Response(status_code=204)


@router.get("/gpus", response_model=PageOut[GpuListItemOut])
def list_gpus(svc: Svc, who: Who, pg: Pg,
              model: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE_RE)] = None,
              ) -> dict:
    """Every GPU with its host and how much of it is allocated (paged by host)."""
    return page_out(svc.inventory.list_gpus(who, pg.after, pg.limit, model), GpuListItemOut.of)


@router.get("/gpu-models", response_model=list[str])
def list_gpu_models(svc: Svc, who: Who) -> list[str]:
    """GPU models present in the inventory (what ``gpu_models`` may name)."""
    return svc.inventory.gpu_models(who)
