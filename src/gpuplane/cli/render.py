"""Output: tables (Rich), JSON and YAML, for lists and single objects."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import typer

from gpuplane.cli.common import Output


def pick(obj: Any, path: str) -> Any:
    """``pick({"a": {"b": 1}}, "a.b") == 1``; missing parts give None."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(part)
        else:
            return None
    return cur


def age(ts: float, now: float | None = None) -> str:
    s = max(0, int((now if now is not None else time.time()) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def cell(value: Any, header: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if header == "AGE" and isinstance(value, (int, float)):
        return age(float(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def dump(data: Any, output: Output) -> None:
    if output == Output.json:
        typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())


def rich_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
               title: str | None = None, cut: Sequence[str] = ()) -> Any:
    """The rows as a Rich ``Table`` (to print, or to place in a live view); the columns
    named in ``cut`` stay on one line of at most 80 characters, ending in "…" if longer."""
    from rich.table import Table

    t = Table(box=None, title=title, header_style="bold", pad_edge=False, show_edge=False)
    for header, _ in columns:
        if header in cut:
            t.add_column(header, overflow="ellipsis", no_wrap=True, max_width=80)
        else:
            t.add_column(header, overflow="fold")
    for row in rows:
        t.add_row(*(cell(pick(row, path), header) for header, path in columns))
    return t


def console() -> Any:
    """A Rich console for stdout: the terminal's width, or 200 columns into a pipe."""
    from rich.console import Console

    return Console(soft_wrap=True, width=200 if not _isatty() else None)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
          title: str | None = None) -> None:
    console().print(rich_table(rows, columns, title))


def _isatty() -> bool:
    import sys

    return sys.stdout.isatty()


def show(items: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
         output: Output, empty: str = "No resources found.") -> None:
    if output != Output.table:
        dump(list(items), output)
    elif not items:
        typer.echo(empty)
    else:
        table(items, columns)
