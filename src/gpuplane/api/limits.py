"""Request-size limit as pure ASGI middleware: 413 problem+json before the body is parsed.

A declared ``Content-Length`` above the limit is refused at once; a chunked body is counted
as it streams and refused when it crosses the limit.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpuplane.api.problems import MEDIA_TYPE


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive``; FastAPI re-raises HTTP exceptions, so the problem handler
    answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes "
                              "(GPUPLANE_MAX_BODY_BYTES); send less")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope: Scope, send: Send) -> None:
        body = json.dumps({
            "type": "urn:gpuplane:problem:gpuplane.request.too_large",
            "title": "Request too large", "status": 413,
            "detail": f"the request body is larger than {self.max_bytes} bytes "
                      "(GPUPLANE_MAX_BODY_BYTES); send less",
            "code": "gpuplane.request.too_large", "instance": scope.get("path"),
            "errors": [{"loc": "body", "msg": f"larger than {self.max_bytes} bytes"}]}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", MEDIA_TYPE.encode()),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, send)
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, send)
