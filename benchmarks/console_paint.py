"""How fast does the console show the fleet, and how fast does a change reach an open page?

Scenario: ``gpuplane up`` (API, control loop, console in one process) on 127.0.0.1, once with
the demo fleet (20 simulated hosts, 136 GPUs) and once with a synthetic fleet of ``--hosts``
hosts of 8 GPUs (2,000: 16,000 GPUs, about 4,600 running workloads of 50 projects and 300
waiting; built by ``metrics_scrape.build_fleet``, beside this script). Debian's Chromium
(``/usr/bin/chromium``), driven by Playwright, opens the console with the admin token already in
the tab's sessionStorage (as after signing in), in a fresh browser context per run.

* **First paint**: from the start of the navigation (``performance.timeOrigin``) to the fleet
  overview's totals (``#fleet-totals``, drawn from the stream's first ``fleet`` event) being in
  the DOM, measured in the page by a MutationObserver; ``--runs`` runs, the first with a cold
  HTTP cache. Targets: < 1 s (demo), < 3 s (2,000 hosts).
* **Change to page**: with the Queue view open, a workload is submitted through the API
  (``POST /v1/workloads``, timed from just before the request) and the time until its row is in
  the page is measured (the page's clock and this process's are the same machine's). Target
  < 2 s (the stream polls every 1.5 s).
* **GPU map**: time from opening the GPU map to its first page of hosts drawn, and how many GPU
  boxes are drawn (the map draws a page of hosts at a time).

Run: ``.venv/bin/python benchmarks/console_paint.py [--hosts 2000] [--runs 5] [--keep DIR]
[--out benchmarks/results/console_paint.json]``. ``--keep DIR`` keeps (and reuses) the large
fleet's database there (``metrics_scrape.py --keep DIR`` builds the same one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from metrics_scrape import build_fleet  # benchmarks/metrics_scrape.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("GPUPLANE_TEST_CHROMIUM", "/usr/bin/chromium")
TOKEN_KEY = "gpuplane.console.token"

# Records when a selector first matches, in ms since the navigation started.
WATCH = """
window.__marks = {};
window.__watch = (name, sel) => {
  const check = () => {
    if (!(name in window.__marks) && document.querySelector(sel)) {
      window.__marks[name] = performance.now();
    }
  };
  new MutationObserver(check).observe(document, {childList: true, subtree: true, attributes: true});
  check();
};
document.addEventListener("DOMContentLoaded", () => window.__watch("overview", "#fleet-totals"));
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Plane:
    """``gpuplane up`` on ``home`` in a subprocess."""

    def __init__(self, home: Path, demo: bool) -> None:
        self.home, self.port = home, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPLANE_")}
        env.update(GPUPLANE_HOME=str(home), PYTHONUNBUFFERED="1")
        self.log = open(home / "up.log", "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpuplane", "up", "--port", str(self.port), "--host-name",
             "bench-local", "--log-level", "warning", "--demo" if demo else "--no-demo"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise SystemExit((home / "up.log").read_text()[-3000:])
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gpuplane up did not answer in 300 s")
            time.sleep(0.2)
        self.start_s = time.perf_counter() - t0
        self.token = (home / "admin-token").read_text().strip()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _context(browser: Any, plane: Plane) -> Any:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.add_init_script(f"sessionStorage.setItem({json.dumps(TOKEN_KEY)}, "
                        f"{json.dumps(plane.token)});\n" + WATCH)
    ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith(plane.url)
              else route.abort())
    return ctx


def first_paint(browser: Any, plane: Plane, runs: int) -> dict:
    times, walls, sizes = [], [], []
    for _ in range(runs):
        ctx = _context(browser, plane)
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(plane.url + "/#/overview")
        page.wait_for_selector("#fleet-totals", timeout=120_000)  # (the CSP forbids eval)
        walls.append(time.perf_counter() - t0)
        times.append(page.evaluate("window.__marks.overview") / 1000)
        sizes.append(page.evaluate("performance.getEntriesByType('resource')"
                                   ".reduce((a, e) => a + (e.transferSize || 0), 0)"))
        ctx.close()
    return {"first_paint_s": _stats(times), "wall_s": _stats(walls),
            "runs_s": [round(t, 3) for t in times], "bytes_loaded_median": statistics.median(sizes)}


