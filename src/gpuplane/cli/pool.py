"""What ``gpuplane top`` and ``gpuplane describe project`` show, read through the REST API.

Every figure comes from the server; the CLI only groups and adds. The pool (capacity, allocated,
idle by GPU model) from ``GET /v1/gpus``; quotas from ``GET /v1/quotas``; the queue from
``GET /v1/workloads?phase=Pending`` (each workload's pending reason as the scheduler gave it).
Per tenant used / borrowed / lent GPUs are the scheduler's own quota ledger as ``/metrics``
exports it (``gpuplane_tenant_*_gpus``, and ``gpuplane_gpu_fragmented``: the placement engine's
measure of idle GPUs a typical task could not use), read with the caller's token: the server
gives a tenant the series of its own projects only. Where it does not answer, used falls back to ``GET /v1/usage`` and borrowed / lent / fragmented read "-".
Tenants are limited to the projects the caller can list.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from gpuplane.domain.errors import GpuplaneError

#: the label /metrics gives a quota of flavour "*" (domain.tenancy.DEFAULT_FLAVOR)
ANY_FLAVOR = "gpu"
TENANT_FIGURES = ("guaranteed", "used", "borrowed", "lent")
WANTED = tuple(f"gpuplane_tenant_{f}_gpus" for f in TENANT_FIGURES) + ("gpuplane_gpu_fragmented",)

Metrics = dict[str, list[tuple[dict[str, str], float]]]


def scrape(client: Any) -> Metrics | None:
    """The tenant and fragmentation series of the server's ``/metrics``, or None when it does
    not answer, cannot be parsed or has no tenant series (its database read failed)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = client.request("GET", "/metrics").text
        out: Metrics = {name: [] for name in WANTED}
        seen = set()
        for fam in text_string_to_metric_families(text):
            if fam.name in out:
                seen.add(fam.name)
                out[fam.name].extend((dict(s.labels), float(s.value)) for s in fam.samples)
    except (GpuplaneError, ValueError):
        return None
    return out if seen >= set(WANTED[:len(TENANT_FIGURES)]) else None


def tenant_ledgers(metrics: Metrics | None) -> dict[str, dict[str, dict[str, float]]] | None:
    """{project: {quota flavour ("*" for any model): {guaranteed, used, borrowed, lent}}} from
    the scheduler's ledger (``lent``: idle guarantee the cohort may use now), or None without
    metrics."""
    if metrics is None:
        return None
    out: dict[str, dict[str, dict[str, float]]] = {}
    for figure in TENANT_FIGURES:
        for labels, value in metrics[f"gpuplane_tenant_{figure}_gpus"]:
            flavor = labels.get("flavor", ANY_FLAVOR)
            flavor = "*" if flavor == ANY_FLAVOR else flavor
            figures = out.setdefault(labels.get("project", ""), {}).setdefault(
                flavor, {f: 0.0 for f in TENANT_FIGURES})
            figures[figure] += value
    return out


# -- the pool ------------------------------------------------------------------------------------
def pool_by_model(gpus: Iterable[dict[str, Any]], metrics: Metrics | None) -> list[dict[str, Any]]:
    """One row per GPU model: ``gpus`` = ``allocated`` (held by tasks; shares and MIG instances
    count their part) + ``idle`` (free on hosts taking work) + ``unavailable`` (free on
    cordoned, draining or down hosts); ``fragmented``: the part of the idle GPUs a typical task
    could not use (/metrics); ``modes``: how many GPUs of each offering mode."""
    rows: dict[str, dict[str, Any]] = {}
    for g in gpus:
        r = rows.setdefault(g["model"], {"model": g["model"], "gpus": 0, "allocated": 0.0,
                                         "idle": 0.0, "unavailable": 0.0, "modes": {}})
        used = float(g.get("allocated") or 0.0)
        r["gpus"] += 1
        r["allocated"] += used
        r["idle" if g.get("host_state", "ready") == "ready" else "unavailable"] += 1.0 - used
        r["modes"][g.get("mode", "whole")] = r["modes"].get(g.get("mode", "whole"), 0) + 1
    frag: dict[str, float] = {}
    for labels, value in (metrics or {}).get("gpuplane_gpu_fragmented", []):
        frag[labels.get("model", "")] = frag.get(labels.get("model", ""), 0.0) + value
    out = []
    for model in sorted(rows):
        r = rows[model]
        out.append({**r, "allocated": round(r["allocated"], 3), "idle": round(r["idle"], 3),
                    "unavailable": round(r["unavailable"], 3),
                    "alloc_pct": round(100 * r["allocated"] / r["gpus"], 1) if r["gpus"] else 0,
                    "fragmented": round(frag[model], 3) if model in frag else None,
                    "modes": ", ".join(f"{n} {m}" for m, n in sorted(r["modes"].items()))})
    return out


