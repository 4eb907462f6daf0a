// Tenancy: per organisation and project, guaranteed / used / borrowed / lendable per flavour
// and the fair-share standing: weight, cohort, share of the pool's GPUs held now
// (GET /v1/quotas, GET /v1/usage, GET /v1/projects, through the stream's "tenancy" view).
import { h, table, fmt } from "../dom.js";

export const deps = ["tenancy", "workloads", "fleet"];

export function render(root, state) {
  const t = state.tenancy;
  if (!t) return h("p", {}, "Waiting for quotas and usage…");
  if (t.forbidden) return h("p", {}, "Your roles do not show quotas or usage.");
  const info = Object.fromEntries((t.projects || []).map((p) => [p.name, p]));
  const orgOf = {};
  for (const w of (state.workloads && state.workloads.items) || []) orgOf[w.project] = w.organisation;
  const fleet = state.fleet && !state.fleet.forbidden ? state.fleet.hosts : null;
  const pool = fleet ? fleet.reduce((a, x) => a + x.gpus.length, 0) : 0;
  const usage = Object.fromEntries(t.usage.map((u) => [u.project, u]));
  const projects = new Set([...t.usage.map((u) => u.project), ...t.quotas.map((q) => q.project),
    ...Object.keys(info)]);
  const rows = [];
  for (const project of [...projects].sort()) {
    const u = usage[project];
    const used = u ? u.now.gpus : 0;
    const quotas = t.quotas.filter((q) => q.project === project && q.resource === "gpu");
    const guaranteed = quotas.reduce((a, q) => a + q.guaranteed, 0);
    const flavours = quotas.map((q) => `${q.flavor}: ${fmt.n(q.guaranteed)}` +
      (q.borrowing_limit != null ? `, may borrow ${fmt.n(q.borrowing_limit)}` : "") +
      (q.lending_limit != null ? `, lends ≤ ${fmt.n(q.lending_limit)}` : "")).join("; ");
    const p = info[project] || {};
    const standing = (p.weight != null ? `weight ${fmt.n(p.weight)}` : "–") + (p.cohort ? ` in ${p.cohort}` : "") +
      (pool ? ` · ${fmt.n((100 * used) / pool, 1)} % of the pool` : "");
    rows.push([p.organisation || orgOf[project] || "–", project, flavours || "no GPU quota", fmt.n(guaranteed), fmt.n(used),
      fmt.n(Math.max(0, used - guaranteed)), fmt.n(Math.max(0, guaranteed - used)), standing,
      u ? fmt.n(u.real.gpu_hours + u.simulated.gpu_hours) : "0"]);
  }
  const other = t.quotas.filter((q) => q.resource !== "gpu");
  return h("div", { id: "tenancy" },
    table("GPU quota and use per project", ["Organisation", "Project", "Quota per flavour", "Guaranteed (GPUs)",
      "Used now", "Borrowed", "Unused guarantee (lendable)", "Fair share", "GPU-hours"], rows, "No project visible."),
    other.length ? h("div", {}, h("h3", {}, "Other quotas"), table("Other quotas", ["Project", "Resource", "Flavour", "Guaranteed", "Borrowing limit"],
      other.map((q) => [q.project, q.resource, q.flavor, fmt.n(q.guaranteed), q.borrowing_limit ?? "–"]))) : null,
    h("p", { class: "note" }, "Borrowed: GPUs held beyond the project's guarantee (from its cohort). Unused guarantee: what other projects of the cohort may borrow now. Fair share: the project's weight against the others of its cohort when spare capacity is shared out, and the share of the pool's GPUs it holds now."));
}
