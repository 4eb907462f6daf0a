"""gpuplane hosts as Placement provider trees, and back (pure: no I/O, no clock).

One host becomes one tree (docs/openstack.md has the table):

=================  =================================  ===========================================
provider           inventory                          traits / aggregates
=================  =================================  ===========================================
``<host>``         ``VCPU`` = cores, ``MEMORY_MB`` =   marker; TEE: ``HW_CPU_X86_AMD_SEV`` +
(compute node)     MiB (allocation ratio 1)           ``HW_CPU_X86_AMD_SEV_SNP`` (sev-snp),
                                                      ``HW_CPU_X86_INTEL_TDX`` (tdx); aggregate
                                                      ``uuid5(site)``
``<host>/numaN``   none                               marker, ``HW_NUMA_ROOT``
``<host>/gpuI``    whole: ``VGPU: 1``;                marker, ``CUSTOM_GPU_<MODEL>``,
(under its NUMA)   shared: ``CUSTOM_GPU_MILLI: 1000``; ``CUSTOM_GPU_MEMORY_MIB_<N>``; MIG:
                   mig: ``CUSTOM_MIG_<PROFILE>: n``    ``CUSTOM_GPU_MIG_MODE``
                   per profile of its layout
=================  =================================  ===========================================

UUIDs are ``uuid5(NAMESPACE, provider name)`` and site aggregates ``uuid5(NAMESPACE,
"site:" + site)``, so every gpuplane installation computes the same tree for the same host, and
a provider renamed or deleted behind gpuplane's back is recognised by its uuid. The marker trait
(``CUSTOM_GPUPLANE_MANAGED``) on every provider says which providers gpuplane owns.

Resource class choices: a whole GPU is one ``VGPU`` (a unit that is only ever allocated whole;
``whole_class="PGPU"`` or ``"PCI_DEVICE"`` model PCI passthrough instead); a shared GPU counts
milli-GPUs in ``CUSTOM_GPU_MILLI`` (gpuplane's own unit: 1000 = one GPU, so a free shared GPU
can still be taken whole); a MIG GPU offers the GPU instances that exist in its layout, one
custom class per profile (``1g.10gb`` -> ``CUSTOM_MIG_1G_10GB``, ``1g.10gb+me`` ->
``CUSTOM_MIG_1G_10GB_ME``). A MIG GPU without instances has no inventory: the alternative
layouts gpuplane could still create are exclusive, which Placement inventories cannot say.
"""

from __future__ import annotations

import hashlib
import re
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.inventory import KNOWN_GPU_MODELS, gpu_memory_mib
from gpuplane.domain.mig import MIG_MODELS, layout_from_profiles, mig_model_or_none
from gpuplane.domain.workloads import parse_memory_mib
from gpuplane.drivers.openstack.model import Inventory, ProviderState

NAMESPACE = uuidlib.UUID("69ed9d27-88a8-41b7-b45f-3f1379dee98e")
"""Namespace of gpuplane's provider and aggregate uuids (never change it: uuids would move)."""

MANAGED_TRAIT = "CUSTOM_GPUPLANE_MANAGED"
MIG_MODE_TRAIT = "CUSTOM_GPU_MIG_MODE"
NUMA_TRAIT = "HW_NUMA_ROOT"
GPU_MILLI = "CUSTOM_GPU_MILLI"
MIG_CLASS_PREFIX = "CUSTOM_MIG_"
MODEL_TRAIT_PREFIX = "CUSTOM_GPU_"
MEMORY_TRAIT_PREFIX = "CUSTOM_GPU_MEMORY_MIB_"
WHOLE_CLASSES = ("VGPU", "PGPU", "PCI_DEVICE")
TEE_TRAITS: Mapping[str, tuple[str, ...]] = {
    "sev-snp": ("HW_CPU_X86_AMD_SEV", "HW_CPU_X86_AMD_SEV_SNP"),
    "tdx": ("HW_CPU_X86_INTEL_TDX",),
}
MAX_NAME = 200  # Placement's limit on provider names
_NOT_CUSTOM = re.compile(r"[^A-Z0-9]+")
_HOST_NAME_BAD = re.compile(r"[^a-z0-9.-]+")


