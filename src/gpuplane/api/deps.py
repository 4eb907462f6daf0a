"""Request dependencies: the services, the authenticated principal, pagination."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.service import Principal, Services
from gpuplane.store.paging import Page

bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer gpp_...`")


def services(request: Request) -> Services:
    return request.app.state.services


def principal(request: Request,
              creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """Authenticate the bearer token (401 problem+json if missing or invalid)."""
    svc: Services = request.app.state.services
    return svc.auth.authenticate(creds.credentials if creds else None)


def encode_cursor(after: int | None) -> str | None:
    if after is None:
        return None
    return base64.urlsafe_b64encode(f"v1:{after}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, value = raw.split(":", 1)
        if version != "v1":
            raise ValueError
        after = int(value)
        if after < 0:
            raise ValueError
        return after
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("invalid cursor", [FieldError(
            "query.cursor", "not a cursor this API returned; start again without it")]) from None


@dataclass(frozen=True)
class Paging:
    after: int | None
    limit: int


def paging(request: Request,
           limit: Annotated[int | None, Query(ge=1, le=10_000, description="Items per page.")] = None,
           cursor: Annotated[str | None, Query(max_length=64,
                                               description="next_cursor of the previous page.")] = None,
           ) -> Paging:
    settings = request.app.state.settings
    size = settings.page_size_default if limit is None else min(limit, settings.page_size_max)
    return Paging(decode_cursor(cursor), size)


def page_out(page: Page, convert: Callable) -> dict:
    return {"items": [convert(i) for i in page.items], "next_cursor": encode_cursor(page.next_after)}


Svc = Annotated[Services, Depends(services)]
Who = Annotated[Principal, Depends(principal)]
Pg = Annotated[Paging, Depends(paging)]

__all__ = ["Pg", "Svc", "Who", "page_out", "run_in_threadpool"]
