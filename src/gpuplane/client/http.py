"""A small httpx client for the gpuplane REST API (used by the CLI, tests and scripts).

Every non-2xx answer becomes a domain error (``gpuplane.domain.errors``) built from the RFC 9457
problem+json body, so callers handle API errors exactly like local ones: ``code`` is the stable
error code, ``errors`` the field paths at fault. Transport failures become
``GpuplaneError("gpuplane.client.unreachable", ...)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from gpuplane.domain.errors import Conflict, FieldError, GpuplaneError, InvalidInput, NotFound

DEFAULT_URL = "http://127.0.0.1:8080"


def error_from_problem(status: int, body: Any, fallback: str = "") -> GpuplaneError:
    """Build the domain error an RFC 9457 problem body describes."""
    body = body if isinstance(body, Mapping) else {}
    code = str(body.get("code") or f"gpuplane.http.{status}")
    detail = str(body.get("detail") or body.get("title") or fallback or f"HTTP {status}")
    errors = [FieldError(str(e.get("loc", "")), str(e.get("msg", "")))
              for e in body.get("errors") or [] if isinstance(e, Mapping)]
    if status == 404:
        err: GpuplaneError = NotFound(detail, code=code)
    elif status == 409:
        err = Conflict(detail, code=code)
    elif status in (400, 413, 422):
        err = InvalidInput(detail, errors, code=code)
    else:
        err = GpuplaneError(code=code, detail=detail, errors=errors)
    err.status = status  # type: ignore[attr-defined]
    return err


class Client:
    """Talks to one gpuplane server. ``token`` is a bearer token (``GPUPLANE_TOKEN``)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json, application/problem+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None) -> httpx.Response:
        """Send one request; raise the matching domain error on a non-2xx answer."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(method, path, json=json, params=clean)
        except httpx.TimeoutException as exc:
            raise GpuplaneError("gpuplane.client.timeout",
                                f"{method} {self.url}{path} timed out ({exc})") from None
        except httpx.HTTPError as exc:
            raise GpuplaneError("gpuplane.client.unreachable",
                                f"cannot reach gpuplane at {self.url} ({exc}); is `gpuplane up` "
                                "running, and is GPUPLANE_URL right?") from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            err = error_from_problem(resp.status_code, body, resp.text[:200])
            if resp.status_code == 401 and "GPUPLANE_TOKEN" not in err.detail:
                err.detail += " (set GPUPLANE_TOKEN or pass --token)"
            raise err
        return resp

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post_json(self, path: str, body: Any, **params: Any) -> Any:
        resp = self.request("POST", path, json=body, params=params)
        return resp.json() if resp.content else None

    def put_json(self, path: str, body: Any) -> Any:
        resp = self.request("PUT", path, json=body)
        return resp.json() if resp.content else None

    def delete(self, path: str) -> Any:
        resp = self.request("DELETE", path)
        return resp.json() if resp.content else None

    def paginate(self, path: str, limit: int = 500, **params: Any) -> Iterator[dict[str, Any]]:
        """Yield every item of a paginated list (``{"items": [...], "next": cursor}``)."""
        cursor = None
        while True:
            page = self.get_json(path, limit=limit, cursor=cursor, **params)
            if isinstance(page, list):
                yield from page
                return
            yield from page.get("items", [])
            cursor = page.get("next") or page.get("next_cursor")
            if not cursor:
                return

    def stream(self, path: str, **params: Any) -> Iterator[bytes]:
        """GET ``path`` and yield the body as it arrives (for ``logs -f``); no read timeout."""
        clean = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream("GET", path, params=clean,
                                   timeout=httpx.Timeout(10.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    try:
                        body = resp.json()
                    except ValueError:
                        body = None
                    raise error_from_problem(resp.status_code, body, resp.text[:200])
                yield from resp.iter_bytes()
        except httpx.HTTPError as exc:
            raise GpuplaneError("gpuplane.client.unreachable",
                                f"lost the connection to {self.url} ({exc})") from None

    # -- health --------------------------------------------------------------
    def healthz(self) -> dict[str, Any]:
        return self.get_json("/healthz")

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll ``/healthz`` until it answers 200 (raises the last error on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.healthz()
                return
            except GpuplaneError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
