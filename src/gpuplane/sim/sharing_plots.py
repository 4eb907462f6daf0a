"""PNG figures of the sprawl benchmark: allocation over time, per-team p95 waits, borrowing."""

from __future__ import annotations

from pathlib import Path


def write_plots(doc: dict, folder: Path) -> list[Path]:
    """Write ``allocation.png``, ``p95_wait.png`` and (for gpuplane) ``borrowed.png`` into
    ``folder``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = doc["modes"]
    out: list[Path] = []
    t0 = None
    fig, ax = plt.subplots(figsize=(10, 4))
    for m, r in modes.items():
        pts = r["allocation_over_time"]
        if not pts:
            continue
        t0 = pts[0][0] if t0 is None else t0
        ax.plot([(p[0] - t0) / 86400 for p in pts], [p[1] for p in pts], label=m, lw=1)
    ax.set_xlabel("days since window start")
    ax.set_ylabel("GPUs allocated (% of owned)")
    ax.set_title(f"allocation over time, quota scale {doc['quota_scale']:g}")
    ax.legend()
    fig.tight_layout()
    p = folder / "allocation.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    out.append(p)

    first = next(iter(modes.values()))
    teams = list(first["teams"])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(modes))
    for k, (m, r) in enumerate(modes.items()):
        xs = [i + k * width for i in range(len(teams))]
        ax.bar(xs, [max(1.0, r["teams"][t]["p95_wait_s"]) for t in teams], width, label=m)
    ax.set_yscale("log")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(teams))], teams, rotation=45)
    ax.set_ylabel("p95 wait (s, log)")
    ax.set_title("per-team p95 waiting time")
    ax.legend()
    fig.tight_layout()
    p = folder / "p95_wait.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    out.append(p)

    g = modes.get("gpuplane")
    if g and g.get("borrowed_over_time"):
        pts = g["borrowed_over_time"]
        fig, ax = plt.subplots(figsize=(10, 3))
        base = pts[0][0]
        ax.plot([(q[0] - base) / 86400 for q in pts], [q[1] for q in pts], lw=1)
        ax.set_xlabel("days since window start")
        ax.set_ylabel("GPUs borrowed")
        ax.set_title("gpuplane: GPUs held above guarantees (lent by idle teams)")
        fig.tight_layout()
        p = folder / "borrowed.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        out.append(p)
    return out