# -- names ---------------------------------------------------------------------------------
def custom_name(prefix: str, text: str) -> str:
    """``prefix`` + ``text`` in Placement's custom-name alphabet (``^CUSTOM_[A-Z0-9_]+$``):
    upper case, every run of other characters becomes one ``_``."""
    return prefix + _NOT_CUSTOM.sub("_", text.upper()).strip("_")


def model_trait(model: str) -> str:
    """``H100-80GB`` -> ``CUSTOM_GPU_H100_80GB``."""
    return custom_name(MODEL_TRAIT_PREFIX, model)


def memory_trait(memory_mib: int) -> str:
    return f"{MEMORY_TRAIT_PREFIX}{int(memory_mib)}"


def mig_class(profile: str) -> str:
    """``3g.40gb`` -> ``CUSTOM_MIG_3G_40GB``; ``1g.10gb+me`` -> ``CUSTOM_MIG_1G_10GB_ME``."""
    return custom_name(MIG_CLASS_PREFIX, profile.replace("+", "_"))


_MIG_CLASS_RE = re.compile(r"^CUSTOM_MIG_(\d+)G_(\d+)GB(_ME)?$")


def mig_profile_of_class(resource_class: str) -> str | None:
    """The MIG profile a ``CUSTOM_MIG_*`` class stands for, ``None`` when it is not one."""
    m = _MIG_CLASS_RE.match(resource_class)
    if not m:
        return None
    return f"{m.group(1)}g.{m.group(2)}gb" + ("+me" if m.group(3) else "")


def provider_uuid(name: str) -> str:
    return str(uuidlib.uuid5(NAMESPACE, name))


def site_aggregate(site: str) -> str:
    """The aggregate uuid of a gpuplane site."""
    return str(uuidlib.uuid5(NAMESPACE, f"site:{site}"))


def _provider_name(text: str) -> str:
    if len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{text[:MAX_NAME - 13]}~{digest}"


def numa_name(host: str, numa: int) -> str:
    return _provider_name(f"{host}/numa{numa}")


def gpu_name(host: str, index: int) -> str:
    return _provider_name(f"{host}/gpu{index}")


# -- gpuplane hosts in ---------------------------------------------------------------------
@dataclass(frozen=True)
class GpuView:
    index: int
    model: str
    memory_mib: int
    numa: int
    mode: str
    mig_profiles: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostView:
    """What the tree needs of a host, whatever it was read from (HostSpec document, the API's
    ``GET /v1/hosts`` item, a store ``HostRecord`` or a domain ``Host``)."""

    name: str
    site: str
    cpu_cores: int
    memory_mib: int
    tee: str | None
    gpus: tuple[GpuView, ...]


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _profiles(layout: Any) -> tuple[str, ...]:
    if layout is None:
        return ()
    instances = getattr(layout, "instances", layout)  # domain MigLayout or a list of mappings
    return tuple(str(_get(i, "profile")) for i in instances)


