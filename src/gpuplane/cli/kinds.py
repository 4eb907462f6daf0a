"""The resource kinds the CLI knows: names, aliases, REST paths, table columns.

One table (STYLE habit 4): ``get``, ``describe``, ``delete`` and ``apply`` all read it, and an
unknown kind lists the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuplane.domain.errors import InvalidInput


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    aliases: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...] = (("NAME", "name"),)
    #: YAML ``kind:`` values that ``apply`` sends to this path
    doc_kinds: tuple[str, ...] = ()
    #: objects belong to a project (``--project`` narrows the lookup)
    project_scoped: bool = False


KINDS: tuple[Kind, ...] = (
    Kind("site", "/v1/sites", ("sites",),
         (("NAME", "name"), ("JURISDICTION", "jurisdiction"), ("REGION", "region"),
          ("PROVIDER", "provider")), ("Site",)),
    Kind("host", "/v1/hosts", ("hosts", "node", "nodes"),
         (("NAME", "name"), ("SITE", "site"), ("STATE", "state"), ("DRIVER", "driver"),
          ("SIMULATED", "simulated"), ("GPUS", "gpu_summary"), ("CPU", "cpu_milli"),
          ("MEMORY_MIB", "memory_mib"), ("TEE", "tee")), ("Host",)),
    Kind("gpu", "/v1/gpus", ("gpus",),
         (("HOST", "host"), ("INDEX", "index"), ("MODEL", "model"), ("MODE", "mode"),
          ("MEMORY_MIB", "memory_mib"), ("USED_MILLI", "used_milli"), ("SIMULATED", "simulated"))),
    Kind("organisation", "/v1/organisations", ("organisations", "org", "orgs", "organization",
                                                "organizations"),
         (("NAME", "name"), ("DISPLAY NAME", "display_name")), ("Organisation", "Organization")),
    Kind("project", "/v1/projects", ("projects", "proj"),
         (("NAME", "name"), ("ORGANISATION", "org"), ("COHORT", "cohort"), ("WEIGHT", "weight")),
         ("Project",)),
    Kind("quota", "/v1/quotas", ("quotas",),
         (("PROJECT", "project"), ("RESOURCE", "resource"), ("FLAVOR", "flavor"),
          ("GUARANTEED", "guaranteed"), ("BORROWING_LIMIT", "borrowing_limit"),
          ("LENDING_LIMIT", "lending_limit")), ("Quota",)),
    Kind("priorityclass", "/v1/priority-classes", ("priorityclasses", "pc", "priority-class",
                                                    "priority-classes"),
         (("NAME", "name"), ("VALUE", "value"), ("PREEMPTIBLE", "preemptible"),
          ("DEFAULT", "is_default")), ("PriorityClass",)),
    Kind("user", "/v1/users", ("users",),
         (("NAME", "name"), ("EMAIL", "email"), ("ORGANISATION", "org")), ("User",)),
    Kind("workload", "/v1/workloads", ("workloads", "wl", "job", "jobs", "service", "services"),
         (("NAME", "name"), ("PROJECT", "project"), ("KIND", "kind"), ("PHASE", "phase"),
          ("TASKS", "task_summary"), ("WHERE", "hosts"), ("REASON", "pending_reason.message")),
         ("Workload", "Job", "Service", "Batch", "Agent"), project_scoped=True),
    Kind("event", "/v1/events", ("events", "ev"),
         (("AGE", "at"), ("TYPE", "type"), ("REASON", "reason"), ("OBJECT", "object"),
          ("MESSAGE", "message"))),
)

_BY_NAME = {alias: k for k in KINDS for alias in (k.name, *k.aliases)}
_BY_DOC = {dk.lower(): k for k in KINDS for dk in k.doc_kinds}


def kind_named(name: str) -> Kind:
    """The kind called ``name`` (any alias, case-insensitive) or ``InvalidInput`` listing them."""
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise InvalidInput(f"unknown kind {name!r}; valid kinds: "
                           f"{', '.join(k.name for k in KINDS)}",
                           code="gpuplane.cli.unknown_kind") from None


def kind_of_doc(doc_kind: str) -> Kind | None:
    return _BY_DOC.get(doc_kind.lower())


def doc_kinds() -> list[str]:
    return [dk for k in KINDS for dk in k.doc_kinds]
