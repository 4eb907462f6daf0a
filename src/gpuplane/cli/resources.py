"""``gpuplane apply | get | describe | delete``: declarative objects over the REST API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuplane.cli import projects, suggest
from gpuplane.cli.common import (DEFAULT_URL, Output, OutputOpt, ProjectOpt, TokenOpt, UrlOpt,
                                 guarded, make_client)
from gpuplane.cli.kinds import Kind, doc_kinds, enrich, gpu_row, kind_named, kind_of_doc
from gpuplane.cli.render import dump, show, table
from gpuplane.domain.errors import Conflict, FieldError, GpuplaneError, InvalidInput, NotFound

KindArg = Annotated[str, typer.Argument(help="Kind: site, host, gpu, organisation, project, "
                                             "quota, priorityclass, user, workload, event.")]
#: ``get events`` looks up at most this many workload names one by one (else lists them all)
NAME_LOOKUPS = 20


@contextlib.contextmanager
def suggesting(client, kind: Kind, name: str | None, project: str | None  # noqa: ANN001
               ) -> Iterator[None]:
    """Turn a not-found answer for a name typed on the command line (the object's, or the
    ``--project``'s) into "unknown ...; did you mean ...? (list them: gpuplane get ...)"."""
    try:
        yield
    except GpuplaneError as exc:
        if exc.code == "gpuplane.project.not_found" and (project or kind.name in (
                "project", "quota")):
            ref = project or (name or "").split("/", 1)[0]
            raise suggest.for_name(client, exc, "project", ref) from None
        if name is None or kind.name == "quota":
            raise
        if kind.name == "gpu":
            raise suggest.for_name(client, exc, "host", name) from None
        params = {"project": project} if kind.project_scoped and project else {}

        def names(c) -> list[str]:  # noqa: ANN001
            return [str(i["name"]) for i in c.paginate(kind.path, **params) if i.get("name")]
        command = f"gpuplane get {kind.aliases[0]}" + (f" -p {project}" if params else "")
        raise suggest.for_name(client, exc, kind.name, name, names, command) from None


def with_workload_names(client, events: list[dict[str, Any]],  # noqa: ANN001
                        project: str | None) -> list[dict[str, Any]]:
    """Events with ``workload`` as the workload's name (the API gives its id)."""
    ids = {e["workload"] for e in events if e.get("workload")}
    names: dict[str, str] = {}
    if len(ids) <= NAME_LOOKUPS:  # a few: one by one; many: one listing
        for ident in ids:
            with contextlib.suppress(NotFound):  # deleted meanwhile: its id stays
                names[ident] = client.get_json(f"/v1/workloads/{ident}")["name"]
    else:
        params = {"project": project} if project else {}
        names = {w["id"]: w["name"] for w in client.paginate("/v1/workloads", **params)
                 if w["id"] in ids}
    return [{**e, "workload_id": e.get("workload"),
             "workload": names.get(e.get("workload"), e.get("workload"))} for e in events]


def object_path(kind: Kind, name: str) -> str:
    return f"{kind.path}/{name}"


def fetch_object(client, kind: Kind, name: str, project: str | None) -> dict[str, Any]:  # noqa: ANN001
    params = {"project": project} if kind.project_scoped and project else {}
    return client.get_json(object_path(kind, object_ref(client, kind, name)), **params)


def object_ref(client, kind: Kind, name: str) -> str:  # noqa: ANN001
    """What the API names ``name`` by. Quotas have numeric ids; people name them
    ``PROJECT[/RESOURCE[/FLAVOR]]`` (resource default ``gpu``, flavor default ``*``)."""
    if kind.name != "quota" or name.isdigit():
        return name
    parts = name.split("/", 2)
    project, resource, flavor = (parts + ["gpu", "*"][len(parts) - 1:])[:3]
    for q in client.paginate(kind.path, project=project):
        if q["resource"] == resource and q["flavor"] == flavor:
            return str(q["id"])
    raise NotFound(f"project {project!r} has no {resource} quota for flavor {flavor!r}; list "
                   f"them with `gpuplane get quotas`", code="gpuplane.quota.not_found")


# -- apply -----------------------------------------------------------------
def load_documents(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Read a (multi-document) YAML file; raise ``InvalidInput`` naming line and column or the
    field at fault. Returns (document number, document) for non-empty documents."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8") if str(path) != "-" else typer.get_text_stream(
            "stdin").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                           [FieldError("file", str(path))]) from None
    try:
        raw = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"{path} is not valid YAML ({where}): {problem}",
                           [FieldError(f"{path.name}:{mark.line + 1 if mark else '?'}", problem)]
                           ) from None
    docs: list[tuple[int, dict[str, Any]]] = []
    errors: list[FieldError] = []
    for i, doc in enumerate(raw):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            errors.append(FieldError(f"documents[{i}]", "must be a mapping with a 'kind' field"))
            continue
        kind = doc.get("kind")
        if not isinstance(kind, str) or kind_of_doc(kind) is None:
            errors.append(FieldError(f"documents[{i}].kind",
                                     f"{kind!r} is not one of {', '.join(doc_kinds())}"))
            continue
        docs.append((i, doc))
    if errors:
        raise InvalidInput(f"{path} has documents gpuplane cannot apply", errors)
    if not docs:
        raise InvalidInput(f"{path} holds no documents", [FieldError("file", "empty")])
    return docs