def host_view(host: Any) -> HostView:
    """Read a host from a mapping or record; raises ``InvalidInput`` naming every bad field."""
    errors: list[FieldError] = []
    name = _get(host, "name")
    if not isinstance(name, str) or not name:
        errors.append(FieldError("name", "must be a non-empty string"))
        name = "?"
    cpu_milli = _get(host, "cpu_milli")
    if cpu_milli is None:
        cpu = _get(host, "cpu", 0)
        cpu_milli = round(float(cpu) * 1000) if isinstance(cpu, (int, float)) else -1
    memory = _get(host, "memory_mib")
    if memory is None:
        try:
            memory = parse_memory_mib(_get(host, "memory", 0))
        except ValueError as exc:
            errors.append(FieldError("memory", str(exc)))
            memory = 0
    if not isinstance(cpu_milli, int) or cpu_milli < 0:
        errors.append(FieldError("cpu", "must be a non-negative number of cores"))
        cpu_milli = 0
    tee = _get(host, "tee")
    if tee is not None and tee not in TEE_TRAITS:
        errors.append(FieldError("tee", f"must be one of {', '.join(TEE_TRAITS)}, got {tee!r}"))
    gpus = []
    for i, g in enumerate(_get(host, "gpus") or ()):
        mode = _get(g, "mode", "whole")
        model = _get(g, "model")
        if mode not in ("whole", "shared", "mig"):
            errors.append(FieldError(f"gpus[{i}].mode", f"must be whole, shared or mig, got {mode!r}"))
        if not isinstance(model, str) or not model:
            errors.append(FieldError(f"gpus[{i}].model", "must be a non-empty string"))
            model = "?"
        mem = _get(g, "memory_mib", -1)
        mem = gpu_memory_mib(model) if mem is None or mem < 0 else int(mem)
        gpus.append(GpuView(index=int(_get(g, "index", i)), model=model, memory_mib=mem,
                            numa=int(_get(g, "numa", 0) or 0), mode=mode,
                            mig_profiles=_profiles(_get(g, "mig_layout"))))
    indices = [g.index for g in gpus]
    for dup in sorted({i for i in indices if indices.count(i) > 1}):
        errors.append(FieldError("gpus", f"GPU index {dup} is given twice"))
    if errors:
        raise InvalidInput(f"host {name!r} cannot be mapped to Placement", errors)
    return HostView(name=name, site=str(_get(host, "site", "") or ""),
                    cpu_cores=int(cpu_milli) // 1000, memory_mib=int(memory), tee=tee,
                    gpus=tuple(sorted(gpus, key=lambda g: g.index)))


def _gpu_inventory(gpu: GpuView, whole_class: str) -> dict[str, Inventory]:
    if gpu.mode == "whole":
        return {whole_class: Inventory(total=1)}
    if gpu.mode == "shared":
        return {GPU_MILLI: Inventory(total=1000)}
    counts: dict[str, int] = defaultdict(int)
    for profile in gpu.mig_profiles:
        counts[mig_class(profile)] += 1
    return {rc: Inventory(total=n) for rc, n in sorted(counts.items())}


def host_tree(host: Any, *, whole_class: str = "VGPU", marker: str = MANAGED_TRAIT
              ) -> tuple[ProviderState, ...]:
    """The desired provider tree of one host, parents before children."""
    if whole_class not in WHOLE_CLASSES:
        raise InvalidInput(f"whole_class must be one of {', '.join(WHOLE_CLASSES)}",
                           [FieldError("whole_class", f"got {whole_class!r}")])
    h = host if isinstance(host, HostView) else host_view(host)
    root_name = _provider_name(h.name)
    root = provider_uuid(root_name)
    inventories: dict[str, Inventory] = {}
    if h.cpu_cores >= 1:
        inventories["VCPU"] = Inventory(total=h.cpu_cores)
    if h.memory_mib >= 1:
        inventories["MEMORY_MB"] = Inventory(total=h.memory_mib)
    traits = {marker, *TEE_TRAITS.get(h.tee or "", ())}
    aggregates = frozenset({site_aggregate(h.site)} if h.site else ())
    out = [ProviderState(uuid=root, name=root_name, parent_uuid=None, inventories=inventories,
                         traits=frozenset(traits), aggregates=aggregates, kind="host")]
    numa_uuid: dict[int, str] = {}
    for numa in sorted({g.numa for g in h.gpus}):
        name = numa_name(h.name, numa)
        numa_uuid[numa] = provider_uuid(name)
        out.append(ProviderState(uuid=numa_uuid[numa], name=name, parent_uuid=root,
                                 traits=frozenset({marker, NUMA_TRAIT}), kind="numa"))
    for g in h.gpus:
        gtraits = {marker, model_trait(g.model)}
        if g.memory_mib > 0:
            gtraits.add(memory_trait(g.memory_mib))
        if g.mode == "mig":
            gtraits.add(MIG_MODE_TRAIT)
        name = gpu_name(h.name, g.index)
        out.append(ProviderState(uuid=provider_uuid(name), name=name,
                                 parent_uuid=numa_uuid[g.numa],
                                 inventories=_gpu_inventory(g, whole_class),
                                 traits=frozenset(gtraits), kind="gpu"))
    return tuple(out)


