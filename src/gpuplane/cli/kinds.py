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
         (("NAME", "name"), ("SITE", "site"), ("JURISDICTION", "jurisdiction"),
          ("STATE", "state"), ("DRIVER", "driver"), ("SIMULATED", "simulated"),
          ("GPUS", "gpu_summary"), ("CPU", "cpu"), ("MEMORY_MIB", "memory_mib"), ("TEE", "tee")),
         ("Host",)),
    Kind("gpu", "/v1/gpus", ("gpus",),
         (("HOST", "host"), ("INDEX", "index"), ("MODEL", "model"), ("MODE", "mode"),
          ("MEMORY_MIB", "memory_mib"), ("MIG", "mig_summary"), ("ALLOCATED", "allocated"),
          ("SITE", "site"), ("SIMULATED", "simulated"))),
    Kind("organisation", "/v1/organisations", ("organisations", "org", "orgs", "organization",
                                                "organizations"),
         (("NAME", "name"), ("DISPLAY NAME", "display_name")), ("Organisation", "Organization")),
    Kind("project", "/v1/projects", ("projects", "proj"),
         (("NAME", "name"), ("ORGANISATION", "organisation"), ("COHORT", "cohort"),
          ("WEIGHT", "weight")), ("Project",)),
    Kind("quota", "/v1/quotas", ("quotas",),
         (("ID", "id"), ("PROJECT", "project"), ("RESOURCE", "resource"), ("FLAVOR", "flavor"),
          ("GUARANTEED", "guaranteed"), ("BORROWING_LIMIT", "borrowing_limit"),
          ("LENDING_LIMIT", "lending_limit")), ("Quota",)),
    Kind("priorityclass", "/v1/priority-classes", ("priorityclasses", "pc", "priority-class",
                                                    "priority-classes"),
         (("NAME", "name"), ("VALUE", "value"), ("PREEMPTIBLE", "preemptible"),
          ("DEFAULT", "default")), ("PriorityClass",)),
    Kind("user", "/v1/users", ("users",),
         (("NAME", "name"), ("EMAIL", "email"), ("ORGANISATION", "organisation")), ("User",)),
    Kind("workload", "/v1/workloads", ("workloads", "wl", "job", "jobs", "service", "services"),
         (("NAME", "name"), ("PROJECT", "project"), ("KIND", "kind"), ("PHASE", "status.phase"),
          ("TASKS", "task_summary"), ("WHERE", "where"), ("AGE", "status.submitted_at"),
          ("REASON", "status.pending_reason.message")),
         ("Workload", "Job", "Service", "Batch", "Agent"), project_scoped=True),
    Kind("event", "/v1/events", ("events", "ev"),
         (("AGE", "at"), ("TYPE", "type"), ("REASON", "reason"), ("PROJECT", "project"),
          ("WORKLOAD", "workload"), ("TASK", "task_index"), ("HOST", "host"),
          ("MESSAGE", "message")), project_scoped=True),
)


def enrich(kind: Kind, item: dict) -> dict:
    """Add the summary columns tables show (computed from the API's fields)."""
    if kind.name == "host":
        gpus = item.get("gpus") or []
        models: dict[str, int] = {}
        for g in gpus:
            key = g.get("model", "?") + (" (mig)" if g.get("mode") == "mig" else
                                         " (shared)" if g.get("mode") == "shared" else "")
            models[key] = models.get(key, 0) + 1
        item = {**item, "gpu_summary": ", ".join(f"{n}x {m}" for m, n in models.items()) or "-"}
    elif kind.name == "workload":
        tasks = (item.get("status") or {}).get("tasks") or []
        phases: dict[str, int] = {}
        for t in tasks:
            phases[t.get("phase", "?")] = phases.get(t.get("phase", "?"), 0) + 1
        hosts = sorted({(t.get("placement") or {}).get("host") for t in tasks} - {None})
        placed = [t for t in tasks if t.get("placement")]
        tags = [tag for tag, on in (("simulated", any(t.get("simulated") for t in placed)),
                                    ("borrowed", any(t["placement"].get("borrowed")
                                                     for t in placed))) if on]
        where = ",".join(hosts) + (f" ({', '.join(tags)})" if tags and hosts else "")
        item = {**item, "task_summary": " ".join(f"{n} {p}" for p, n in phases.items()),
                "where": where or None}
    return item


def gpu_row(gpu: dict, host: dict | None = None) -> dict:
    """A GPU as a table row (``host`` given when the GPU comes from a host object)."""
    mig = gpu.get("mig_layout") or []
    extra = {"host": host["name"], "site": host.get("site"),
             "simulated": host.get("simulated")} if host else {}
    return {**gpu, **extra, "mig_summary": ",".join(f"{m.get('profile')}@{m.get('start')}"
                                                    for m in mig) or None}


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
