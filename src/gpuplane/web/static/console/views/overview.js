// Fleet overview by jurisdiction and site: capacity, allocated, idle, fragmented, unavailable.
// A GPU counts 1; a MIG instance or a share counts its part (GET /v1/gpus "allocated").
import { h, table, fmt } from "../dom.js";

export const deps = ["fleet"];
export const title = "Fleet overview";

/** Sums over GPUs: idle = wholly free on a ready host; fragmented = the free part of GPUs
 *  that are partly used (slices or shares left over); unavailable = on a host not ready. */
export function summarise(hosts) {
  const zero = () => ({ hosts: 0, gpus: 0, allocated: 0, idle: 0, fragmented: 0, unavailable: 0, mig: 0 });
  const groups = new Map(), total = zero();
  for (const host of hosts) {
    const key = host.jurisdiction + "\u0000" + host.site;
    if (!groups.has(key)) groups.set(key, { jurisdiction: host.jurisdiction || "–", site: host.site, ...zero() });
    const g = groups.get(key);
    for (const t of [g, total]) {
      t.hosts += 1;
      for (const gpu of host.gpus) {
        t.gpus += 1;
        t.allocated += gpu.allocated;
        if (gpu.mode === "mig") t.mig += 1;
        if (host.state !== "ready") t.unavailable += 1 - gpu.allocated;
        else if (gpu.allocated === 0) t.idle += 1;
        else if (gpu.allocated < 1) t.fragmented += 1 - gpu.allocated;
      }
    }
  }
  const rows = [...groups.values()].sort((a, b) => (a.jurisdiction + a.site).localeCompare(b.jurisdiction + b.site));
  return { rows, total };
}

function bar(part, whole) {
  const el = h("span", { class: "bar", role: "img", "aria-label": fmt.pct(part, whole) + " allocated" }, h("span"));
  el.firstChild.style.width = (whole ? (100 * part) / whole : 0) + "%"; // CSSOM: CSP allows it
  return el;
}

export function render(root, state) {
  const fleet = state.fleet;
  if (!fleet) return h("p", {}, "Waiting for the fleet…");
  if (fleet.forbidden) return h("p", {}, "Your roles do not show the fleet.");
  const { rows, total } = summarise(fleet.hosts);
  const cells = (r) => [fmt.n(r.gpus, 0), h("span", {}, bar(r.allocated, r.gpus), fmt.n(r.allocated)),
    fmt.n(r.idle, 0), fmt.n(r.fragmented), fmt.n(r.unavailable)];
  return h("div", {},
    h("dl", { class: "tiles", id: "fleet-totals" },
      [["Hosts", total.hosts], ["GPUs", total.gpus], ["Allocated", fmt.n(total.allocated)],
        ["Idle", total.idle], ["Fragmented", fmt.n(total.fragmented)], ["Unavailable", fmt.n(total.unavailable)],
        ["MIG GPUs", total.mig]]
        .map(([k, v]) => h("div", { class: "tile", dataset: { tile: k.toLowerCase() } }, h("dt", {}, k), h("dd", {}, String(v))))),
    table("Capacity by jurisdiction and site",
      ["Jurisdiction", "Site", "Hosts", "GPUs", "Allocated (GPUs)", "Idle", "Fragmented", "Unavailable"],
      rows.map((r) => [r.jurisdiction, r.site, r.hosts, ...cells(r)])),
    h("p", { class: "note" }, "Idle: GPUs wholly free on ready hosts. Fragmented: the free part of partly used GPUs ",
      "(MIG slices or shares left over), which a whole-GPU request cannot use. Unavailable: free capacity on hosts ",
      "that are cordoned, draining or down. A MIG instance counts as its slices (1/7 of a GPU each), not as a GPU."));
}