def request_body(doc: dict[str, Any]) -> tuple[Kind, dict[str, Any]]:
    kind = kind_of_doc(doc["kind"])
    assert kind is not None
    body = {k: v for k, v in doc.items() if k not in ("kind", "apiVersion")}
    if kind.name == "workload" and doc["kind"].lower() != "workload":
        body["kind"] = doc["kind"].lower()
    return kind, body


def describe_doc(doc: dict[str, Any], body: dict[str, Any]) -> str:
    ident = body.get("name") or "/".join(str(body.get(k)) for k in ("project", "resource", "flavor")
                                         if body.get(k) is not None)
    return f"{doc['kind'].lower()}/{ident or '?'}"


def apply_one(client, kind: Kind, body: dict[str, Any]) -> str:  # noqa: ANN001
    """Create one object; an object that already exists is left as it is (quotas are set)."""
    if kind.name == "quota":
        client.put_json(kind.path, body)
        return "configured"
    if kind.name == "gpu":
        raise InvalidInput("GPUs are declared inside their Host document",
                           [FieldError("kind", "use kind: Host with a gpus list")])
    try:
        client.post_json(kind.path, body)
        return "created"
    except Conflict as exc:
        if exc.code.endswith(".exists") or exc.code == "gpuplane.conflict":
            return "unchanged (exists)"
        raise


