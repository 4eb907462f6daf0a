"""The ``gpuplane`` command line: one Typer app; each area adds its sub-app here.

Sub-apps live in their own modules (``cli/sim.py``, ``cli/control.py`` ...) and are
imported lazily-cheap: keep heavy imports (numpy, fastapi, sqlalchemy) inside the
command functions so ``gpuplane --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from gpuplane import __version__

app = typer.Typer(
    name="gpuplane",
    help="gpuplane: an open, sovereign control plane for shared GPU infrastructure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion, and `gpuplane completion`
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpuplane {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """gpuplane: an open, sovereign control plane for shared GPU infrastructure."""


_registered = False


def _register() -> None:
    """Attach the sub-apps, once per process (a second call would add every command again, and
    each invocation would build them all). One line per area; keep this list sorted."""
    global _registered
    if _registered:
        return
    _registered = True
    from gpuplane.cli import commands, sim

    commands.register(app)
    app.add_typer(sim.app, name="sim")
    __import__("gpuplane.cli.sim_sharing").cli.sim_sharing.register(sim.app)
    __import__("gpuplane.governance.attestation.cli").governance.attestation.cli.register(app)
    __import__("gpuplane.governance.cli").governance.cli.register(app)
    __import__("gpuplane.cli.openstack").cli.openstack.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: never lets a traceback reach the user."""
    from gpuplane.domain.errors import GpuplaneError

    _register()
    try:
        app(args=argv, standalone_mode=True)
    except GpuplaneError as exc:
        typer.echo(f"error: {exc} [{exc.code}]", err=True)
        sys.exit(2)
