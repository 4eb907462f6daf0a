"""``/docs``: Swagger UI served from gpuplane's own installation, nothing from a CDN.

The assets come from the ``swagger-ui-py`` package (Swagger UI 5 release files, packaged for
Python; Swagger UI 4, as in ``swagger-ui-bundle``, cannot read the OpenAPI 3.1 document FastAPI
writes); only its files are used, none of its code. The page and its start-up script are ours
(no inline script, so the dashboard's Content-Security-Policy holds here too), and only the
two files the page needs are served, under ``/docs/assets/``. Without the package ``/docs`` is
absent (404). ReDoc is not offered: no well-kept package ships it, and loading it from a CDN
is what this module avoids.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

from gpuplane.domain.errors import NotFound

log = logging.getLogger("gpuplane.api")

ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gpuplane API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

INIT = """"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"
  });
});
"""


def assets_dir() -> Path | None:
    """Where the Swagger UI files are, or ``None`` when the package is missing (found without
    importing it: its own code is not needed)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    return path if all((path / name).is_file() for name in ASSETS) else None


def install(app: FastAPI) -> None:
    """Serve ``/docs`` (the page), ``/docs/init.js`` and ``/docs/assets/<file>``."""
    where = assets_dir()
    if where is None:
        log.info("swagger-ui-py is not installed: /docs is off (/openapi.json is served)")
        return

    @app.get("/docs", include_in_schema=False)
    def docs_page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/docs/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(INIT, media_type="text/javascript")

    @app.get("/docs/assets/{name}", include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise NotFound(f"no asset {name!r}", code="gpuplane.route.not_found")
        return FileResponse(where / name, media_type=ASSETS[name])
