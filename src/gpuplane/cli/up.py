"""``gpuplane up``: the embedded control plane in one process.

API + control loop + local driver (+ sim driver for the demo fleet) + dashboard, on SQLite at
``$GPUPLANE_HOME/gpuplane.db`` unless ``GPUPLANE_DB_URL`` names another database.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from gpuplane.cli.common import BindHostOpt, BindPortOpt, DbUrlOpt, HomeOpt, guarded


def up(
    host: BindHostOpt = "127.0.0.1",
    port: BindPortOpt = 8080,
    home: HomeOpt = None,
    db_url: DbUrlOpt = None,
    demo: Annotated[bool, typer.Option("--demo/--no-demo", envvar="GPUPLANE_DEMO",
                                       help="Load the simulated demo fleet.")] = True,
    demo_file: Annotated[Path | None, typer.Option("--demo-file", show_default=False,
                                                   help="Fleet YAML to load instead of "
                                                        "examples/fleet-demo.yaml.")] = None,
    host_name: Annotated[str | None, typer.Option("--host-name", envvar="GPUPLANE_HOST_NAME",
                                                  show_default=False,
                                                  help="Name of this machine's host "
                                                       "\\[default: its hostname].")] = None,
    local_gpus: Annotated[str | None, typer.Option(
        "--local-gpus", envvar="GPUPLANE_LOCAL_GPUS", show_default=False,
        help="Declare GPUs for development when NVML finds none, e.g. 2xL40S-48GB.")] = None,
    jurisdiction: Annotated[str, typer.Option("--jurisdiction", envvar="GPUPLANE_JURISDICTION",
                                              help="Jurisdiction of this machine, e.g. EU/DE."
                                              )] = "",
    log_level: Annotated[str, typer.Option("--log-level", envvar="GPUPLANE_LOG_LEVEL")] = "info",
    unsandboxed: Annotated[bool, typer.Option(
        "--unsandboxed", envvar="GPUPLANE_UNSANDBOXED",
        help="Run local tasks of every project without the bubblewrap sandbox, as the "
             "server's user (the host, events and audit say so).")] = False,
) -> None:
    """Run API + scheduler + local driver + dashboard in one process."""
    _up(host, port, home, db_url, demo, demo_file, host_name, local_gpus, jurisdiction, log_level,
        unsandboxed)


@guarded
def _up(host: str, port: int, home: Path | None, db_url: str | None, demo: bool,
        demo_file: Path | None, host_name: str | None, local_gpus: str | None,
        jurisdiction: str, log_level: str, unsandboxed: bool = False) -> None:
    import uvicorn

    from gpuplane.api.app import create_app
    from gpuplane.control.embedded import STATE_UMASK, Embedded
    from gpuplane.process import tune_gc
    from gpuplane.settings import Settings
    from gpuplane.web import mount_dashboard

    level = getattr(logging, log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    overrides: dict[str, object] = {"bind_host": host, "bind_port": port, "demo": demo,
                                    "unsandboxed": unsandboxed}
    if home is not None:
        overrides["home"] = home
    if db_url is not None:
        overrides["db_url"] = db_url
    settings = Settings(**overrides)
    _check_port_free(host, port)
    os.umask(STATE_UMASK)  # state files 0600, folders 0700, from here on (docs/runtime.md)
    plane = Embedded(settings, demo=demo, demo_file=demo_file, host_name=host_name,
                     local_gpus=local_gpus, jurisdiction=jurisdiction, port=port)
    app = create_app(settings, services=plane.services, migrate=False, leader=plane.leader,
                     loop_stats=plane.loop.stats)
    mount_dashboard(app)
    where = "SQLite " + str(Path(settings.home) / "gpuplane.db") if not settings.db_url else \
        settings.db_url.split("@")[-1]
    token_note = ("written to" if plane.token_written else "kept in")
    typer.echo(f"gpuplane up: API and dashboard on http://{host}:{port} (database: {where})")
    typer.echo(f"gpuplane up: admin token {token_note} {plane.token_path.resolve()}")
    typer.echo(f"gpuplane up: local host {plane.host!r} ({plane.inventory.source}: "
               f"{len(plane.inventory.gpus)} GPU(s)); demo fleet: "
               f"{'on' if demo else 'off'}")
    local = plane.drivers["local"]
    typer.echo(f"gpuplane up: local tasks: sandbox {local.mode}, cgroups {local.cgroups.mode}")
    for note in local.notes:
        typer.echo(f"  note: {note}")
    typer.echo(f"  export GPUPLANE_URL=http://{host}:{port} "
               f"GPUPLANE_TOKEN=$(cat {plane.token_path})")
    sys.stdout.flush()
    tune_gc()  # start-up is done: fewer, cheaper collections from here (gpuplane/process.py)
    plane.start_loop()
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level.lower(),
                    access_log=level <= logging.DEBUG,
                    # X-Forwarded-For only from the configured proxies (it keys the throttle)
                    proxy_headers=bool(settings.trusted_proxies),
                    forwarded_allow_ips=settings.trusted_proxies or None)
    finally:
        plane.stop()


def _check_port_free(host: str, port: int) -> None:
    """Fail early, with a clear message, when the address is taken (another `gpuplane up`?)."""
    import socket

    from gpuplane.domain.errors import GpuplaneError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise GpuplaneError("gpuplane.up.address_in_use",
                                f"cannot listen on {host}:{port} ({exc.strerror}); is another "
                                "`gpuplane up` running? Pass --port to use another port") from None


def register(app: typer.Typer) -> None:
    app.command("up")(up)
