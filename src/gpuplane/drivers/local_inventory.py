"""What the local host has: CPU, memory and GPUs (NVML when present, else declared).

NVML (``nvidia-ml-py``) is imported lazily; a host without the NVIDIA driver is
CPU-only unless GPUs are *declared* for development (``--local-gpus 2xL40S-48GB``),
in which case every GPU is flagged ``declared`` and no process ever sees a real
device through it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from gpuplane.domain.errors import FieldError, InvalidInput


@dataclass(frozen=True)
class LocalMig:
    """A MIG instance NVML reports on a GPU: its UUID, profile (``3g.40gb``) and the first
    memory slice of its GPU instance (``start``; -1 when NVML did not say); ``gi``/``ci`` are
    its GPU / compute instance ids (-1: unknown), which name its capability device nodes."""

    uuid: str
    profile: str
    start: int = -1
    gi: int = -1
    ci: int = -1


@dataclass(frozen=True)
class LocalGpu:
    index: int
    model: str
    memory_mib: int
    uuid: str | None = None
    numa: int = 0
    mig: tuple[LocalMig, ...] = ()
    declared: bool = False
    #: Minor number of its device node ``/dev/nvidiaN`` (-1: unknown, the index is used).
    minor: int = -1


@dataclass(frozen=True)
class LocalHostInfo:
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: tuple[LocalGpu, ...] = ()
    source: str = "none"  # "nvml", "declared" or "none"
    notes: tuple[str, ...] = field(default=())


_FAMILY = re.compile(r"\b(B200|B100|GH200|H200|H100|H800|A100|A800|A30|A40|A10G?|L40S|L40|L4|"
                     r"V100|T4|RTX ?\w+)\b", re.IGNORECASE)


def normalise_model(nvml_name: str, memory_mib: int) -> str:
    """An NVML name as the model name the inventory uses: the catalogue's name when it knows the
    family (``NVIDIA H100 80GB HBM3`` -> ``H100-80GB``, ``NVIDIA L40S`` -> ``L40S``), else
    ``<family>-<GB>GB``."""
    from gpuplane.domain.inventory import KNOWN_GPU_MODELS

    m = _FAMILY.search(nvml_name)
    family = m.group(1).upper().replace(" ", "") if m else nvml_name.replace("NVIDIA", "").strip()
    if family in KNOWN_GPU_MODELS:
        return family
    sized = [k for k, mib in KNOWN_GPU_MODELS.items() if k.startswith(family + "-") and mib]
    if sized:
        return min(sized, key=lambda k: abs(KNOWN_GPU_MODELS[k] - memory_mib))
    return f"{family}-{max(1, round(memory_mib / 1024))}GB"


def _host_cpu_memory() -> tuple[int, int]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError, AttributeError):
        mem = 4096
    return cpus * 1000, int(mem)


def parse_declared(spec: str) -> tuple[LocalGpu, ...]:
    """``"2xL40S-48GB,1xA100-80GB"`` -> declared GPUs. Memory is taken from the
    ``-NNGB`` suffix. Raises ``InvalidInput`` naming the bad item."""
    gpus: list[LocalGpu] = []
    errors: list[FieldError] = []
    for i, item in enumerate(p.strip() for p in spec.split(",") if p.strip()):
        m = re.fullmatch(r"(?:(\d+)x)?([A-Za-z0-9]+)-(\d+)GB", item)
        if not m or int(m.group(1) or 1) < 1 or int(m.group(1) or 1) > 64:
            errors.append(FieldError(f"local_gpus[{i}]",
                                     f"{item!r} is not COUNTxMODEL-NNGB (e.g. 2xL40S-48GB)"))
            continue
        count, family, gb = int(m.group(1) or 1), m.group(2).upper(), int(m.group(3))
        for _ in range(count):
            gpus.append(LocalGpu(index=len(gpus), model=f"{family}-{gb}GB", memory_mib=gb * 1024,
                                 declared=True))
    if errors:
        raise InvalidInput("the declared local GPUs are malformed", errors)
    return tuple(gpus)


def _nvml_gpus() -> tuple[tuple[LocalGpu, ...], str | None]:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return (), "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return (), f"NVML unavailable ({exc})"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else name
            uuid = pynvml.nvmlDeviceGetUUID(h)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total // (1 << 20)
            try:
                numa = int(pynvml.nvmlDeviceGetNumaNodeId(h))
            except Exception:
                numa = 0
            try:
                minor = int(pynvml.nvmlDeviceGetMinorNumber(h))
            except Exception:
                minor = -1
            gpus.append(LocalGpu(index=i, model=normalise_model(name, mem), memory_mib=int(mem),
                                 uuid=uuid, numa=max(0, numa), mig=_nvml_migs(pynvml, h),
                                 minor=minor))
        return tuple(gpus), None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _nvml_migs(pynvml, handle) -> tuple[LocalMig, ...]:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except Exception:
        return ()
    if current != 1:
        return ()
    out = []
    for j in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mh = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
        except Exception:
            continue
        uuid = pynvml.nvmlDeviceGetUUID(mh)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        attrs = pynvml.nvmlDeviceGetAttributes(mh)
        gb = round(attrs.memorySizeMB / 1024)
        out.append(LocalMig(uuid=uuid, profile=f"{attrs.gpuInstanceSliceCount}g.{gb}gb",
                            start=_gi_start(pynvml, handle, mh),
                            gi=_nvml_int(pynvml, "nvmlDeviceGetGpuInstanceId", mh),
                            ci=_nvml_int(pynvml, "nvmlDeviceGetComputeInstanceId", mh)))
    return tuple(out)


def _nvml_int(pynvml, name: str, handle) -> int:  # noqa: ANN001
    try:
        return int(getattr(pynvml, name)(handle))
    except Exception:  # noqa: BLE001 - older bindings or drivers
        return -1


def _gi_start(pynvml, parent, mig_handle) -> int:  # noqa: ANN001
    """First memory slice of the GPU instance a MIG device belongs to (-1 if unknown)."""
    try:
        gi = pynvml.nvmlDeviceGetGpuInstanceById(
            parent, pynvml.nvmlDeviceGetGpuInstanceId(mig_handle))
        return int(pynvml.nvmlGpuInstanceGetInfo(gi).placement.start)
    except Exception:  # noqa: BLE001 - older drivers: match by profile only
        return -1


def discover_local_host(name: str, declared: str | None = None) -> LocalHostInfo:
    """Inventory of this machine. NVML-discovered GPUs win over declared ones."""
    cpu_milli, memory_mib = _host_cpu_memory()
    gpus, why_not = _nvml_gpus()
    if gpus:
        notes = ("declared GPUs ignored: NVML found real ones",) if declared else ()
        return LocalHostInfo(name, cpu_milli, memory_mib, gpus, "nvml", notes)
    if declared:
        return LocalHostInfo(name, cpu_milli, memory_mib, parse_declared(declared), "declared",
                             (f"GPUs declared, not discovered ({why_not})",))
    return LocalHostInfo(name, cpu_milli, memory_mib, (), "none",
                         (f"CPU-only: {why_not}",) if why_not else ())
