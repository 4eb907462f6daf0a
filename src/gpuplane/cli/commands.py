"""The runtime's commands: ``up``, ``apply``, ``get``, ``describe``, ``delete``, ``logs``, ``top``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from gpuplane.cli import observe, resources, up

    up.register(app)
    resources.register(app)
    observe.register(app)
