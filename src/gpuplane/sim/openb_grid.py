"""Experiment grid over openb traces x policies x seeds, in parallel processes.

``run_grid`` yields one :class:`RunResult` dict per finished run (in completion
order) so a caller can drive a progress bar; ``write_outputs`` writes the CSV and
JSON files (and the plots, see :mod:`gpuplane.sim.openb_plots`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.sim.openb import read_nodes, read_pods
from gpuplane.sim.openb_kpi import COLUMNS
from gpuplane.sim.openb_run import run_experiment

NODE_FILE = "openb_node_list_gpu_node.csv"
TRACES_DEFAULT = ("default", "cpu050", "gpushare40", "multigpu30", "gpuspec20")


def default_data_dir() -> Path:
    """``../shared/data/openb`` relative to the project root (editable install)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "openb"


def pod_file(data: Path, trace: str) -> Path:
    return Path(data) / f"openb_pod_list_{trace}.csv"


def parse_seeds(text: str) -> list[int]:
    """``"42-51"``, ``"42,45"`` or a mix -> sorted unique seeds."""
    out: set[int] = set()
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
                lo, hi = int(a), int(b)
                if hi < lo or hi - lo > 10_000:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise InvalidInput(f"bad seed list {text!r}",
                           [FieldError("seeds", "use e.g. 42-51 or 42,43,44")]) from None
    if not out:
        raise InvalidInput("empty seed list", [FieldError("seeds", "give at least one seed")])
    return sorted(out)


@dataclass(frozen=True)
class Job:
    data: str
    trace: str
    policy: str
    seed: int
    tuning: float
    frag: bool = True
    distribution: str = "online"


_CACHE: dict[str, object] = {}


def run_job(job: Job) -> dict:
    """Run one job (in a worker process); traces are cached per process."""
    nodes_path = str(Path(job.data) / NODE_FILE)
    hosts = _CACHE.get(nodes_path)
    if hosts is None:
        hosts = _CACHE[nodes_path] = read_nodes(nodes_path)
    pods_path = str(pod_file(Path(job.data), job.trace))
    trace = _CACHE.get(pods_path)
    if trace is None:
        trace = _CACHE[pods_path] = read_pods(pods_path)
    res = run_experiment(hosts, trace, job.policy, job.seed, job.tuning,  # type: ignore[arg-type]
                         frag=job.frag, distribution=job.distribution)
    return res.as_dict()


def check_inputs(data: Path, traces: Sequence[str], policies: Sequence[str]) -> None:
    """Fail early (InvalidInput naming the field) on missing files or unknown policies."""
    from gpuplane.scheduling.placement import profiles

    errors: list[FieldError] = []
    if not (Path(data) / NODE_FILE).is_file():
        errors.append(FieldError("data", f"{Path(data) / NODE_FILE} not found"))
    for t in traces:
        if not pod_file(data, t).is_file():
            errors.append(FieldError("traces", f"{pod_file(data, t)} not found"))
    for p in policies:
        if p not in profiles.PROFILES:
            errors.append(FieldError("policies", f"unknown policy {p!r}; valid: "
                                                 f"{', '.join(profiles.PROFILES)}"))
    if errors:
        raise InvalidInput("cannot run the grid", errors)


def run_grid(data: Path, traces: Sequence[str], policies: Sequence[str], seeds: Sequence[int],
             tuning: float = 1.3, jobs: int = 1, frag: bool = True,
             distribution: str = "online") -> Iterator[dict]:
    """Yield each run's result dict as it finishes (``jobs`` worker processes).
    ``distribution``: ``online`` or ``trace`` (``openb_run`` module doc)."""
    from gpuplane.sim.openb_run import check_distribution

    check_distribution(distribution)
    check_inputs(data, traces, policies)
    work = [Job(str(data), t, p, s, tuning, frag, distribution)
            for t in traces for p in policies for s in seeds]
    if jobs <= 1:
        for j in work:
            yield run_job(j)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(run_job, j) for j in work]
        for f in as_completed(futs):
            yield f.result()


def write_outputs(results: Sequence[dict], out: Path) -> dict[str, Path]:
    """Write ``runs.json``, ``alloc_discrete.csv``, ``frag_ratio_discrete.csv`` and
    ``summary.csv`` (mean/min/max per trace x policy at 100 and 130) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rs = sorted(results, key=lambda r: (r["trace"], r["policy"], r["seed"]))
    paths = {"json": out / "runs.json", "alloc": out / "alloc_discrete.csv",
             "frag": out / "frag_ratio_discrete.csv", "summary": out / "summary.csv"}
    paths["json"].write_text(json.dumps(rs, indent=1))
    cols = [str(c) for c in COLUMNS]
    for key, field in (("alloc", "alloc_ratio"), ("frag", "frag_ratio")):
        with open(paths[key], "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["trace", "policy", "seed"] + cols)
            for r in rs:
                vals = r.get(field) or {}
                w.writerow([r["trace"], r["policy"], r["seed"]]
                           + ["" if vals.get(c) is None else vals[c] for c in cols])
    with open(paths["summary"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trace", "policy", "seeds", "mean100", "mean130", "min130", "max130",
                    "failed_pods", "seconds"])
        for (t, p), group in _groups(rs).items():
            a100 = [g["alloc_ratio"]["100"] for g in group if g["alloc_ratio"].get("100") is not None]
            a130 = [g["alloc_ratio"]["130"] for g in group if g["alloc_ratio"].get("130") is not None]
            w.writerow([t, p, len(group), _mean(a100), _mean(a130), min(a130, default=""),
                        max(a130, default=""),
                        _mean([g["failed_pods"] for g in group]),
                        _mean([g["seconds"] for g in group])])
    return paths


def _groups(rs: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rs:
        out.setdefault((r["trace"], r["policy"]), []).append(r)
    return out


def _mean(xs: Sequence[float]) -> float:
    return round(sum(xs) / len(xs), 2) if xs else float("nan")


def cpu_jobs(requested: int) -> int:
    """Clamp ``--jobs`` to 1..cpu count."""
    return max(1, min(int(requested), os.cpu_count() or 1))
