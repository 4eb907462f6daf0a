"""The operator's console: one static page (its own ES modules, no CDN) over the REST API,
kept up to date by the server-sent event stream of ``api/routers/console.py``.

``mount_dashboard(app)`` serves ``static/index.html`` at ``/`` and the assets under ``/ui/``,
and keeps the pool's history for the console's charts (``api/history.py``: sampled every
``history_interval_s`` seconds, ``history_points`` samples, in this process's memory; the
sampling thread starts and stops with the app). The page asks for an API token once (kept for
the tab only, in sessionStorage) and shows the fleet, a GPU map, the queue, tenancy, charts,
workloads, submit/cancel and the audit log (docs/console.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"


def mount_dashboard(app: Any) -> None:
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    from gpuplane.api.history import History

    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    settings = app.state.settings
    history = History(app.state.store, interval_s=settings.history_interval_s,
                      points=settings.history_points)
    app.state.history = history
    app.router.on_startup.append(history.start)
    app.router.on_shutdown.append(history.stop)