def fleet_tree(hosts: Iterable[Any], *, whole_class: str = "VGPU",
               marker: str = MANAGED_TRAIT) -> list[ProviderState]:
    """The desired providers of every host (each tree parents first); ``InvalidInput`` lists
    the problems of every bad host, and a host name given twice."""
    out: list[ProviderState] = []
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, host in enumerate(hosts):
        try:
            tree = host_tree(host, whole_class=whole_class, marker=marker)
        except InvalidInput as exc:
            errors.extend(FieldError(f"hosts[{i}].{e.loc}", e.msg) for e in exc.errors)
            continue
        if tree[0].uuid in seen:
            errors.append(FieldError(f"hosts[{i}].name", f"host {tree[0].name!r} given twice"))
            continue
        seen.add(tree[0].uuid)
        out.extend(tree)
    if errors:
        raise InvalidInput("some hosts cannot be mapped to Placement; fix the fields listed",
                           errors)
    return out


# -- Placement trees out (import) ----------------------------------------------------------
_KNOWN_MODELS = {model_trait(m): m for m in (*KNOWN_GPU_MODELS, *MIG_MODELS)}
_GPU_CLASSES = frozenset({*WHOLE_CLASSES, GPU_MILLI})
_NUM = re.compile(r"(\d+)")


def _natural(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in _NUM.split(text)]


def _host_name(text: str) -> str:
    name = _HOST_NAME_BAD.sub("-", text.lower()).strip("-.")
    return name[:253].rstrip("-.") or "host"


def _site_name(aggregates: frozenset[str], known: Mapping[str, str]) -> str:
    for agg in sorted(aggregates):
        if agg in known:
            return known[agg]
    if aggregates:
        return f"agg-{sorted(aggregates)[0][:8]}"
    return "openstack"


def _is_gpu(p: ProviderState) -> bool:
    return (bool(_GPU_CLASSES & set(p.inventories))
            or any(rc.startswith(MIG_CLASS_PREFIX) for rc in p.inventories)
            or MIG_MODE_TRAIT in p.traits
            or any(_model_of_trait(t) for t in p.traits))


def _model_of_trait(trait: str) -> str | None:
    if (not trait.startswith(MODEL_TRAIT_PREFIX) or trait == MIG_MODE_TRAIT
            or trait.startswith(MEMORY_TRAIT_PREFIX)):
        return None
    return _KNOWN_MODELS.get(trait, trait[len(MODEL_TRAIT_PREFIX):].replace("_", "-"))


def _gpu_doc(p: ProviderState, index: int, numa: int, problems: list[str]) -> dict[str, Any]:
    model = next((m for m in sorted(filter(None, map(_model_of_trait, p.traits)))), "unknown")
    memory = next((int(t[len(MEMORY_TRAIT_PREFIX):]) for t in p.traits
                   if t.startswith(MEMORY_TRAIT_PREFIX) and t[len(MEMORY_TRAIT_PREFIX):].isdigit()),
                  0) or gpu_memory_mib(model)
    if memory <= 0:
        problems.append(f"{p.name}: GPU memory unknown (no {MEMORY_TRAIT_PREFIX}* trait and an "
                        f"unknown model {model!r}); set to 1 MiB, correct it before applying")
        memory = 1
    doc: dict[str, Any] = {"index": index, "model": model, "memory_mib": memory, "numa": numa}
    profiles: list[str] = []
    for rc, inv in sorted(p.inventories.items()):
        profile = mig_profile_of_class(rc)
        if profile:
            profiles.extend([profile] * inv.total)
    if profiles or MIG_MODE_TRAIT in p.traits:
        doc["mode"] = "mig"
        if profiles:
            doc["mig_layout"] = _layout(model, profiles, p.name, problems)
    elif GPU_MILLI in p.inventories or p.inventories.get("VGPU", Inventory(1)).total > 1:
        doc["mode"] = "shared"
    else:
        doc["mode"] = "whole"
    return doc


