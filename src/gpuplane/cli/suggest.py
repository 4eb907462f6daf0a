""""Did you mean": when the server does not know a name the user typed (a project, a GPU model,
a priority class, any object named on the command line), say the nearest real one and the
command that lists them, as click does for options and git for commands.

Computed at the edge, from what the caller may list: the suggestions never name another
tenant's objects, since the lists come from the same API calls ``gpuplane get`` makes. A list
the caller may not read (or a server that does not answer) leaves the server's message as it
was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from gpuplane.domain.errors import (FieldError, GpuplaneError, InvalidInput, NotFound,
                                    nearest_name)

#: at most this many known values are spelled out when none is near
SPELL_OUT = 8


def unknown(what: str, value: str, choices: Iterable[str], command: str) -> str:
    """``unknown project 'visoin'; did you mean 'vision'? (list them: gpuplane get projects)``."""
    pool = sorted(set(choices))
    near = nearest_name(value, pool)
    text = f"unknown {what} {value!r}"
    if near is not None:
        text += f"; did you mean {near!r}?"
    elif not pool:
        text += f"; there is none{' you can see' if what == 'project' else ''}"
    elif len(pool) <= SPELL_OUT:
        text += f"; known: {', '.join(pool)}"
    return f"{text} (list them: {command})"


# -- what each name refers to -------------------------------------------------------------------
def _names(path: str, field: str = "name") -> Callable[[Any], list[str]]:
    return lambda client: [str(i.get(field)) for i in client.paginate(path) if i.get(field)]


def _jurisdictions(client: Any) -> list[str]:
    """Jurisdictions of the sites, with their prefixes (``EU`` for ``EU/DE``), as the
    residency check accepts them."""
    out: set[str] = set()
    for s in client.paginate("/v1/sites"):
        j = s.get("jurisdiction")
        if j:
            out.update({j, j.split("/", 1)[0]})
    return sorted(out)


#: a name's kind -> (how to list the real ones, the command that lists them)
REFERENCES: dict[str, tuple[Callable[[Any], list[str]], str]] = {
    "project": (_names("/v1/projects"), "gpuplane get projects"),
    "organisation": (_names("/v1/organisations"), "gpuplane get organisations"),
    "site": (_names("/v1/sites"), "gpuplane get sites"),
    "host": (_names("/v1/hosts"), "gpuplane get hosts"),
    "priority class": (_names("/v1/priority-classes"), "gpuplane get priorityclasses"),
    "GPU model": (lambda c: [str(m) for m in c.get_json("/v1/gpu-models")], "gpuplane get gpus"),
    "jurisdiction": (_jurisdictions, "gpuplane get sites"),
    "user": (_names("/v1/users"), "gpuplane get users"),
    "workload": (_names("/v1/workloads"), "gpuplane get workloads"),
}

#: fields of request bodies that name another object: loc pattern -> what they name
FIELD_REFERENCES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^project$"), "project"),
    (re.compile(r"^organisation$"), "organisation"),
    (re.compile(r"^site$"), "site"),
    (re.compile(r"^priority_class$"), "priority class"),
    (re.compile(r"^tasks\[\d+\]\.resources\.gpu_models\[\d+\]$"), "GPU model"),
    (re.compile(r"^residency\.jurisdictions\[\d+\]$"), "jurisdiction"),
)

#: not-found codes of the API -> the body field that named the missing object
NOT_FOUND_FIELDS = {"gpuplane.project.not_found": ("project", "project"),
                    "gpuplane.organisation.not_found": ("organisation", "organisation"),
                    "gpuplane.site.not_found": ("site", "site"),
                    "gpuplane.priority_class.not_found": ("priority_class", "priority class"),
                    "gpuplane.user.not_found": ("user", "user")}


def choices_of(client: Any, what: str, cache: dict[str, list[str] | None] | None = None
               ) -> list[str] | None:
    """The real values of ``what`` the caller may list, or None when they cannot be listed."""
    cache = {} if cache is None else cache
    if what not in cache:
        try:
            cache[what] = REFERENCES[what][0](client)
        except GpuplaneError:
            cache[what] = None
    return cache[what]


def value_at(body: Any, loc: str) -> Any:
    """The value at ``loc`` (``tasks[0].resources.gpu_models[1]``) of a request body."""
    cur = body
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", loc):
        try:
            cur = cur[int(index)] if index else cur[name]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _same(exc: GpuplaneError, detail: str, errors: list[FieldError]) -> GpuplaneError:
    """A copy of ``exc`` (same class, code and HTTP status) with a new detail and errors."""
    if isinstance(exc, NotFound):
        new: GpuplaneError = NotFound(detail, code=exc.code)
        new.errors = errors
    elif isinstance(exc, InvalidInput):
        new = InvalidInput(detail, errors, code=exc.code)
    else:
        new = GpuplaneError(exc.code, detail, errors)
    if hasattr(exc, "status"):
        new.status = exc.status  # type: ignore[attr-defined]
    return new


def for_body(client: Any, exc: GpuplaneError, body: dict[str, Any]) -> GpuplaneError:
    """``exc`` answered to a request with ``body``, with a suggestion for every name in it the
    server did not know (the field named)."""
    cache: dict[str, list[str] | None] = {}
    if exc.code in NOT_FOUND_FIELDS:
        field, what = NOT_FOUND_FIELDS[exc.code]
        value = body.get(field)
        known = choices_of(client, what, cache) if isinstance(value, str) else None
        if known is not None and value not in known:
            return _same(exc, f"{what} {value!r} not found",
                         [FieldError(field, unknown(what, value, known, REFERENCES[what][1]))])
        return exc
    if not exc.errors:
        return exc
    errors, changed = [], False
    for e in exc.errors:
        what = next((w for pattern, w in FIELD_REFERENCES if pattern.match(e.loc)), None)
        value = value_at(body, e.loc) if what else None
        known = choices_of(client, what, cache) if isinstance(value, str) and what else None
        if known is not None and value not in known:
            errors.append(FieldError(e.loc, unknown(what, value, known, REFERENCES[what][1])))
            changed = True
        else:
            errors.append(e)
    return _same(exc, exc.detail, errors) if changed else exc


def for_name(client: Any, exc: GpuplaneError, what: str, value: str,
             lister: Callable[[Any], list[str]] | None = None, command: str | None = None
             ) -> GpuplaneError:
    """``exc`` (a not-found answer for ``value``, a ``what`` named on the command line) with
    the nearest real name and the command that lists them."""
    if not isinstance(exc, NotFound) and getattr(exc, "status", None) != 404:
        return exc
    default = REFERENCES.get(what)
    lister = lister or (default[0] if default else None)
    command = command or (default[1] if default else None)
    if lister is None or command is None:
        return exc
    try:
        known = lister(client)
    except GpuplaneError:
        return exc
    if value in known:
        return exc
    return _same(exc, unknown(what, value, known, command), list(exc.errors))
