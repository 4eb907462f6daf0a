"""Named servers in a config file, as kubectl's contexts: ``gpuplane config ...``.

``$GPUPLANE_CONFIG`` or ``$XDG_CONFIG_HOME/gpuplane/config.yaml`` (default
``~/.config/gpuplane/config.yaml``)::

    current-context: prod
    contexts:
      prod: {url: https://gpuplane.example:8080, token-file: ~/.config/gpuplane/prod.token}
      lab:  {url: http://127.0.0.1:8080, token-file: ~/lab/.gpuplane/admin-token}

Where a command's credentials come from, first found: ``--token`` / ``GPUPLANE_TOKEN``; the
OpenStack settings (``OS_CLOUD``, ``OS_AUTH_URL`` ..., a Keystone token); the current context's
token file; the admin-token file of ``$GPUPLANE_HOME`` (default ``./.gpuplane``) — and then the
command says so on stderr, since that file depends on the folder it runs in. The server is
``--url`` / ``GPUPLANE_URL``, else the current context's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuplane.cli.common import guarded
from gpuplane.domain.errors import FieldError, InvalidInput, NotFound

app = typer.Typer(help="Named servers (contexts) in ~/.config/gpuplane/config.yaml.",
                  no_args_is_help=True)


def config_path() -> Path:
    if os.environ.get("GPUPLANE_CONFIG"):
        return Path(os.environ["GPUPLANE_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpuplane" / "config.yaml"


def load() -> dict[str, Any]:
    import yaml

    path = config_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {"contexts": {}}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", [FieldError(str(path), str(exc))]
                           ) from None
    if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
        raise InvalidInput(f"{path} is not a gpuplane config (a mapping with 'contexts')",
                           [FieldError(str(path), "expected current-context and contexts")])
    data.setdefault("contexts", {})
    return data


def save(data: dict[str, Any]) -> Path:
    import yaml

    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Context:
    name: str
    url: str | None
    token_file: Path | None


def current() -> Context | None:
    data = load()
    name = data.get("current-context")
    ctx = data["contexts"].get(name) if name else None
    if not isinstance(ctx, dict):
        return None
    tf = ctx.get("token-file")
    return Context(name, ctx.get("url"), Path(tf).expanduser() if tf else None)


@app.command("set-context")
@guarded
def set_context(name: Annotated[str, typer.Argument(help="A name for this server.")],
                url: Annotated[str, typer.Option(help="The server's API address.")],
                token_file: Annotated[Path | None, typer.Option(
                    help="A file holding the bearer token (kept out of the config).",
                    show_default=False)] = None) -> None:
    """Add or change a context (and make it current if there is none)."""
    data = load()
    data["contexts"][name] = {"url": url, **({"token-file": str(token_file)} if token_file
                                             else {})}
    data.setdefault("current-context", name)
    typer.echo(f"context {name!r} saved in {save(data)}")


@app.command("use-context")
@guarded
def use_context(name: Annotated[str, typer.Argument(help="A context from get-contexts.")]
                ) -> None:
    """Make NAME the current context."""
    data = load()
    if name not in data["contexts"]:
        known = ", ".join(sorted(data["contexts"])) or "none (add one with set-context)"
        raise NotFound(f"no context {name!r}; known: {known}", code="gpuplane.context.not_found")
    data["current-context"] = name
    save(data)
    typer.echo(f"switched to context {name!r} ({data['contexts'][name].get('url')})")


@app.command("get-contexts")
@guarded
def get_contexts() -> None:
    """List the contexts; the current one is marked with *."""
    data = load()
    for name, ctx in sorted(data["contexts"].items()):
        mark = "*" if name == data.get("current-context") else " "
        typer.echo(f"{mark} {name}\t{ctx.get('url')}\t{ctx.get('token-file') or '-'}")


@app.command("current-context")
@guarded
def current_context() -> None:
    """Print the current context's name."""
    ctx = current()
    if ctx is None:
        typer.echo("error: no current context (gpuplane config set-context NAME --url URL) "
                   "[gpuplane.context.not_found]", err=True)
        raise typer.Exit(1)
    typer.echo(ctx.name)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="config")
