"""``gpuplane explain KIND[.FIELD...]``: the fields a YAML document may hold, as ``kubectl
explain`` shows them, read from the server's own OpenAPI document (``/openapi.json``, no token),
so it always matches the server that will check the document.

``gpuplane explain workload.tasks.resources`` lists ``cpu``, ``memory``, ``gpus`` ... with type,
default and description; an unknown field in a document is refused by the server with the
nearest real one and this command.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gpuplane.cli.common import (DEFAULT_URL, Output, OutputOpt, TokenOpt, UrlOpt, guarded,
                                 make_client)
from gpuplane.cli.render import dump, table
from gpuplane.domain.errors import InvalidInput, nearest_name

#: the schema behind each kind whose documents ``apply`` sends (``<Kind>Spec``) and aliases
ALIASES = {"job": "workload", "service": "workload", "batch": "workload", "agent": "workload",
           "wl": "workload", "org": "organisation", "organization": "organisation",
           "pc": "priorityclass", "node": "host"}


def explain(
    what: Annotated[str, typer.Argument(help="KIND or KIND.FIELD.FIELD, e.g. workload, "
                                             "workload.tasks.resources, host.gpus.")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """The fields of a kind's YAML document (or of one of its fields), with type and meaning."""
    _explain(what, url, token, output)


@guarded
def _explain(what: str, url: str, token: str | None, output: Output) -> None:
    with make_client(url, token) as client:
        doc = client.get_json("/openapi.json")
    schemas = doc.get("components", {}).get("schemas", {})
    kinds = {n.removesuffix("Spec").lower(): n for n in schemas if n.endswith("Spec")}
    head, *path = what.split(".")
    head = ALIASES.get(head.lower(), head.lower())
    if head not in kinds and head.endswith("s") and head[:-1] in kinds:
        head = head[:-1]  # plurals, as `get` takes them
    if head not in kinds:
        near = nearest_name(head, kinds)
        raise InvalidInput(f"unknown kind {what.split('.')[0]!r}"
                           + (f"; did you mean {near!r}?" if near else "")
                           + f" (kinds: {', '.join(sorted(kinds))})",
                           code="gpuplane.cli.unknown_kind")
    schema: dict[str, Any] = {"$ref": f"#/components/schemas/{kinds[head]}"}
    walked = [head]
    for part in path:
        obj = _object(schema, schemas)
        props = (obj or {}).get("properties", {})
        if part not in props:
            near = nearest_name(part, props)
            raise InvalidInput(f"{'.'.join(walked)} has no field {part!r}"
                               + (f"; did you mean {near!r}?" if near else "")
                               + (f" (fields: {', '.join(props)})" if props else ""),
                               code="gpuplane.cli.unknown_field")
        schema = props[part]
        walked.append(part)
    obj = _object(schema, schemas)
    fields = [{"field": name, "type": type_of(prop, schemas),
               "required": name in (obj or {}).get("required", []),
               "default": prop.get("default"), "description": prop.get("description")}
              for name, prop in ((obj or {}).get("properties") or {}).items()]
    if output != Output.table:
        dump({"kind": head, "path": ".".join(walked), "type": type_of(schema, schemas),
              "description": _resolve(schema, schemas).get("description"), "fields": fields},
             output)
        return
    typer.echo(f"KIND:  {head}\nFIELD: {'.'.join(walked)} <{type_of(schema, schemas)}>")
    desc = schema.get("description") or _resolve(schema, schemas).get("description")
    if desc:
        typer.echo(f"\n{desc.strip()}")
    if fields:
        typer.echo("")
        table(fields, (("FIELD", "field"), ("TYPE", "type"), ("REQUIRED", "required"),
                       ("DEFAULT", "default"), ("DESCRIPTION", "description")))


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def _object(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema a field holds: through ``$ref``, ``X | null``, list items and mapping
    values; None for a plain value."""
    seen = 0
    while seen < 16:
        seen += 1
        schema = _resolve(schema, schemas)
        if "properties" in schema:
            return schema
        if "anyOf" in schema:
            members = [m for m in schema["anyOf"] if m.get("type") != "null"]
            nested = [m for m in members if _object(m, schemas) is not None]
            if not nested:
                return None
            schema = nested[0]
        elif schema.get("type") == "array" and "items" in schema:
            schema = schema["items"]
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return None
    return None


def type_of(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    """``integer``, ``string | null``, ``[]TaskGroup``, ``map[string]string``, ``Resources``."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(type_of(m, schemas) for m in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type", "any")
    if kind == "array":
        return "[]" + type_of(schema.get("items", {}), schemas)
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map[string]" + type_of(schema["additionalProperties"], schemas)
    return str(kind)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
