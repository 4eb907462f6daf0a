"""The FastAPI application factory.

``create_app(settings)`` builds a complete API over the database ``settings`` names, running
Alembic migrations first. ``gpuplane up`` passes its own ``store`` (shared with the control
loop), ``log_source`` (the driver side's ``service.logs.LogSource``) and optionally
``leader`` (a callable returning the current scheduler holder, shown by /healthz). Tests pass a
fake ``clock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpuplane import __version__
from gpuplane.api import docs, problems
from gpuplane.api.follow import FollowSlots
from gpuplane.api.limits import BodySizeLimit
from gpuplane.api.deps import Who
from gpuplane.api.metrics import Metrics, MetricsMiddleware, tenant_series_only
from gpuplane.api.routers import (accounting, audit, console, governance, inventory, policy,
                                  tenancy, witness, workloads)
from gpuplane.api.schemas import HealthOut
from gpuplane.api.security_headers import SecurityHeaders
from gpuplane.service import LogSource, Services
from gpuplane.service.login_failures import FailedLogins
from gpuplane.settings import Settings
from gpuplane.store import Store

ROUTERS = (inventory.router, tenancy.router, policy.router, workloads.router, accounting.router,
           audit.router, governance.router, witness.router, console.router)


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               services: Services | None = None, log_source: LogSource | None = None,
               clock: Callable[[], float] = time.time, migrate: bool = True,
               leader: Callable[[], str | None] | None = None,
               loop_stats: Any = None) -> FastAPI:
    """Build the API. Creates the store from ``settings`` unless one is given; migrates it.
    ``loop_stats``: the ``LoopStats`` of the control loop of this process, for ``/metrics``."""
    settings = settings or Settings()
    if services is not None:
        store = services.store
    if store is None:
        store = Store(settings.database_url)
    if migrate:
        store.migrate()
    if services is None:
        services = Services(store, clock=clock, log_source=log_source)

    app = FastAPI(title="gpuplane", version=__version__, docs_url=None, redoc_url=None,
                  description="An open, sovereign control plane for shared GPU infrastructure. "
                              "Errors are RFC 9457 problem+json with stable `code`s.")
    app.state.settings = settings
    app.state.store = store
    app.state.services = services
    services.auth.failures = FailedLogins(settings.auth_fail_limit, settings.auth_fail_window_s)
    app.state.log_follow = FollowSlots(settings.log_follow_per_user, settings.log_follow_max)
    app.router.on_startup.append(services.auth.start_flusher)  # failed-login audit rows
    app.router.on_shutdown.append(services.auth.stop_flusher)
    problems.install(app)
    docs.install(app)  # /docs from the installed Swagger UI files, never a CDN
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/healthz", response_model=HealthOut, tags=["health"])
    def healthz(response: Response) -> HealthOut:
        """Liveness and database reachability (no authentication)."""
        ok = store.ping()
        if not ok:
            response.status_code = 503
        return HealthOut(status="ok" if ok else "degraded", database=ok, version=__version__,
                         leader=leader() if leader else None)

    metrics = Metrics(store, loop_stats)

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format."},
                        **problems.responses(401, 429)})
    def metrics_endpoint(who: Who) -> Response:
        """Prometheus metrics (docs/observability.md). Needs a token: the per-tenant series
        (``gpuplane_tenant_*``) are those of the projects whose quotas the caller may read, so
        a tenant sees its own and a global reader (Prometheus' token) all of them."""
        text = generate_latest(metrics.registry)
        visible = services.policy.visible_project_names(who)
        if visible is not None:
            text = tenant_series_only(text, visible)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = \
            problems.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        defs = schema["components"]["schemas"]["Problem"].pop("$defs", {})
        schema["components"]["schemas"].update(defs)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: every answer, a 413 included
    return app
