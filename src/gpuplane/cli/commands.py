"""The runtime's commands: ``up``, ``api``, ``apply``, ``get``, ``describe``, ``delete``,
``explain``, ``logs``, ``top`` and the operator's."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from gpuplane.cli import (api, contexts, exchange, explain, observe, operator, resources, up,
                              usage)

    up.register(app)
    api.register(app)
    resources.register(app)
    explain.register(app)
    observe.register(app)
    operator.register(app)
    contexts.register(app)
    usage.register(app)
    exchange.register(app)