def change_to_page(browser: Any, plane: Plane, runs: int) -> dict:
    ctx = _context(browser, plane)
    page = ctx.new_page()
    page.goto(plane.url + "/#/queue")
    page.wait_for_selector("#queue", timeout=120_000)
    page.wait_for_selector("#live[data-status='live']", timeout=60_000)
    lat = []
    with httpx.Client(base_url=plane.url, timeout=60,
                      headers={"Authorization": f"Bearer {plane.token}"}) as c:
        for i in range(runs):
            name = f"paint-{int(time.time() * 1000) % 10**9}-{i}"
            page.evaluate("""name => { window.__seen = null; const check = () => {
                if (window.__seen === null && [...document.querySelectorAll('#queue tr')]
                    .some(tr => tr.textContent.includes(name))) window.__seen = Date.now(); };
                new MutationObserver(check).observe(document.body,
                    {childList: true, subtree: true, characterData: true}); }""", name)
            t0 = time.time()
            r = c.post("/v1/workloads", json={
                "name": name, "project": "default", "tasks": [{
                    "command": ["true"], "resources": {"cpu": 1, "memory": "1Gi"},
                    "selector": {"bench/never": "yes"}}]})
            assert r.status_code == 201, r.text
            page.locator("#queue tr", has_text=name).wait_for(timeout=60_000)
            lat.append(page.evaluate("window.__seen") / 1000 - t0)
            c.post(f"/v1/workloads/{r.json()['id']}/cancel")
            time.sleep(0.7)  # not in phase with the stream's poll
    ctx.close()
    return {"change_to_page_s": _stats(lat), "runs_s": [round(x, 3) for x in lat]}


def gpu_map(browser: Any, plane: Plane) -> dict:
    ctx = _context(browser, plane)
    page = ctx.new_page()
    page.goto(plane.url + "/#/overview")
    page.wait_for_selector("#fleet-totals", timeout=120_000)
    t0 = time.perf_counter()
    page.goto(plane.url + "/#/gpus")
    page.wait_for_selector("section.host svg.gpu", timeout=120_000)
    out = {"open_s": round(time.perf_counter() - t0, 3),
           "gpu_boxes_drawn": page.locator("svg.gpu").count(),
           "hosts_drawn": page.locator("section.host").count()}
    ctx.close()
    return out


def _stats(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3),
            "max": round(max(xs), 3), "runs": len(xs)}


def measure(browser: Any, plane: Plane, label: str, runs: int) -> dict:
    print(f"[{label}] gpuplane up answered after {plane.start_s:.1f} s")
    out: dict[str, Any] = {"up_s": round(plane.start_s, 1)}
    out.update(first_paint(browser, plane, runs))
    print(f"[{label}] first paint: median {out['first_paint_s']['median']:.3f} s "
          f"(min {out['first_paint_s']['min']:.3f}, max {out['first_paint_s']['max']:.3f}); "
          f"{out['bytes_loaded_median'] / 1e6:.2f} MB loaded")
    out["change"] = change_to_page(browser, plane, runs)
    print(f"[{label}] change to page: median {out['change']['change_to_page_s']['median']:.3f} s "
          f"(max {out['change']['change_to_page_s']['max']:.3f})")
    out["gpu_map"] = gpu_map(browser, plane)
    print(f"[{label}] GPU map: {out['gpu_map']}")
    return out


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the large fleet here")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/console_paint.json")
    args = ap.parse_args()
    result: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "chromium": CHROMIUM, "targets_s": {
                                  "first_paint_demo": 1.0, "first_paint_large": 3.0,
                                  "change_to_page": 2.0}}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu",
                                           "--disable-dev-shm-usage"])
        if not args.skip_demo:
            home = Path(tmp) / "demo"
            home.mkdir()
            plane = Plane(home, demo=True)
            try:
                result["demo"] = measure(browser, plane, "demo", args.runs)
            finally:
                plane.close()
        home = args.keep or Path(tmp) / "large"
        print(f"[{args.hosts} hosts] building the fleet in {home} ...")
        result["large_fleet"] = build_fleet(home, args.hosts)
        plane = Plane(home, demo=False)
        try:
            result["large"] = measure(browser, plane, f"{args.hosts} hosts", args.runs)
        finally:
            plane.close()
        browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(result: dict, path: Path) -> None:
    """Median (bar) and worst run (tick) of each measure against its target (dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = []
    for fleet, target in (("demo", "first_paint_demo"), ("large", "first_paint_large")):
        if fleet in result:
            r = result[fleet]
            bars.append((f"first paint\n{fleet}", r["first_paint_s"], result["targets_s"][target]))
            bars.append((f"change to page\n{fleet}", r["change"]["change_to_page_s"],
                         result["targets_s"]["change_to_page"]))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (label, st, target) in enumerate(bars):
        ax.bar(i, st["median"], color="#3b7dd8")
        ax.plot([i - 0.3, i + 0.3], [st["max"]] * 2, color="#222")
        ax.plot([i - 0.45, i + 0.45], [target] * 2, ls="--", color="#c0392b")
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title("Console in Chromium: median (bar), worst run (line), target (dashed)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
