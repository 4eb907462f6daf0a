"""Request dependencies: the services, the authenticated principal, pagination."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.service import Principal, Services, Unauthenticated
from gpuplane.service.specs import MAX_GENERATION
from gpuplane.service.login_failures import source_key
from gpuplane.store.paging import Page

bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer gpp_...`")


def services(request: Request) -> Services:
    return request.app.state.services


def client_source(request: Request) -> str:
    """The caller's address as the server sees it (the TCP peer; X-Forwarded-For only when
    uvicorn was told to trust the proxy that sent it, see GPUPLANE_TRUSTED_PROXIES)."""
    return request.client.host if request.client else "unknown"


async def principal(request: Request,
                    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
                    ) -> Principal:
    """Authenticate the bearer token, or else a Keystone token in ``X-Auth-Token`` when
    GPUPLANE_KEYSTONE_URL is set (service/keystone.py; 503 while Keystone cannot answer).
    401 problem+json if missing or invalid; 429 with Retry-After while the caller's address
    is throttled for failed authentications (bearer and Keystone failures count alike).

    The throttle check runs on the event loop, before any thread or database is used, and a
    throttled answer waits GPUPLANE_AUTH_THROTTLE_DELAY_S first, so a flood from one address
    costs the server almost nothing once it is throttled."""
    svc: Services = request.app.state.services
    token = creds.credentials if creds else None
    keystone_token = None if token else request.headers.get("x-auth-token")
    source = client_source(request)
    if token or keystone_token:
        key = source_key(source)
        wait, row = svc.auth.throttle(key)
        if row is not None:
            await run_in_threadpool(svc.auth.write_failures, row)
        if wait is not None:
            # tarpit: a client that ignores Retry-After gets its 429s slowly (no thread held)
            await asyncio.sleep(min(wait, request.app.state.settings.auth_throttle_delay_s))
            raise svc.auth.throttled_error(key, wait)
    if keystone_token:
        keystone = svc.keystone(request.app.state.settings)
        if keystone is None:
            raise Unauthenticated("this gpuplane does not accept Keystone tokens "
                                  "(GPUPLANE_KEYSTONE_URL is not set); send "
                                  "'Authorization: Bearer <token>'")
        return await run_in_threadpool(keystone.authenticate, keystone_token, source)
    return await run_in_threadpool(svc.auth.authenticate, token, source)


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
        if not 0 <= after <= MAX_GENERATION:
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
