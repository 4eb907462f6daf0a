"""Operator habits the API already serves: ``cordon``/``uncordon``/``drain``, ``whoami``,
``token create|list|revoke`` and ``completion bash|zsh|fish``."""

from __future__ import annotations

from typing import Annotated

import typer

from gpuplane.cli.common import (DEFAULT_URL, Output, OutputOpt, TokenOpt, UrlOpt, guarded,
                                 make_client)
from gpuplane.cli.render import dump, show

HostArg = Annotated[str, typer.Argument(help="The host's name (`gpuplane get hosts`).")]
token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)


def _host_state(action: str, host: str, url: str, token: str | None) -> None:
    with make_client(url, token) as client:
        h = client.post_json(f"/v1/hosts/{host}/{action}", {})
    typer.echo(f"host {h['name']}: {h.get('host_state') or h.get('state')}")


@guarded
def cordon(host: HostArg, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Take no new tasks on HOST (running ones stay)."""
    _host_state("cordon", host, url, token)


@guarded
def uncordon(host: HostArg, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Let HOST take new tasks again."""
    _host_state("uncordon", host, url, token)


@guarded
def drain(host: HostArg, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Take no new tasks on HOST and move its tasks off (the control loop requeues them)."""
    _host_state("drain", host, url, token)


@guarded
def whoami(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None,
           output: OutputOpt = Output.table) -> None:
    """Who the token belongs to, and its roles."""
    with make_client(url, token) as client:
        me = client.get_json("/v1/whoami")
    if output != Output.table:
        dump(me, output)
        return
    typer.echo(f"{me['name']} ({me.get('organisation') or 'no organisation'})")
    show(me.get("roles", []), (("ROLE", "role"), ("SCOPE", "scope"), ("IN", "scope_name")),
         output, empty="no roles")


@token_app.command("create")
@guarded
def token_create(name: Annotated[str, typer.Option(help="A name to recognise it.")] = "token",
                 user: Annotated[str | None, typer.Option(
                     help="For another user (needs token.manage over all they hold).",
                     show_default=False)] = None,
                 expires_in: Annotated[float | None, typer.Option(
                     "--expires-in", help="Seconds until it expires.", show_default=False)] = None,
                 url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Create a token and print it once (only its hash is stored)."""
    body = {"name": name, **({"user": user} if user else {}),
            **({"expires_in_s": expires_in} if expires_in else {})}
    with make_client(url, token) as client:
        t = client.post_json("/v1/tokens", body)
    typer.echo(t["token"])
    typer.echo(f"token {t['id']} ({t['name']}) for {t['user']}: shown once, keep it", err=True)


@token_app.command("list")
@guarded
def token_list(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None,
               output: OutputOpt = Output.table) -> None:
    """Your tokens (and, for admins, those of the users you manage)."""
    with make_client(url, token) as client:
        items = list(client.paginate("/v1/tokens"))
    show(items, (("ID", "id"), ("USER", "user"), ("NAME", "name"), ("PREFIX", "prefix"),
                 ("CREATED", "created_at"), ("EXPIRES", "expires_at"),
                 ("REVOKED", "revoked_at")), output)


@token_app.command("revoke")
@guarded
def token_revoke(token_id: Annotated[int, typer.Argument(help="From `gpuplane token list`.")],
                 url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Revoke a token: it stops working at once."""
    with make_client(url, token) as client:
        client.delete(f"/v1/tokens/{token_id}")
    typer.echo(f"token {token_id} revoked")


def completion(shell: Annotated[str, typer.Argument(
        help="bash, zsh or fish.", metavar="SHELL")]) -> None:
    """Print the shell completion script, e.g. `gpuplane completion bash >
    ~/.local/share/bash-completion/completions/gpuplane`."""
    from typer._completion_shared import get_completion_script  # what --show-completion prints

    if shell not in ("bash", "zsh", "fish"):
        typer.echo(f"error: no completion for shell {shell!r}; use bash, zsh or fish "
                   "[gpuplane.input.invalid]", err=True)
        raise typer.Exit(2)
    typer.echo(get_completion_script(prog_name="gpuplane", complete_var="_GPUPLANE_COMPLETE",
                                     shell=shell))


def register(app: typer.Typer) -> None:
    for fn in (cordon, uncordon, drain, whoami, completion):
        app.command(fn.__name__)(fn)
    app.add_typer(token_app, name="token")
