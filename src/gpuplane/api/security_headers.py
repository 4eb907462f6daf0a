"""Security headers on every response, as pure ASGI middleware (it wraps streaming answers and
the 413 of ``BodySizeLimit`` alike).

- ``Content-Security-Policy``: only this origin's scripts, styles, images (and ``data:``
  images) and API calls; no plugins, no ``<base>``, no framing, forms post only here; no
  inline script or style anywhere. The dashboard and ``/docs`` (Swagger UI 5) work under it
  as they are: they load nothing from elsewhere, and set styles through the DOM only (checked
  in headless Chromium: no violation, operations expanded and tried out).
- ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer``, ``Cross-Origin-Opener-Policy: same-origin``.
- ``Cache-Control: no-store`` on every answer but the static assets (``/ui/``,
  ``/docs/assets/``): API answers carry tenants' data and must not sit in a shared cache.

A header the route set itself is kept.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
HEADERS = (("x-frame-options", "DENY"), ("x-content-type-options", "nosniff"),
           ("referrer-policy", "no-referrer"), ("cross-origin-opener-policy", "same-origin"))
STATIC_PREFIXES = ("/ui/", "/docs/assets/")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        extra = [("content-security-policy", CSP), *HEADERS]
        if not path.startswith(STATIC_PREFIXES):
            extra.append(("cache-control", "no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in extra
                            if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
