// Charts over time from the history the server keeps (api/history.py, the stream's "history"
// event): allocation, fragmentation, queue length and per-tenant use.
import { h, fmt, tenantHue } from "../dom.js";
import { lineChart } from "../chart.js";

export const deps = ["history"];
const TENANTS_SHOWN = 8;

export function render(root, state) {
  const hist = state.history;
  if (!hist) return h("p", {}, "Waiting for the history…");
  const samples = hist.samples;
  const every = `one sample every ${fmt.n(hist.interval_s, 1)} s, the last ${hist.max_points} kept`;
  if (!samples.length) return h("p", { id: "charts" }, `No sample yet (${every}).`);
  const times = samples.map((x) => x.t);
  const col = (k) => samples.map((x) => x[k]);
  // the projects using most now (then most over the window), the rest summed as "other"
  const total = {};
  for (const x of samples) for (const [p, v] of Object.entries(x.tenants)) total[p] = (total[p] || 0) + v;
  const last = samples[samples.length - 1].tenants;
  const ranked = Object.keys(total).sort((a, b) => (last[b] || 0) - (last[a] || 0) || total[b] - total[a] || a.localeCompare(b));
  const shown = ranked.slice(0, TENANTS_SHOWN), rest = ranked.slice(TENANTS_SHOWN);
  const tenants = shown.map((p) => ({ name: p, cls: "tenant", color: `hsl(${tenantHue(p)} 60% 45%)`,
    values: samples.map((x) => x.tenants[p] || 0) }));
  if (rest.length) tenants.push({ name: `${rest.length} other project(s)`, cls: "series-5",
    values: samples.map((x) => rest.reduce((a, p) => a + (x.tenants[p] || 0), 0)) });
  return h("div", { id: "charts" },
    h("p", { class: "note" }, `From the server's memory since it started: ${every}. `,
      "Long-term history: Prometheus (/metrics)."),
    h("div", { class: "charts" },
      lineChart({ id: "chart-allocation", title: "Allocation", unit: "GPUs", times, series: [
        { name: "capacity", values: col("capacity"), cls: "series-2" },
        { name: "on ready hosts", values: col("schedulable"), cls: "series-3" },
        { name: "allocated", values: col("allocated"), cls: "series-0" }] }),
      lineChart({ id: "chart-fragmentation", title: "Fragmentation", unit: "GPUs", times, series: [
        { name: "fragmented (placement measure)", values: col("fragmented"), cls: "series-1" },
        { name: "free part of partly used GPUs", values: col("free_partial"), cls: "series-4" }] }),
      lineChart({ id: "chart-queue", title: "Queue length", unit: "workloads", times, series: [
        { name: "waiting", values: col("queue"), cls: "series-1" }] }),
      tenants.length
        ? lineChart({ id: "chart-tenants", title: "Use per project", unit: "GPUs", times, series: tenants })
        : h("p", { id: "chart-tenants", class: "empty" }, "No project you may see has used GPUs in this window.")));
}
