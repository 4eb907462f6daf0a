"""``gpuplane export DIR`` and ``gpuplane import DIR``: the exit path (docs/exit.md).

Operator commands run where the database is reachable (like ``gpuplane up``), with no API
server: they take ``--home`` / ``--db-url`` and the audit key from the same settings. Exit
codes: 0 done, 1 refused (tampered export, non-empty target, missing key; nothing written),
2 bad input.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuplane.cli.common import DbUrlOpt, HomeOpt, guarded

DirArg = Annotated[Path, typer.Argument(metavar="DIR", help="The export folder.",
                                        show_default=False)]
EXPORT_HELP = (
    "Write the whole state into DIR as YAML / JSON lines with a signed manifest.\n\n"
    "Inventory, tenancy, quotas, policies, workloads and their history, usage, the audit log "
    "and its last checkpoint (docs/exit.md). Runs on the database directly; no server needed.")
IMPORT_HELP = (
    "Verify the export in DIR and restore it into a fresh installation.\n\n"
    "Checks the manifest signature, every file's hash and the audit log before writing "
    "anything; then continues the log with this installation's key and a verified "
    "consistency proof from the exported checkpoint (docs/exit.md).")


def _settings(home: Path | None, db_url: str | None) -> Any:
    from gpuplane.settings import Settings

    overrides: dict[str, object] = {}
    if home is not None:
        overrides["home"] = home
    if db_url is not None:
        overrides["db_url"] = db_url
    return Settings(**overrides)


@contextmanager
def _progress(what: str) -> Iterator[Any]:
    """A Rich progress bar on stderr (only on a terminal), fed ``(label, done, total)``."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    console = Console(stderr=True)
    with Progress(TextColumn(f"[bold]{what}"), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task("", total=None)

        def update(label: str, done: int, total: int) -> None:
            bar.update(task, description=label, completed=done, total=max(total, 1))

        yield update


def export(directory: DirArg, home: HomeOpt = None, db_url: DbUrlOpt = None) -> None:
    """``gpuplane export`` (help text: EXPORT_HELP)."""
    _export(directory, home, db_url)


@guarded
def _export(directory: Path, home: Path | None, db_url: str | None) -> None:
    from gpuplane.service.exchange import ExportError, export_state, signing_key
    from gpuplane.store import Store

    settings = _settings(home, db_url)
    url = settings.database_url
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
        raise ExportError(f"no database at {url.split('///', 1)[-1]}; pass the installation's "
                          "--home or --db-url", code="gpuplane.exchange.no_database")
    store = Store(url)
    try:
        store.migrate()
        key = signing_key(store, settings.audit_key_path)
        with _progress("export") as progress:
            report = export_state(store, directory, key, now=time.time(),
                                  configured_origin=settings.audit_origin, progress=progress)
    finally:
        store.dispose()
    typer.echo(f"exported to {report.directory}: log {report.origin}, "
               f"{report.audit_size} audit entries, checkpoint of {report.checkpoint_size}"
               + (" (signed now, reason export)" if report.new_checkpoint else ""))
    for name, info in sorted(report.files.items()):
        typer.echo(f"  {name:24} {info.records:>8} record(s)  {info.bytes:>10} bytes")
    typer.echo("manifest.json signed in manifest.sig with the audit key (audit-key.pem); "
               "keep your own copy of that key (`gpuplane audit key`) to check it on import")


def import_(directory: DirArg, home: HomeOpt = None, db_url: DbUrlOpt = None,
            key: Annotated[Path | None, typer.Option(
                "--key", show_default=False,
                help="Your own copy of the exporting installation's audit public key (PEM). "
                     "Recommended: without it the export is checked with its own "
                     "audit-key.pem, which proves integrity but not who wrote it.")] = None,
            ) -> None:
    """``gpuplane import`` (help text: IMPORT_HELP)."""
    _import(directory, home, db_url, key)


@guarded
def _import(directory: Path, home: Path | None, db_url: str | None, key: Path | None) -> None:
    from gpuplane.governance.checkpoints import load_or_create_key
    from gpuplane.service.exchange_import import import_state, verify_export
    from gpuplane.store import Store

    settings = _settings(home, db_url)
    verified = verify_export(directory, key)
    typer.echo(f"verified {directory}: manifest signature ({verified.key_source}), "
               f"{len(verified.manifest['files'])} file hashes, audit log of "
               f"{len(verified.log.entries)} entries against checkpoint.txt "
               f"(size {verified.checkpoint.size})")
    if key is None:
        typer.echo("  note: no --key given: the signature was checked with the key inside the "
                   "export; compare its audit-key.pem with the key you kept", err=True)
    for name in verified.unlisted:
        typer.echo(f"  note: {name} is not in the manifest and was ignored", err=True)
    store = Store(settings.database_url)
    try:
        store.migrate()
        signer = load_or_create_key(settings.audit_key_path)
        with _progress("import") as progress:
            report = import_state(store, verified, signer, now=time.time(), progress=progress)
    finally:
        store.dispose()
    typer.echo(f"restored into {settings.database_url.split('@')[-1]}:")
    for name, n in report.records.items():
        typer.echo(f"  {name:24} {n:>8} record(s)")
    typer.echo(f"audit log {verified.origin} continued: entry system.import, checkpoint "
               f"{report.new_size} signed with this installation's key"
               + (" (added to the log's keys)" if report.key_added else ""))
    typer.echo(f"  {report.new_key}")
    typer.echo(f"consistency proof {report.old_size} -> {report.new_size} verified "
               f"(old root {report.old_root}, new root {report.new_root}):")
    for h in report.proof:
        typer.echo(f"  {h}")
    typer.echo("API tokens were restored as metadata only and cannot authenticate: "
               "`gpuplane up` writes a new admin token; re-issue the others")


def register(app: typer.Typer) -> None:
    app.command("export", help=EXPORT_HELP)(export)
    app.command("import", help=IMPORT_HELP)(import_)
