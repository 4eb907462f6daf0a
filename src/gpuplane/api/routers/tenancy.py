"""/v1/organisations, /v1/projects, /v1/users, /v1/role-bindings, /v1/tokens, /v1/whoami."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from gpuplane.api.deps import Pg, Svc, Who, page_out
from gpuplane.api.problems import responses
from gpuplane.api.schemas import (OrganisationOut, PageOut, ProjectOut, RoleBindingOut,
                                  TokenCreatedOut, TokenOut, UserOut)
from gpuplane.domain.workloads import NAME_RE
from gpuplane.service.specs import (OrganisationSpec, ProjectSpec, ProjectUpdate, RoleBindingSpec,
                                    TokenSpec, UserSpec)

router = APIRouter(prefix="/v1", tags=["tenancy"], responses=responses(401, 403, 422))
Name = Annotated[str, Path(pattern=NAME_RE, max_length=63)]
Id = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/whoami", response_model=UserOut)
def whoami(svc: Svc, who: Who) -> UserOut:
    return UserOut.of(svc.tenancy.whoami(who))


@router.post("/organisations", status_code=201, response_model=OrganisationOut,
             responses=responses(409))
def create_organisation(body: OrganisationSpec, svc: Svc, who: Who) -> OrganisationOut:
    return OrganisationOut.of(svc.tenancy.create_organisation(who, body))


@router.get("/organisations", response_model=PageOut[OrganisationOut])
def list_organisations(svc: Svc, who: Who, pg: Pg) -> dict:
    return page_out(svc.tenancy.list_organisations(who, pg.after, pg.limit), OrganisationOut.of)


@router.get("/organisations/{organisation}", response_model=OrganisationOut,
            responses=responses(404))
def get_organisation(organisation: Name, svc: Svc, who: Who) -> OrganisationOut:
    return OrganisationOut.of(svc.tenancy.get_organisation(who, organisation))


@router.delete("/organisations/{organisation}", status_code=204, responses=responses(404, 409))
def delete_organisation(organisation: Name, svc: Svc, who: Who) -> Response:
    svc.tenancy.delete_organisation(who, organisation)
    return Response(status_code=204)


@router.post("/projects", status_code=201, response_model=ProjectOut, responses=responses(404, 409))
def create_project(body: ProjectSpec, svc: Svc, who: Who) -> ProjectOut:
    return ProjectOut.of(svc.tenancy.create_project(who, body))


@router.get("/projects", response_model=PageOut[ProjectOut], responses=responses(404))
def list_projects(svc: Svc, who: Who, pg: Pg,
                  organisation: Annotated[str | None, Query(pattern=NAME_RE, max_length=63)] = None
                  ) -> dict:
    return page_out(svc.tenancy.list_projects(who, pg.after, pg.limit, organisation),
                    ProjectOut.of)


@router.get("/projects/{project}", response_model=ProjectOut, responses=responses(404))
def get_project(project: Name, svc: Svc, who: Who) -> ProjectOut:
    return ProjectOut.of(svc.tenancy.get_project(who, project))


@router.patch("/projects/{project}", response_model=ProjectOut, responses=responses(404, 409))
def update_project(project: Name, body: ProjectUpdate, svc: Svc, who: Who) -> ProjectOut:
    return ProjectOut.of(svc.tenancy.update_project(who, project, body))


@router.delete("/projects/{project}", status_code=204, responses=responses(404, 409))
def delete_project(project: Name, svc: Svc, who: Who) -> Response:
    svc.tenancy.delete_project(who, project)
    return Response(status_code=204)


@router.post("/users", status_code=201, response_model=UserOut, responses=responses(404, 409))
def create_user(body: UserSpec, svc: Svc, who: Who) -> UserOut:
    return UserOut.of(svc.tenancy.create_user(who, body))


@router.get("/users", response_model=PageOut[UserOut])
def list_users(svc: Svc, who: Who, pg: Pg) -> dict:
    return page_out(svc.tenancy.list_users(who, pg.after, pg.limit), UserOut.of)


@router.get("/users/{user}", response_model=UserOut, responses=responses(404))
def get_user(user: Name, svc: Svc, who: Who) -> UserOut:
    return UserOut.of(svc.tenancy.get_user(who, user))


@router.delete("/users/{user}", status_code=204, responses=responses(404))
def delete_user(user: Name, svc: Svc, who: Who) -> Response:
    svc.tenancy.delete_user(who, user)
    return Response(status_code=204)


@router.post("/role-bindings", status_code=201, response_model=RoleBindingOut,
             responses=responses(404, 409))
def grant_role(body: RoleBindingSpec, svc: Svc, who: Who) -> RoleBindingOut:
    return RoleBindingOut.of(svc.tenancy.grant_role(who, body))


@router.delete("/role-bindings/{binding_id}", status_code=204, responses=responses(404))
def revoke_role(binding_id: Id, svc: Svc, who: Who) -> Response:
    svc.tenancy.revoke_role(who, binding_id)
    return Response(status_code=204)


@router.post("/tokens", status_code=201, response_model=TokenCreatedOut,
             responses=responses(404))
def create_token(body: TokenSpec, svc: Svc, who: Who) -> TokenCreatedOut:
    """Issue an API token (for yourself, or as an admin for a user you manage). The clear
    token is in this answer only."""
    rec, token = svc.tenancy.create_token(who, body)
    return TokenCreatedOut(**TokenOut.of(rec).model_dump(), token=token)


@router.get("/tokens", response_model=PageOut[TokenOut])
def list_tokens(svc: Svc, who: Who, pg: Pg) -> dict:
    return page_out(svc.tenancy.list_tokens(who, pg.after, pg.limit), TokenOut.of)


@router.get("/tokens/{token_id}", response_model=TokenOut, responses=responses(404))
def get_token(token_id: Id, svc: Svc, who: Who) -> TokenOut:
    return TokenOut.of(svc.tenancy.get_token(who, token_id))


@router.delete("/tokens/{token_id}", status_code=204, responses=responses(404))
def revoke_token(token_id: Id, svc: Svc, who: Who) -> Response:
    svc.tenancy.revoke_token(who, token_id)
    return Response(status_code=204)
