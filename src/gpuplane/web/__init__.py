"""The operator's console: one static page (its own ES modules, no CDN) over the REST API,
kept up to date by the server-sent event stream of ``api/routers/console.py``.

``mount_dashboard(app)`` serves ``static/index.html`` at ``/`` and the assets under ``/ui/``.
The page asks for an API token once (kept for the tab only, in sessionStorage) and shows the
fleet, a GPU map, the queue, tenancy, workloads, submit/cancel and the audit log
(docs/console.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"


def mount_dashboard(app: Any) -> None:
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")
