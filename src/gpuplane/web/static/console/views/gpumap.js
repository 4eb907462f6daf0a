// A GPU map per host: each GPU as a box; whole GPUs and shares filled by their allocation, MIG
// GPUs as their memory slots with the instances drawn on them. Coloured by tenant (project)
// where the viewer may see the workload; "other tenant" (hatched grey) otherwise. A page of
// PAGE hosts at a time (a 2,000-host fleet is 16,000 GPUs), with a filter.
import { h, s, tenantHue } from "../dom.js";

export const deps = ["fleet", "workloads"];
export const title = "GPU map";

const W = 112, H = 44, SLOTS = 8, PAGE = 24;
const shown = { page: 0, filter: "" };  // kept while the console is open

/** {host: {gpuIndex: {whole: [[project, milli]], mig: [{start, profile, project}]}}} of the
 *  placements the viewer can see on ``hosts``. */
function visibleUse(workloads, hosts) {
  const use = {};
  for (const w of workloads) for (const t of w.status.tasks) {
    const p = t.placement;
    if (!p || !hosts.has(p.host) || !["Admitted", "Running"].includes(t.phase)) continue;
    const hostUse = (use[p.host] ||= {});
    for (const m of p.mig || []) {
      ((hostUse[m.gpu_index] ||= { whole: [], mig: [] }).mig).push({ start: m.start, profile: m.profile, project: w.project });
    }
    if (!(p.mig || []).length) for (const i of p.gpu_indices) {
      (hostUse[i] ||= { whole: [], mig: [] }).whole.push([w.project, p.gpu_milli || 1000]);
    }
  }
  return use;
}

function computeSlices(profile) { const m = /^(\d+)g/.exec(profile || ""); return m ? +m[1] : 1; }
function memSlots(profile, gpu) {
  const m = /\.(\d+)gb/.exec(profile || "");
  const per = gpu.memory_mib / 1024 / SLOTS;
  return m && per ? Math.max(1, Math.min(SLOTS, Math.round(+m[1] / per))) : computeSlices(profile);
}

const fill = (project) => (project ? `hsl(${tenantHue(project)} 60% 50%)` : "url(#other-tenant)");

function gpuBox(host, gpu, mine) {
  const used = mine || { whole: [], mig: [] };
  const parts = [s("rect", { class: "gpu-frame", x: 0.5, y: 0.5, width: W - 1, height: H - 1, rx: 4 })];
  let label = `${host.name} GPU ${gpu.index}: ${gpu.model}, ${gpu.mode}`;
  const ownMilli = used.whole.reduce((a, [, m]) => a + m, 0) + used.mig.reduce((a, m) => a + (1000 / 7) * computeSlices(m.profile), 0);
  let otherMilli = Math.max(0, Math.round(gpu.allocated * 1000 - ownMilli));
  if (gpu.mode === "mig") {
    const slot = (W - 8) / SLOTS;
    for (let i = 0; i < SLOTS; i++) parts.push(s("rect", { class: "mig-slot", x: 4 + i * slot, y: 16, width: slot - 1, height: H - 20 }));
    const instances = (gpu.mig_layout || []).map((m) => ({ ...m }));
    for (const m of used.mig) if (!instances.some((i) => i.start === m.start)) instances.push({ start: m.start, profile: m.profile });
    let otherSlices = Math.round(otherMilli / (1000 / 7));
    for (const inst of instances.sort((a, b) => a.start - b.start)) {
      const own = used.mig.find((m) => m.start === inst.start);
      let project = own ? own.project : null, state = own ? "own" : "free";
      if (!own && otherSlices >= computeSlices(inst.profile)) { state = "other"; otherSlices -= computeSlices(inst.profile); }
      const width = memSlots(inst.profile, gpu) * slot - 1;
      parts.push(s("rect", {
        class: `mig-slice mig-${state}`, x: 4 + inst.start * slot, y: 16, width, height: H - 20, rx: 2,
        fill: state === "free" ? null : fill(project), "data-profile": inst.profile,
      }, s("title", {}, `${inst.profile} at slot ${inst.start}: ${state === "own" ? project : state === "other" ? "other tenant" : "free"}`)));
    }
    if (otherSlices > 0) label += `, ${otherSlices} slice(s) used by another tenant`;
    label += `, ${instances.length} MIG instance(s)`;
  } else {
    let x = 4;
    const span = W - 8;
    for (const [project, milli] of used.whole) {
      const w = (span * milli) / 1000;
      parts.push(s("rect", { class: "share own", x, y: 16, width: Math.max(1, w - 1), height: H - 20, fill: fill(project) }, s("title", {}, `${project}: ${milli / 10} %`)));
      x += w;
    }
    if (otherMilli > 0) {
      const w = (span * otherMilli) / 1000;
      parts.push(s("rect", { class: "share other", x, y: 16, width: Math.max(1, w - 1), height: H - 20, fill: fill(null) }, s("title", {}, `other tenant: ${otherMilli / 10} %`)));
    }
    label += `, ${Math.round(gpu.allocated * 100)} % allocated`;
  }
  parts.push(s("text", { x: 6, y: 12, class: "gpu-label" }, `${gpu.index} ${gpu.model}${gpu.mode !== "whole" ? " · " + gpu.mode : ""}`));
  return s("svg", { class: "gpu", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label,
    "data-mode": gpu.mode }, s("title", {}, label), ...parts);
}

