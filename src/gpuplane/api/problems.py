"""The one place that turns errors into HTTP answers: RFC 9457 ``application/problem+json``.

Body: ``{"type": "urn:gpuplane:problem:<code>", "title", "status", "detail", "code",
"instance", "errors": [{"loc": "tasks[0].resources.gpus", "msg": "..."}]}``. ``code`` is the
stable domain code (never changed or reused); ``errors`` names every field at fault. Request
validation errors from FastAPI/pydantic become ``gpuplane.input.invalid`` (422) with field paths
relative to the body (``tasks[0].resources.gpus``) or prefixed ``query.``/``path.``/``header.``;
unreadable JSON is ``gpuplane.input.malformed`` (400). An unknown field's message names the
nearest real field of its object ("did you mean") and ``gpuplane explain`` of that object.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from gpuplane.api.schemas import fields_at
from gpuplane.domain.errors import (Conflict, GpuplaneError, InvalidInput, NotFound,
                                    TooManyRequests, nearest_name)

log = logging.getLogger("gpuplane.api")
MEDIA_TYPE = "application/problem+json"

# Stable codes with their HTTP status. Codes not listed fall back by class (see status_of).
STATUS_BY_CODE: dict[str, int] = {
    "gpuplane.input.invalid": 422,
    "gpuplane.input.malformed": 400,
    "gpuplane.workload.unsatisfiable": 422,
    "gpuplane.request.too_large": 413,
    "gpuplane.auth.unauthenticated": 401,
    "gpuplane.auth.forbidden": 403,
    "gpuplane.not_found": 404,
    "gpuplane.route.not_found": 404,
    "gpuplane.method.not_allowed": 405,
    "gpuplane.conflict": 409,
    "gpuplane.generation.conflict": 409,
    "gpuplane.workload.exists": 409,
    "gpuplane.workload.active": 409,
    "gpuplane.workload.finished": 409,
    "gpuplane.workload.ambiguous": 409,
    "gpuplane.task.invalid_transition": 409,
    "gpuplane.rate_limited": 429,
    "gpuplane.auth.throttled": 429,
    "gpuplane.logs.follow_limit": 429,
    "gpuplane.policy.unknown": 404,
    "gpuplane.witness.unverified": 403,
    "gpuplane.store.unavailable": 503,
    "gpuplane.keystone.unavailable": 503,
    "gpuplane.internal": 500,
}

TITLES = {400: "Bad request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Request too large",
          415: "Unsupported media type", 422: "Invalid input", 429: "Too many requests",
          500: "Internal error",
          503: "Service unavailable"}


class FieldProblem(BaseModel):
    loc: str = Field(description="Dotted path of the field, e.g. tasks[0].resources.gpus.")
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details, with gpuplane's stable ``code`` and field ``errors``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[FieldProblem] = Field(default_factory=list)


def status_of(exc: GpuplaneError) -> int:
    if exc.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[exc.code]
    if isinstance(exc, NotFound) or exc.code.endswith(".not_found"):
        return 404
    if isinstance(exc, Conflict) or exc.code.endswith((".exists", ".in_use", ".conflict")):
        return 409
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, TooManyRequests):
        return 429
    return 400


def problem_response(status: int, code: str, detail: str, instance: str | None = None,
                     errors: Sequence[tuple[str, str]] = (),
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": f"urn:gpuplane:problem:{code}", "title": TITLES.get(status, "Error"),
            "status": status, "detail": detail, "code": code, "instance": instance,
            "errors": [{"loc": loc, "msg": msg} for loc, msg in errors]}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def loc_to_path(loc: Sequence[Any]) -> str:
    """('body', 'tasks', 0, 'resources', 'gpus') -> 'tasks[0].resources.gpus'."""
    parts = list(loc)
    prefix = ""
    if parts and parts[0] == "body":
        parts = parts[1:]
    elif parts and parts[0] in ("query", "path", "header", "cookie"):
        prefix, parts = f"{parts[0]}.", parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and ("[" in p or "function-after" in p or p.startswith(
                ("function-", "literal[", "union[", "json-or-python"))):
            continue  # pydantic's internal step names, not fields
        else:
            out += f".{p}" if out else str(p)
    return prefix + (out or "body")


def _unknown_field(loc: Sequence[Any], body_model: Any) -> str:
    """What to say of an unknown field at ``loc``: the nearest real field of its object and
    the command that lists them (``gpuplane explain workload.tasks.resources``)."""
    msg = "unknown field (not part of the schema; check its spelling)"
    if not loc or loc[0] != "body" or not isinstance(loc[-1], str) or body_model is None:
        return msg
    path = [p for p in loc[1:-1] if not (isinstance(p, str) and "[" in p)]
    try:
        fields = fields_at(body_model, path)
    except Exception:  # noqa: BLE001 - a hint must never turn a 422 into a 500
        fields = None
    if not fields:
        return msg
    near = nearest_name(loc[-1], fields)
    msg = f"unknown field {loc[-1]!r}" + (f"; did you mean {near!r}?" if near else
                                          f"; fields here: {', '.join(fields)}")
    name = getattr(body_model, "__name__", "")
    if name.endswith("Spec"):
        where = ".".join([name.removesuffix("Spec").lower(),
                          *(p for p in path if isinstance(p, str))])
        msg += f" (list them: gpuplane explain {where})"
    return msg


def _validation_errors(exc: RequestValidationError, body_model: Any = None
                       ) -> tuple[int, str, str, list[tuple[str, str]]]:
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        e = next(e for e in errs if e.get("type") == "json_invalid")
        ctx = e.get("ctx") or {}
        return (400, "gpuplane.input.malformed",
                "the request body is not valid JSON (the API takes JSON; YAML is read by the CLI)",
                [("body", f"{ctx.get('error', 'invalid JSON')}")])
    out = []
    for e in errs:
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "extra_forbidden":
            msg = _unknown_field(tuple(e.get("loc", ())), body_model)
        elif e.get("type") == "missing":
            msg = "required field is missing"
        out.append((loc_to_path(e.get("loc", ())), msg.removeprefix("Value error, ")))
    fields = ", ".join(sorted({loc for loc, _ in out}))
    return 422, "gpuplane.input.invalid", f"invalid input in: {fields}", out


def install(app: FastAPI) -> None:
    """Register the exception handlers (domain, validation, HTTP, anything else)."""

    @app.exception_handler(GpuplaneError)
    async def _domain(request: Request, exc: GpuplaneError) -> JSONResponse:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else (
            {"Retry-After": "2"} if status == 503 else None)
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        return problem_response(status, exc.code, exc.detail, request.url.path,
                                [(e.loc, e.msg) for e in exc.errors], headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        field = getattr(request.scope.get("route"), "body_field", None)
        model = getattr(getattr(field, "field_info", None), "annotation", None)
        status, code, detail, errors = _validation_errors(exc, model)
        return problem_response(status, code, detail, request.url.path, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "gpuplane.route.not_found", 405: "gpuplane.method.not_allowed",
                401: "gpuplane.auth.unauthenticated", 403: "gpuplane.auth.forbidden",
                413: "gpuplane.request.too_large"}.get(exc.status_code,
                                                       f"gpuplane.http.{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see /openapi.json"
        errors = [("body", detail)] if exc.status_code == 413 else []
        return problem_response(exc.status_code, code, detail, request.url.path, errors,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "gpuplane.internal",
                                "internal error; the server log has the details",
                                request.url.path)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem answers for a route."""
    return {s: {"description": TITLES.get(s, "Error"),
                "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for s in statuses}