def per_host(gpus: Iterable[dict[str, Any]], active: Iterable[dict[str, Any]]
             ) -> list[dict[str, Any]]:
    """One row per host with GPUs: its state, GPUs, GPUs held and tasks placed there."""
    tasks: dict[str, int] = {}
    for w in active:
        for t in (w.get("status") or {}).get("tasks") or []:
            if t.get("placement") and t.get("phase") in ("Admitted", "Running"):
                tasks[t["placement"]["host"]] = tasks.get(t["placement"]["host"], 0) + 1
    rows: dict[str, dict[str, Any]] = {}
    for g in gpus:
        r = rows.setdefault(g["host"], {
            "host": g["host"], "site": g.get("site"), "jurisdiction": g.get("jurisdiction"),
            "state": g.get("host_state"), "simulated": g.get("simulated"), "gpus": 0,
            "gpus_used": 0.0})
        r["gpus"] += 1
        r["gpus_used"] += float(g.get("allocated") or 0.0)
    for r in rows.values():
        r["gpus_used"] = round(r["gpus_used"], 3)
        r["gpu_alloc_pct"] = round(100 * r["gpus_used"] / r["gpus"], 1)
        r["tasks"] = tasks.get(r["host"], 0)
    return list(rows.values())


# -- the queue -----------------------------------------------------------------------------------
def request_summary(spec: dict[str, Any]) -> str:
    """What a workload asks for, per task group: ``2x4 GPU (H100-80GB)``, ``1x3g.40gb``,
    ``1x0.5 GPU``, ``1 cpu-only``."""
    parts = []
    for g in spec.get("tasks") or []:
        res = g.get("resources") or {}
        gpus = res.get("gpus", 0)
        if res.get("mig_profile"):
            what = res["mig_profile"]
        elif gpus and res.get("gpu_milli", 1000) < 1000:
            what = f"{gpus * res['gpu_milli'] / 1000:g} GPU"
        elif gpus:
            what = f"{gpus} GPU"
        else:
            parts.append(f"{g.get('replicas', 1)} cpu-only")
            continue
        models = res.get("gpu_models") or []
        parts.append(f"{g.get('replicas', 1)}x{what}"
                     + (f" ({'|'.join(models)})" if models else ""))
    return ", ".join(parts) or "-"


def queue_rows(pending: Iterable[dict[str, Any]], now: float | None = None
               ) -> list[dict[str, Any]]:
    """Pending workloads in the order the API ranks them for ``queue_position`` (priority,
    then submission time), each with its pending reason."""
    now = time.time() if now is None else now
    ordered = sorted(pending, key=lambda w: (-int(w.get("priority") or 0),
                                             w["status"].get("submitted_at") or 0, w["id"]))
    rows = []
    for i, w in enumerate(ordered, 1):
        st = w["status"]
        tasks = st.get("tasks") or []
        reason = st.get("pending_reason") or {}
        rows.append({
            "position": i, "name": w["name"], "project": w["project"],
            "priority_class": w.get("priority_class"),
            "tasks": f"{sum(t.get('phase') == 'Pending' for t in tasks)}/{len(tasks)}",
            "request": request_summary(w.get("spec") or {}),
            "waiting_s": max(0.0, now - (st.get("submitted_at") or now)),
            "reason_code": reason.get("code") or "NotEvaluated",
            "reason": reason.get("message") or "waiting for the next scheduling cycle"})
    return rows


def reasons_summary(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pending workloads counted by reason code, most first, with one message of each."""
    by: dict[str, dict[str, Any]] = {}
    for r in rows:
        b = by.setdefault(r["reason_code"], {"code": r["reason_code"], "workloads": 0,
                                             "example": r["reason"]})
        b["workloads"] += 1
    return sorted(by.values(), key=lambda b: (-b["workloads"], b["code"]))


def wait(seconds: float) -> str:
    """``45s``, ``3m20s``, ``1h05m``, ``2d03h``: how long something has waited."""
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