function matches(host, words) {
  const text = [host.name, host.site, host.jurisdiction, host.state, host.tee || "",
    ...new Set(host.gpus.map((g) => g.model + " " + g.mode))].join(" ").toLowerCase();
  return words.every((w) => text.includes(w));
}

function pager(ctx, total, first, last) {
  const go = (page) => () => { shown.page = page; ctx.refresh(); };
  return h("div", { class: "pager", role: "navigation", "aria-label": "Pages of hosts" },
    h("label", { for: "gpumap-filter" }, "Filter hosts "),
    h("input", { id: "gpumap-filter", type: "search", value: shown.filter, placeholder: "name, site, model, state…",
      dataset: { key: "gpumap-filter" }, size: 28,
      onfocus: (e) => { const n = e.target.value.length; e.target.setSelectionRange(n, n); },
      oninput: (e) => { shown.filter = e.target.value; shown.page = 0; ctx.refresh(); } }),
    h("button", { type: "button", dataset: { key: "gpumap-prev" }, disabled: first === 0, onclick: go(shown.page - 1) }, "‹ Previous"),
    h("span", { id: "gpumap-range", role: "status" }, total ? `Hosts ${first + 1}–${last} of ${total.toLocaleString("en")}` : "No host matches."),
    h("button", { type: "button", dataset: { key: "gpumap-next" }, disabled: last >= total, onclick: go(shown.page + 1) }, "Next ›"));
}

export function render(root, state, ctx) {
  const fleet = state.fleet, wl = state.workloads;
  if (!fleet) return h("p", {}, "Waiting for the fleet…");
  if (fleet.forbidden) return h("p", {}, "Your roles do not show the fleet.");
  const words = shown.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const hosts = fleet.hosts.filter((x) => x.gpus.length && matches(x, words));
  shown.page = Math.max(0, Math.min(shown.page, Math.ceil(hosts.length / PAGE) - 1));
  const first = shown.page * PAGE, page = hosts.slice(first, first + PAGE);
  const names = new Set(page.map((x) => x.name));
  const use = visibleUse(((wl && wl.items) || []), names);
  const projects = new Set();
  for (const hostUse of Object.values(use)) for (const g of Object.values(hostUse)) {
    g.whole.forEach(([p]) => projects.add(p)); g.mig.forEach((m) => projects.add(m.project));
  }
  const legend = h("ul", { class: "legend", "aria-label": "Legend" },
    [...projects].sort().map((p) => h("li", {}, swatch(fill(p)), p)),
    h("li", {}, swatch(fill(null)), "other tenant"), h("li", {}, swatch(null), "free"));
  return h("div", { id: "gpumap" },
    defs(), pager(ctx, hosts.length, first, first + page.length), legend,
    page.map((host) => h("section", { class: "host", "aria-label": "Host " + host.name, dataset: { host: host.name } },
      h("h3", {}, host.name, " ", h("small", {}, `${host.site} · ${host.jurisdiction || "–"} · ${host.state}`,
        host.simulated ? " · simulated" : "", host.tee ? " · " + host.tee : "")),
      host.state !== "ready" ? h("p", { class: "warn" }, `Not schedulable: host is ${host.state}.`) : null,
      h("div", { class: "gpus" }, host.gpus.map((g) => gpuBox(host, g, (use[host.name] || {})[g.index]))))));
}

function swatch(color) {
  return s("svg", { width: 14, height: 14, "aria-hidden": "true", class: "swatch" },
    s("rect", { width: 14, height: 14, rx: 2, class: color ? "" : "mig-free", fill: color }));
}

function defs() {
  return s("svg", { width: 0, height: 0, "aria-hidden": "true", class: "defs" },
    s("defs", {}, s("pattern", { id: "other-tenant", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      s("rect", { width: 6, height: 6, class: "other-bg" }), s("line", { x1: 0, y1: 0, x2: 0, y2: 6, class: "other-line" }))));
}
