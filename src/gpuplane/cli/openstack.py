"""``gpuplane openstack sync | check | import``: gpuplane's inventory in an OpenStack Placement.

Contract (operators script these; keep them exactly, docs/openstack.md):

- ``gpuplane openstack sync --placement-url URL [--token TOKEN] [--fleet FILE] [--json]``
  pushes the hosts of the gpuplane API (``GET /v1/hosts``) or of a fleet YAML into Placement;
  ``--json`` prints one object with at least ``providers`` and ``writes``.
- ``gpuplane openstack check --placement-url URL [--token TOKEN] [--fleet FILE] [--json]``
  reports drift without writing (``--json``: at least ``drift``, a count).
- ``gpuplane openstack import --placement-url URL [-o yaml]`` prints Site and Host documents
  that ``gpuplane apply -f`` accepts.

``--token`` is Placement's ``X-Auth-Token`` (a Keystone token; ``admin`` for a noauth2
Placement); the gpuplane API is reached with ``--url`` / ``--gpuplane-token`` as elsewhere.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuplane.cli.common import DEFAULT_URL, UrlOpt, guarded, make_client
from gpuplane.domain.errors import FieldError, InvalidInput

app = typer.Typer(help="gpuplane on an operator's OpenStack: inventory in Placement.",
                  no_args_is_help=True)

PlacementUrlOpt = Annotated[str, typer.Option(
    "--placement-url", envvar="GPUPLANE_PLACEMENT_URL",
    help="Placement API root, e.g. http://controller:8778.")]
PlacementTokenOpt = Annotated[str, typer.Option(
    "--token", envvar="OS_TOKEN",
    help="Placement X-Auth-Token: a Keystone token, or 'admin' for a noauth2 Placement.")]
FleetOpt = Annotated[Path | None, typer.Option(
    "--fleet", show_default=False,
    help="Fleet YAML (Site and Host documents, as `gpuplane apply -f` takes) instead of the "
         "hosts registered in gpuplane.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
GpuplaneTokenOpt = Annotated[str | None, typer.Option(
    "--gpuplane-token", envvar="GPUPLANE_TOKEN", show_default=False,
    help="Token of the gpuplane API (default: $GPUPLANE_TOKEN or the local admin token).")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, max=32,
                                         help="Host trees written in parallel.")]
MarkerOpt = Annotated[str, typer.Option(
    "--marker", hidden=True,
    help="Marker trait of the providers this run owns (tests use their own).")]
DEFAULT_MARKER = "CUSTOM_GPUPLANE_MANAGED"  # tree.MANAGED_TRAIT (not imported: --help stays fast)
SHOWN_CHANGES = 40


class ImportFormat(str, Enum):
    yaml = "yaml"
    json = "json"


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="openstack")


# -- inputs ------------------------------------------------------------------------------------
def fleet_hosts(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Host documents validated as ``HostSpec``, Site documents) of a fleet file, read with
    the loader of ``gpuplane apply``; other kinds are ignored. ``InvalidInput`` lists every
    invalid Host document with its field paths."""
    from pydantic import ValidationError

    from gpuplane.cli.resources import load_documents, request_body
    from gpuplane.service.specs import HostSpec, SiteSpec

    hosts: list[dict[str, Any]] = []
    sites: list[dict[str, Any]] = []
    errors: list[FieldError] = []
    for i, doc in load_documents(path):
        kind, body = request_body(doc)
        if kind.name not in ("host", "site"):
            continue
        model = HostSpec if kind.name == "host" else SiteSpec
        try:
            spec = model.model_validate(body)
        except ValidationError as exc:
            errors.extend(FieldError(f"documents[{i}]." + ".".join(str(p) for p in e["loc"]),
                                     e["msg"]) for e in exc.errors())
            continue
        (hosts if kind.name == "host" else sites).append(spec.model_dump(mode="json"))
    if errors:
        raise InvalidInput(f"{path} has invalid documents", errors)
    if not hosts:
        raise InvalidInput(f"{path} holds no Host documents", [FieldError("file", str(path))])
    return hosts, sites


def api_hosts(url: str, token: str | None) -> list[dict[str, Any]]:
    with make_client(url, token) as client:
        return list(client.paginate("/v1/hosts"))


def _desired(fleet: Path | None, url: str, gpuplane_token: str | None, marker: str
             ) -> list[Any]:
    from gpuplane.drivers.openstack.tree import fleet_tree

    hosts = fleet_hosts(fleet)[0] if fleet is not None else api_hosts(url, gpuplane_token)
    return fleet_tree(hosts, marker=marker)


def _placement(url: str, token: str) -> Any:
    from gpuplane.drivers.openstack.placement import PlacementClient

    if not url.startswith(("http://", "https://")):
        raise InvalidInput("--placement-url must be an http(s) URL",
                           [FieldError("--placement-url", f"got {url!r}")])
    return PlacementClient(url, token)


