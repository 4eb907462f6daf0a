"""``gpuplane api``: API-only processes (no control loop, no drivers) on a shared database.

Beside one ``gpuplane up`` (which runs the control loop; or several, one of which leads), more
processes can serve the REST API against the same PostgreSQL database, to take more requests
per second: ``gpuplane api --db-url postgresql+psycopg://... --workers 4`` starts four uvicorn
worker processes on one port. They migrate nothing concurrently (the parent migrates once,
before the workers start), schedule nothing and start no task; task logs are read from
``$GPUPLANE_HOME/logs`` when that folder is shared with the ``gpuplane up`` that runs them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuplane.cli.common import BindHostOpt, BindPortOpt, DbUrlOpt, HomeOpt, guarded


def app_factory() -> Any:
    """The ASGI app of one API-only worker, from the environment (``GPUPLANE_DB_URL``,
    ``GPUPLANE_HOME``, ...): uvicorn imports this in each worker process."""
    from gpuplane.api.app import create_app
    from gpuplane.control.logsource import DriverLogSource
    from gpuplane.settings import Settings

    from gpuplane.process import tune_gc

    settings = Settings()
    app = create_app(settings, migrate=False, log_source=DriverLogSource(settings.logs_dir, {}))
    tune_gc()
    return app


def api(
    host: BindHostOpt = "127.0.0.1",
    port: BindPortOpt = 8080,
    home: HomeOpt = None,
    db_url: DbUrlOpt = None,
    workers: Annotated[int, typer.Option("--workers", envvar="GPUPLANE_API_WORKERS", min=1,
                                         max=64, help="API processes sharing the port.")] = 1,
    log_level: Annotated[str, typer.Option("--log-level", envvar="GPUPLANE_LOG_LEVEL")] = "info",
) -> None:
    """Serve the REST API only (no control loop, no drivers), in --workers processes."""
    _api(host, port, home, db_url, workers, log_level)


@guarded
def _api(host: str, port: int, home: Path | None, db_url: str | None, workers: int,
         log_level: str) -> None:
    import uvicorn

    from gpuplane.settings import Settings
    from gpuplane.store import Store

    level = getattr(logging, log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # the workers read their settings from the environment (app_factory)
    if home is not None:
        os.environ["GPUPLANE_HOME"] = str(home)
    if db_url is not None:
        os.environ["GPUPLANE_DB_URL"] = db_url
    settings = Settings()
    store = Store(settings.database_url)
    try:
        store.migrate()  # once, here, before the workers start
    finally:
        store.dispose()
    where = settings.database_url.split("@")[-1]
    typer.echo(f"gpuplane api: {workers} API process(es) on http://{host}:{port} "
               f"(database: {where}); no control loop in these processes")
    uvicorn.run("gpuplane.cli.api:app_factory", factory=True, host=host, port=port,
                workers=workers, log_level=log_level.lower(),
                access_log=level <= logging.DEBUG,
                proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=settings.trusted_proxies or None)


def register(app: typer.Typer) -> None:
    app.command("api")(api)