def apply(
    file: Annotated[Path, typer.Option("--filename", "-f", help="YAML file (multi-document); "
                                                               "'-' reads stdin.")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create (or update) the objects described in a YAML file, in document order."""
    _apply(file, url, token, output)


@guarded
def _apply(file: Path, url: str, token: str | None, output: Output) -> None:
    docs = load_documents(file)
    failures = 0
    results = []
    with make_client(url, token) as client:
        for i, doc in docs:
            kind, body = request_body(doc)
            label = describe_doc(doc, body)
            try:
                try:
                    outcome = apply_one(client, kind, body)
                except GpuplaneError as exc:
                    raise suggest.for_body(client, exc, body) from None
            except GpuplaneError as exc:
                failures += 1
                prefix = f"{file.name}: document {i} ({label})"
                typer.echo(f"error: {prefix}: {exc.detail} [{exc.code}]", err=True)
                for e in exc.errors:
                    typer.echo(f"  - {e.loc}: {e.msg}", err=True)
                if exc.code == "gpuplane.client.unreachable":
                    raise typer.Exit(1) from None
                continue
            results.append({"object": label, "result": outcome})
            if output == Output.table:
                typer.echo(f"{label} {outcome}")
    if output != Output.table:
        dump(results, output)
    if failures:
        raise typer.Exit(2)


# -- get / describe / delete ----------------------------------------------
def get(
    kind: KindArg,
    name: Annotated[str | None, typer.Argument(help="One object (default: list all).")] = None,
    project: ProjectOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    output: OutputOpt = Output.table,
    watch: Annotated[bool, typer.Option("--watch", "-w",
                                        help="Show it again every --interval seconds until "
                                             "Ctrl-C, like `kubectl get -w` / `watch`.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, max=3600,
                                            help="Seconds between refreshes with --watch.")] = 2.0,
) -> None:
    """List objects of a kind, or show one."""
    if not watch:
        _get(kind, name, project, url, token, output)
        return
    import time

    try:
        while True:
            typer.clear()
            typer.echo(f"every {interval:g}s: gpuplane get {kind}{' ' + name if name else ''}"
                       f"    {time.strftime('%H:%M:%S')}\n")
            _get(kind, name, project, url, token, output)
            time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@guarded
def _get(kind_name: str, name: str | None, project: str | None, url: str, token: str | None,
         output: Output) -> None:
    kind = kind_named(kind_name)
    with make_client(url, token) as client, suggesting(client, kind, name, project):
        if kind.name == "gpu":  # NAME: the GPUs of that host
            items = [gpu_row(g) for g in client.paginate(kind.path)
                     if name is None or g.get("host") == name]
            if name and not items:
                fetch_object(client, kind_named("host"), name, None)  # 404 names the host
        elif name:
            items = [fetch_object(client, kind, name, project)]
        else:
            params = {"project": project} if kind.project_scoped and project else {}
            items = list(client.paginate(kind.path, **params))
        if kind.name == "event" and output == Output.table:
            items = with_workload_names(client, items, project)
    if name and output != Output.table and kind.name != "gpu":
        dump(items[0], output)
    elif output != Output.table:
        show(items, kind.columns, output)
    else:
        show([enrich(kind, i) for i in items], kind.columns, output,
             empty=f"No {kind.name}s found.")


def describe(
    kind: KindArg,
    name: Annotated[str, typer.Argument(help="Object name.")],
    project: ProjectOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show one object in full, with its events and (for workloads) why it is pending."""
    _describe(kind, name, project, url, token, output)


@guarded
def _describe(kind_name: str, name: str, project: str | None, url: str, token: str | None,
              output: Output) -> None:
    kind = kind_named(kind_name)
    with make_client(url, token) as client, suggesting(client, kind, name, project):
        obj = fetch_object(client, kind, name, project)
        if kind.name == "project":
            projects.show(projects.read(client, obj["name"], obj), output)
            return
        events: list[dict[str, Any]] = []
        pending: dict[str, Any] | None = None
        if kind.name == "workload":
            ident = obj.get("id") or name
            events = list(client.paginate(f"{kind.path}/{ident}/events"))
            pending = client.get_json(f"{kind.path}/{ident}/pending")
    if output != Output.table:
        dump({**obj, "events": events, **({"pending": pending} if pending else {})}, output)
        return
    status = obj.get("status") or {}
    body = {k: v for k, v in obj.items() if k not in ("spec", "status", "gpus")}
    body.update({k: v for k, v in status.items() if k not in ("tasks", "pending_reason")})
    dump({k: _when(v) if k.endswith("_at") else v for k, v in body.items()}, Output.yaml)
    if obj.get("gpus"):
        typer.echo("")
        table([gpu_row(g, obj) for g in obj["gpus"]], kind_named("gpu").columns[1:6],
              title="GPUs")
    if pending and status.get("phase") == "Pending":
        reason = pending.get("reason") or {}
        typer.echo("")
        pos = pending.get("queue_position")
        typer.echo(f"Pending: {reason.get('message') or 'waiting for the next scheduling cycle'}"
                   + (f" [{reason.get('code')}]" if reason.get("code") else "")
                   + (f"; queue position {pos}" if pos else ""))
        if pending.get("retry_after_s"):
            typer.echo(f"  retry after {pending['retry_after_s']:.0f}s")
    if status.get("tasks"):
        typer.echo("")
        table(status["tasks"], (("TASK", "index"), ("PHASE", "phase"), ("HOST", "placement.host"),
                                ("GPUS", "placement.gpu_indices"),
                                ("GPU_MILLI", "placement.gpu_milli"), ("SIMULATED", "simulated"),
                                ("ATTEMPT", "attempt"), ("EXIT", "exit_code"),
                                ("MESSAGE", "message")), title="Tasks")
        preempted = [t for t in status["tasks"] if t.get("preemption")]
        if preempted:
            typer.echo("")
            table([{"index": t["index"], **t["preemption"]} for t in preempted],
                  (("TASK", "index"), ("FOR", "beneficiary_name"), ("GRACE_S", "grace_s"),
                   ("OUTCOME", "outcome"), ("LOST_GPU_S", "lost_gpu_s"),
                   ("SINCE_LAST", "lost_since")), title="Last preemption")
    if obj.get("spec"):
        typer.echo("")
        typer.echo("Spec:")
        import yaml

        typer.echo(yaml.safe_dump(obj["spec"], sort_keys=False).rstrip())
    typer.echo("")
    if events:
        table(events, (("AGE", "at"), ("TYPE", "type"), ("REASON", "reason"),
                       ("HOST", "host"), ("MESSAGE", "message")), title="Events")
    else:
        typer.echo("Events: none")


def _when(value: Any) -> Any:
    """Epoch seconds -> ISO 8601 UTC for people (None stays None)."""
    import datetime as dt

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc).isoformat(timespec="seconds")
    return value


def delete(
    kind: KindArg,
    name: Annotated[str, typer.Argument(help="Object name.")],
    project: ProjectOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Delete an object (a running workload is cancelled first)."""
    _delete(kind, name, project, url, token)


@guarded
def _delete(kind_name: str, name: str, project: str | None, url: str, token: str | None) -> None:
    kind = kind_named(kind_name)
    with make_client(url, token) as client, suggesting(client, kind, name, project):
        if kind.name == "workload":
            _delete_workload(client, kind, name, project)
        else:
            client.delete(object_path(kind, object_ref(client, kind, name)))
    typer.echo(f"{kind.name}/{name} deleted")


def _delete_workload(client, kind: Kind, name: str, project: str | None,  # noqa: ANN001
                     wait_s: float = 60.0) -> None:
    """Cancel an active workload, wait for it to stop, then delete it."""
    import time

    params = {"project": project} if project else {}
    obj = fetch_object(client, kind, name, project)
    path = object_path(kind, obj["id"])
    terminal = {"Succeeded", "Failed", "Cancelled", "Lost"}
    if obj["status"]["phase"] not in terminal:
        client.post_json(f"{path}/cancel", None, **params)
        typer.echo(f"{kind.name}/{name} cancel requested; waiting for it to stop", err=True)
        deadline = time.monotonic() + wait_s
        while client.get_json(path)["status"]["phase"] not in terminal:
            if time.monotonic() > deadline:
                raise GpuplaneError("gpuplane.workload.active",
                                    f"workload {name!r} has not stopped after {wait_s:.0f}s; "
                                    "run the delete again later")
            time.sleep(0.5)
    client.delete(path)


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("get")(get)
    app.command("describe")(describe)
    app.command("delete")(delete)


__all__ = ["register", "load_documents"]
