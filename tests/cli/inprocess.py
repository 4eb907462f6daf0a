"""The CLI against an in-process API: every command's ``make_client`` answers through a
``TestClient`` of the app with the named user's token (``--token USER``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gpuplane.cli.main import _register, app
from gpuplane.client import Client


def in_process_cli(monkeypatch: Any, asgi_app: Any, tokens: Mapping[str, str],
                   modules: Iterable[ModuleType]) -> Callable[..., Any]:
    """``invoke(user, *args)``: run ``gpuplane *args`` as ``user`` (a key of ``tokens``)."""
    def make_client(url: str, token: str) -> Client:
        client = Client("http://testserver", None)
        client._http = TestClient(asgi_app, raise_server_exceptions=False,
                                  headers={"Authorization": f"Bearer {tokens[token]}"})
        return client

    for module in modules:
        monkeypatch.setattr(module, "make_client", make_client)
    _register()

    def invoke(user: str, *args: str) -> Any:
        return CliRunner().invoke(app, [*args, "--token", user])
    return invoke