def _layout(model: str, profiles: list[str], where: str, problems: list[str]
            ) -> list[dict[str, Any]] | None:
    if mig_model_or_none(model) is None:
        problems.append(f"{where}: MIG instances on a model without a MIG catalogue "
                        f"({model!r}); the layout is left out")
        return None
    try:
        layout = layout_from_profiles(model, profiles)
    except Exception as exc:  # noqa: BLE001 - InvalidInput or Conflict: report, keep importing
        problems.append(f"{where}: MIG instances {profiles} do not form a valid layout ({exc})")
        return None
    return [{"profile": i.profile, "start": i.start} for i in layout.instances]


@dataclass(frozen=True)
class ImportResult:
    """Host documents ``gpuplane apply -f`` accepts, the sites they name, and what was left
    out (roots without ``VCPU``/``MEMORY_MB`` inventory are not compute hosts)."""

    hosts: list[dict[str, Any]]
    sites: list[str]
    skipped: list[str]
    problems: list[str]


def import_trees(providers: Iterable[ProviderState], known_sites: Iterable[str] = ()
                 ) -> ImportResult:
    """Read provider trees (gpuplane's own or any other, e.g. Nova's) as gpuplane hosts.

    A root with ``VCPU`` and ``MEMORY_MB`` is a host; a descendant with a GPU class
    (``VGPU``, ``PGPU``, ``PCI_DEVICE``, ``CUSTOM_GPU_MILLI``, ``CUSTOM_MIG_*``) or a GPU trait
    is a GPU, on the NUMA node of its nearest ``HW_NUMA_ROOT`` ancestor. The site is the known
    site whose aggregate the root is in, else ``agg-<first 8 hex digits>``, else ``openstack``.
    """
    by_uuid = {p.uuid: p for p in providers}
    children: dict[str | None, list[ProviderState]] = defaultdict(list)
    for p in by_uuid.values():
        parent = p.parent_uuid if p.parent_uuid in by_uuid else None
        children[parent].append(p)
    known = {site_aggregate(s): s for s in known_sites}
    hosts: list[dict[str, Any]] = []
    sites: list[str] = []
    skipped: list[str] = []
    problems: list[str] = []
    for root in sorted(children[None], key=lambda p: _natural(p.name)):
        if "VCPU" not in root.inventories or "MEMORY_MB" not in root.inventories:
            skipped.append(f"{root.name} ({root.uuid}): no VCPU and MEMORY_MB inventory")
            continue
        numa_index: dict[str, int] = {}
        gpus: list[tuple[ProviderState, str | None]] = []
        stack: list[tuple[ProviderState, str | None]] = [(c, None) for c in children[root.uuid]]
        while stack:
            p, numa = stack.pop()
            if NUMA_TRAIT in p.traits:
                numa = p.uuid
                numa_index[p.uuid] = -1
            if _is_gpu(p):
                gpus.append((p, numa))
            stack.extend((c, numa) for c in children[p.uuid])
        numa_by_name = sorted((by_uuid[u] for u in numa_index), key=lambda p: _natural(p.name))
        for ordinal, p in enumerate(numa_by_name):
            m = re.search(r"numa(\d+)$", p.name)
            numa_index[p.uuid] = int(m.group(1)) if m else ordinal
        gpus.sort(key=lambda item: _natural(item[0].name))
        site = _site_name(root.aggregates, known)
        if site not in sites:
            sites.append(site)
        doc: dict[str, Any] = {
            "kind": "Host", "name": _host_name(root.name), "site": site,
            "cpu": root.inventories["VCPU"].total,
            "memory": root.inventories["MEMORY_MB"].total,
            "labels": {"placement.openstack.org/uuid": root.uuid},
            "gpus": [_gpu_doc(p, i, numa_index.get(numa, 0) if numa else 0, problems)
                     for i, (p, numa) in enumerate(gpus)],
        }
        if "HW_CPU_X86_AMD_SEV_SNP" in root.traits:
            doc["tee"] = "sev-snp"
        elif "HW_CPU_X86_INTEL_TDX" in root.traits:
            doc["tee"] = "tdx"
        hosts.append(doc)
    return ImportResult(hosts=hosts, sites=sites, skipped=skipped, problems=problems)

