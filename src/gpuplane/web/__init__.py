"""The dashboard: one static page (vendored assets, no CDN) that reads the REST API.

``mount_dashboard(app)`` serves ``static/index.html`` at ``/`` and the assets under
``/ui/``. The page asks for an API token once (kept in the browser's localStorage) and shows
hosts, GPUs, workloads and why pending work waits; simulated capacity is marked as such.
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