# -- output ------------------------------------------------------------------------------------
def _print_report(report: Any, as_json: bool) -> None:
    import json

    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    verb = "would change" if report.mode == "check" else "changed"
    for ch in report.changes[:SHOWN_CHANGES]:
        typer.echo(f"{ch.action:<22} {ch.target}  {ch.detail}")
    if len(report.changes) > SHOWN_CHANGES:
        typer.echo(f"... and {len(report.changes) - SHOWN_CHANGES} more (--json lists all)")
    for p in report.problems:
        typer.echo(f"problem: {p}", err=True)
    typer.echo(f"{report.hosts} hosts, {report.providers} providers managed by gpuplane; "
               f"{verb} {report.drift}; {report.writes} writes, {report.reads} reads, "
               f"{report.seconds:.1f} s")


# -- commands ----------------------------------------------------------------------------------
@app.command("sync")
def sync_cmd(placement_url: PlacementUrlOpt, token: PlacementTokenOpt = "admin",
             fleet: FleetOpt = None, as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL,
             gpuplane_token: GpuplaneTokenOpt = None, workers: WorkersOpt = 4,
             marker: MarkerOpt = DEFAULT_MARKER) -> None:
    """Push gpuplane's hosts into Placement as provider trees, writing only what differs.

    gpuplane providers of hosts that are not in the inventory (or the fleet file) are deleted.
    """
    _run(placement_url, token, fleet, as_json, url, gpuplane_token, workers, marker,
         check=False)


@app.command("check")
def check_cmd(placement_url: PlacementUrlOpt, token: PlacementTokenOpt = "admin",
              fleet: FleetOpt = None, as_json: JsonOpt = False, url: UrlOpt = DEFAULT_URL,
              gpuplane_token: GpuplaneTokenOpt = None, workers: WorkersOpt = 4,
              exit_code: Annotated[bool, typer.Option(
                  "--exit-code", help="Exit 1 when there is drift.")] = False,
              marker: MarkerOpt = DEFAULT_MARKER) -> None:
    """Report the drift between gpuplane and Placement; changes nothing."""
    drift = _run(placement_url, token, fleet, as_json, url, gpuplane_token, workers, marker,
                 check=True)
    if exit_code and drift:
        raise typer.Exit(1)


@guarded
def _run(placement_url: str, token: str, fleet: Path | None, as_json: bool, url: str,
         gpuplane_token: str | None, workers: int, marker: str, *, check: bool) -> int:
    import re

    from gpuplane.drivers.openstack.sync import run_sync

    if not re.fullmatch(r"CUSTOM_[A-Z0-9_]+", marker):
        raise InvalidInput("--marker must be a custom trait name such as CUSTOM_GPUPLANE_MANAGED",
                           [FieldError("--marker", f"got {marker!r}")])
    desired = _desired(fleet, url, gpuplane_token, marker)
    with _placement(placement_url, token) as client:
        report = run_sync(client, desired, check=check, workers=workers, marker=marker)
    _print_report(report, as_json)
    if report.problems and not check:
        raise typer.Exit(1)
    return report.drift


@app.command("import")
def import_cmd(placement_url: PlacementUrlOpt, token: PlacementTokenOpt = "admin",
               output: Annotated[ImportFormat, typer.Option("--output", "-o")] = ImportFormat.yaml,
               fleet: FleetOpt = None,
               site: Annotated[list[str] | None, typer.Option(
                   "--site", show_default=False,
                   help="A gpuplane site name whose aggregate to recognise (repeatable).")] = None,
               workers: WorkersOpt = 4) -> None:
    """Print Placement's compute hosts as Site and Host documents for `gpuplane apply -f`."""
    _import(placement_url, token, output, fleet, site or [], workers)


@guarded
def _import(placement_url: str, token: str, output: ImportFormat, fleet: Path | None,
            sites: list[str], workers: int) -> None:
    import json

    import yaml

    from gpuplane.drivers.openstack.sync import read_all
    from gpuplane.drivers.openstack.tree import import_trees

    known: dict[str, dict[str, Any]] = {s: {"kind": "Site", "name": s} for s in sites}
    if fleet is not None:
        for s in fleet_hosts(fleet)[1]:
            known[s["name"]] = {"kind": "Site", **s}
    with _placement(placement_url, token) as client:
        result = import_trees(read_all(client, workers=workers), known)
    docs = [known.get(s, {"kind": "Site", "name": s}) for s in result.sites] + result.hosts
    for line in result.skipped:
        typer.echo(f"skipped: {line}", err=True)
    for line in result.problems:
        typer.echo(f"problem: {line}", err=True)
    if output == ImportFormat.json:
        typer.echo(json.dumps(docs, indent=2))
    else:
        typer.echo(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=None), nl=False)
