"""``gpuplane audit verify FILE``: offline verification of an exported audit chain.

Export the chain with ``GET /v1/audit/export`` (JSON lines; global auditor or admin), then
verify it anywhere, without the server: exit 0 when intact, 1 when any entry was changed,
removed or reordered (each problem printed), 2 when the file cannot be read.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Audit chain tools (offline).", no_args_is_help=True)


@app.command("verify")
def verify(file: Path = typer.Argument(..., help="JSON-lines export of the audit chain.")) -> None:
    """Check every entry's hash and its link to the previous one."""
    from gpuplane.governance.audit import verify_file

    try:
        problems = verify_file(file)
        count = sum(1 for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror} [gpuplane.audit.unreadable]",
                   err=True)
        raise typer.Exit(2) from None
    if problems:
        for p in problems:
            typer.echo(f"TAMPERED: {p}", err=True)
        typer.echo(f"error: audit chain in {file} is NOT intact ({len(problems)} problem(s)) "
                   "[gpuplane.audit.tampered]", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit chain intact: {count} entries")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audit")
