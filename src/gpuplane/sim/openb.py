"""Readers for the Alibaba ``openb`` GPU trace (cluster-trace-gpu-v2023).

* node list CSV: ``sn, cpu_milli, memory_mib, gpu, model`` -> :class:`Host` with
  ``gpu`` shared-mode devices of ``model`` (each worth 1000 milli-GPU);
* pod list CSV: ``name, cpu_milli, memory_mib, num_gpu, gpu_milli[, gpu_spec, ...]``
  -> :class:`TaskRequest` (FGD_PROTOCOL §2: ``gpu_milli`` clipped to 0..1000 and
  only used with ``num_gpu > 0``; ``gpu_spec`` is a ``|``-separated model list).

Bad input raises :class:`InvalidInput` naming the file, the row (line number in
the file) and the column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.domain.inventory import GpuDevice, Host
from gpuplane.domain.requests import TaskRequest

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
CODE = "gpuplane.sim.bad_trace"


@dataclass(frozen=True)
class PodTrace:
    """The rows of one pod list: ``names[i]`` asks for ``tasks[i]``."""

    path: str
    names: tuple[str, ...]
    tasks: tuple[TaskRequest, ...]

    @property
    def stem(self) -> str:
        """Short trace name: ``openb_pod_list_default.csv`` -> ``default``."""
        s = Path(self.path).stem
        return s.removeprefix("openb_pod_list_")


def _bad(path: str, line: int | None, column: str, msg: str) -> InvalidInput:
    loc = (f"row {line}, " if line is not None else "") + f"column {column}"
    return InvalidInput(f"bad trace file {path}", [FieldError(loc, msg)], code=CODE)


def _rows(path: str | Path, required: tuple[str, ...]):
    p = str(path)
    try:
        fh = open(p, newline="", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read trace file {p}: {exc.strerror or exc}",
                           [FieldError("path", p)], code=CODE) from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise _bad(p, 1, required[0], "file is empty (no header)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _bad(p, 1, required[0], f"not a CSV file ({exc})") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise _bad(p, 1, missing[0], f"missing column(s) {', '.join(missing)}; "
                                         f"header is {','.join(header)}")
        pos = {h: i for i, h in enumerate(header)}
        line = 1
        try:
            for row in reader:
                line += 1
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) < len(required) or len(row) < max(pos[c] for c in required) + 1:
                    raise _bad(p, line, required[min(len(row), len(required) - 1)],
                               f"row has {len(row)} fields, header has {len(header)}")
                yield line, row, pos
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _bad(p, line, "-", f"unreadable row ({exc})") from None


def _int(p: str, line: int, row: list[str], pos: dict[str, int], col: str,
         minimum: int = 0) -> int:
    raw = row[pos[col]].strip()
    try:
        v = int(raw)
    except ValueError:
        try:
            f = float(raw)
        except ValueError:
            raise _bad(p, line, col, f"expected an integer, got {raw!r}") from None
        if f != f or not f.is_integer():
            raise _bad(p, line, col, f"expected an integer, got {raw!r}") from None
        v = int(f)
    if v < minimum:
        raise _bad(p, line, col, f"must be >= {minimum}, got {v}")
    return v


def read_nodes(path: str | Path) -> list[Host]:
    """Hosts of a node list CSV, in file order; every GPU in ``shared`` mode."""
    p = str(path)
    hosts: list[Host] = []
    seen: set[str] = set()
    devices: dict[tuple[int, str], GpuDevice] = {}
    for line, row, pos in _rows(p, NODE_COLUMNS):
        name = row[pos["sn"]].strip()
        if not name:
            raise _bad(p, line, "sn", "empty node name")
        if name in seen:
            raise _bad(p, line, "sn", f"duplicate node name {name!r}")
        seen.add(name)
        cpu = _int(p, line, row, pos, "cpu_milli")
        mem = _int(p, line, row, pos, "memory_mib")
        n = _int(p, line, row, pos, "gpu")
        if n > 64:
            raise _bad(p, line, "gpu", f"at most 64 GPUs per node, got {n}")
        model = row[pos["model"]].strip()
        if n and not model:
            raise _bad(p, line, "model", f"node has {n} GPUs but no model")
        gpus = []
        for i in range(n):
            d = devices.get((i, model))
            if d is None:
                d = devices[(i, model)] = GpuDevice(index=i, model=model, mode="shared")
            gpus.append(d)
        hosts.append(Host(name=name, cpu_milli=cpu, memory_mib=mem, gpus=tuple(gpus)))
    if not hosts:
        raise _bad(p, None, "sn", "no nodes in file")
    return hosts


def read_pods(path: str | Path) -> PodTrace:
    """Pods of a pod list CSV, in file order (FGD_PROTOCOL §2 conversions)."""
    p = str(path)
    names: list[str] = []
    tasks: list[TaskRequest] = []
    cache: dict[tuple, TaskRequest] = {}
    for line, row, pos in _rows(p, POD_COLUMNS):
        name = row[pos["name"]].strip()
        if not name:
            raise _bad(p, line, "name", "empty pod name")
        cpu = _int(p, line, row, pos, "cpu_milli")
        mem = _int(p, line, row, pos, "memory_mib")
        k = _int(p, line, row, pos, "num_gpu")
        if k > 64:
            raise _bad(p, line, "num_gpu", f"at most 64 GPUs per pod, got {k}")
        milli = 0
        models: frozenset[str] = frozenset()
        if k > 0:
            milli = min(max(_int(p, line, row, pos, "gpu_milli", minimum=-(1 << 62)), 0), 1000)
            if "gpu_spec" in pos and pos["gpu_spec"] < len(row):
                spec = row[pos["gpu_spec"]].strip()
                if spec.lower() != "nan":
                    models = frozenset(x.strip() for x in spec.split("|") if x.strip())
        if milli == 0:
            k = 0
        key = (cpu, mem, k, milli, models)
        t = cache.get(key)
        if t is None:
            t = cache[key] = TaskRequest(cpu_milli=cpu, memory_mib=mem, gpus=k,
                                         gpu_milli=milli if k else 1000, gpu_models=models)
        names.append(name)
        tasks.append(t)
    if not tasks:
        raise _bad(p, None, "name", "no pods in file")
    return PodTrace(path=p, names=tuple(names), tasks=tuple(tasks))
