"""Plots of an openb grid (matplotlib, Agg backend; no display needed).

* ``alloc_<trace>.png``: unallocated GPU % (100 - allocation) vs arrival, median
  over seeds with the 25-75 % band, one line per policy (paper Fig. 9a);
* ``frag_<trace>.png``: fragmentation ratio vs arrival, mean over seeds (Fig. 7);
* ``bars_100.png`` / ``bars_130.png``: 100 - allocation at arrival 100 / 130 per
  trace and policy, mean +- sd over seeds (Figs. 11-14).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(runs: Sequence[dict], field: str, xs: Sequence[int]) -> np.ndarray:
    return np.array([[np.nan if (r.get(field) or {}).get(str(x)) is None
                      else r[field][str(x)] for x in xs] for r in runs], dtype=float)


def write_plots(results: Sequence[dict], out: Path) -> list[Path]:
    """Write every plot under ``out``; returns the paths written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of tiny traces
        return _write_plots(results, out)


def _finish(plt, fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:  # noqa: ANN001
    """Labels, grid and legend of a line plot, then save and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_plots(results: Sequence[dict], out: Path) -> list[Path]:
    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    traces = sorted({r["trace"] for r in results})
    policies = list(dict.fromkeys(r["policy"] for r in results))
    for t in traces:
        xs = list(range(75, 131))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for p in policies:
            runs = [r for r in results if r["trace"] == t and r["policy"] == p]
            if not runs:
                continue
            y = 100 - _series(runs, "alloc_ratio", xs)
            med = np.nanmedian(y, axis=0)
            ax.plot(xs, med, label=p)
            if len(runs) > 1:
                ax.fill_between(xs, np.nanpercentile(y, 25, axis=0),
                                np.nanpercentile(y, 75, axis=0), alpha=0.2)
        written.append(_finish(plt, fig, ax, "arriving GPU demand (% of capacity)",
                               "unallocated GPU (%)", f"openb {t}: unallocated GPU vs arrival",
                               out / f"alloc_{t}.png"))
        xs = list(range(0, 131))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for p in policies:
            runs = [r for r in results if r["trace"] == t and r["policy"] == p and r.get("frag_ratio")]
            if runs:
                ax.plot(xs, np.nanmean(_series(runs, "frag_ratio", xs), axis=0), label=p)
        written.append(_finish(plt, fig, ax, "arriving GPU demand (% of capacity)",
                               "fragmentation ratio (% of idle GPU)",
                               f"openb {t}: fragmentation vs arrival", out / f"frag_{t}.png"))
    for col in ("100", "130"):
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(traces)), 4.5))
        width = 0.8 / max(1, len(policies))
        for i, p in enumerate(policies):
            means, sds = [], []
            for t in traces:
                v = [100 - r["alloc_ratio"][col] for r in results
                     if r["trace"] == t and r["policy"] == p and r["alloc_ratio"].get(col) is not None]
                means.append(np.mean(v) if v else np.nan)
                sds.append(np.std(v) if v else 0)
            ax.bar(np.arange(len(traces)) + i * width, means, width, yerr=sds, label=p, capsize=2)
        ax.set_xticks(np.arange(len(traces)) + 0.4 - width / 2)
        ax.set_xticklabels(traces)
        ax.set_ylabel(f"unallocated GPU (%) at arrival {col}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"bars_{col}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
