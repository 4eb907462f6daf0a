"""Shared bits of the client-side commands: connection options, output option, error guard."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from gpuplane.domain.errors import GpuplaneError

F = TypeVar("F", bound=Callable[..., Any])


class Output(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


UrlOpt = Annotated[str, typer.Option("--url", envvar="GPUPLANE_URL",
                                     help="API address of the gpuplane server.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="GPUPLANE_TOKEN", show_default=False,
                                              help="Bearer token (default: $GPUPLANE_TOKEN, else "
                                                   "a Keystone token when OS_CLOUD or "
                                                   "OS_AUTH_URL is set, else "
                                                   "$GPUPLANE_HOME/admin-token when readable).")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="Output format.")]
ProjectOpt = Annotated[str | None, typer.Option("--project", "-p", envvar="GPUPLANE_PROJECT",
                                                show_default=False,
                                                help="Project of the workload (default: any / the "
                                                     "only match).")]
# the options of the commands that start servers (``up``, ``api``)
BindHostOpt = Annotated[str, typer.Option("--host", envvar="GPUPLANE_BIND_HOST",
                                          help="Address to listen on.")]
BindPortOpt = Annotated[int, typer.Option("--port", envvar="GPUPLANE_BIND_PORT", min=0,
                                          max=65535, help="Port to listen on.")]
HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="GPUPLANE_HOME", show_default=False,
                                              help="State directory \\[default: ./.gpuplane].")]
DbUrlOpt = Annotated[str | None, typer.Option("--db-url", envvar="GPUPLANE_DB_URL",
                                              show_default=False,
                                              help="Database URL \\[default: SQLite in home].")]

DEFAULT_URL = "http://127.0.0.1:8080"


def resolve_token(token: str | None) -> str | None:
    """The token to send: the flag/env value, else the local admin-token file if readable
    (convenient on the machine that runs `gpuplane up`)."""
    if token:
        return token.strip()
    home = os.environ.get("GPUPLANE_HOME", ".gpuplane")
    try:
        with open(os.path.join(home, "admin-token"), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def make_client(url: str, token: str | None):  # noqa: ANN201 - lazy import keeps --help fast
    """A client with the first credentials found (cli/contexts.py): ``--token`` /
    ``GPUPLANE_TOKEN``; a Keystone token obtained with the usual OpenStack settings
    (``OS_CLOUD`` and clouds.yaml, or ``OS_AUTH_URL``, ... ; docs/keystone.md), sent as
    ``X-Auth-Token``; the current context's token file; the admin-token file of
    ``$GPUPLANE_HOME`` (said on stderr). The server: ``--url``/``GPUPLANE_URL``, else the
    current context's. A 401 names the server and where the token came from."""
    from gpuplane.cli import contexts
    from gpuplane.client import Client
    from gpuplane.client.http import keystone_login_from_env, keystone_token

    ctx = contexts.current()
    explicit_url = "GPUPLANE_URL" in os.environ or any(
        a == "--url" or a.startswith("--url=") for a in sys.argv)
    if ctx is not None and ctx.url and not explicit_url and url == DEFAULT_URL:
        url = ctx.url
    if token and token.strip():
        source = "GPUPLANE_TOKEN" if os.environ.get("GPUPLANE_TOKEN") == token else "--token"
        return Client(url=url, token=token.strip(), auth_source=source)
    login = keystone_login_from_env()
    if login is not None:
        return Client(url=url, keystone_token=keystone_token(login), auth_source=login.source)
    if ctx is not None and ctx.token_file is not None:
        try:
            text = ctx.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GpuplaneError("gpuplane.context.token_unreadable",
                                f"context {ctx.name!r}: cannot read its token file "
                                f"{ctx.token_file} ({exc.strerror})") from None
        return Client(url=url, token=text, auth_source=f"context {ctx.name!r} "
                                                        f"({ctx.token_file})")
    found = resolve_token(None)
    if found:
        home = os.environ.get("GPUPLANE_HOME", ".gpuplane")
        path = os.path.abspath(os.path.join(home, "admin-token"))
        typer.echo(f"note: using the admin token in {path} (GPUPLANE_HOME); choose a server "
                   "with `gpuplane config use-context` or GPUPLANE_TOKEN", err=True)
        return Client(url=url, token=found, auth_source=path)
    return Client(url=url)


def guarded(fn: F) -> F:
    """Turn every failure of a command into ``error: ...`` on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except GpuplaneError as exc:
            fail(exc)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(0) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback
            typer.echo(f"error: {type(exc).__name__}: {exc} [gpuplane.cli.internal]", err=True)
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


EXIT_CODES = {"gpuplane.input.invalid": 2, "gpuplane.not_found": 4, "gpuplane.conflict": 5}


def fail(exc: GpuplaneError) -> None:
    """Print a domain error with every field problem and exit non-zero."""
    typer.echo(f"error: {exc.detail} [{exc.code}]", err=True)
    for e in exc.errors:
        typer.echo(f"  - {e.loc}: {e.msg}" if e.loc else f"  - {e.msg}", err=True)
    from gpuplane.domain.errors import InvalidInput

    status = getattr(exc, "status", None)
    code = EXIT_CODES.get(exc.code, 2 if isinstance(exc, InvalidInput) else None)
    if code is None:
        code = 4 if status == 404 else 5 if status == 409 else 2 if status in (400, 413, 422) else 1
    sys.stderr.flush()
    raise typer.Exit(code)
