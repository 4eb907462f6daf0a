"""``gpuplane sim ...``: trace-driven simulations (openb placement, sharing replay)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Trace-driven what-if simulations.", no_args_is_help=True)
