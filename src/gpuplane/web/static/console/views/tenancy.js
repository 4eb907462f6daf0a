// Tenancy: per organisation and project, guaranteed / used / borrowed per flavour
// (GET /v1/quotas, GET /v1/usage, through the stream's "tenancy" view).
import { h, table, fmt } from "../dom.js";

export const deps = ["tenancy", "workloads"];

export function render(root, state) {
  const t = state.tenancy;
  if (!t) return h("p", {}, "Waiting for quotas and usage…");
  if (t.forbidden) return h("p", {}, "Your roles do not show quotas or usage.");
  const orgOf = {};
  for (const w of (state.workloads && state.workloads.items) || []) orgOf[w.project] = w.organisation;
  const usage = Object.fromEntries(t.usage.map((u) => [u.project, u]));
  const projects = new Set([...t.usage.map((u) => u.project), ...t.quotas.map((q) => q.project)]);
  const rows = [];
  for (const project of [...projects].sort()) {
    const u = usage[project];
    const used = u ? u.now.gpus : 0;
    const quotas = t.quotas.filter((q) => q.project === project && q.resource === "gpu");
    const guaranteed = quotas.reduce((a, q) => a + q.guaranteed, 0);
    const flavours = quotas.map((q) => `${q.flavor}: ${fmt.n(q.guaranteed)}` +
      (q.borrowing_limit != null ? `, may borrow ${fmt.n(q.borrowing_limit)}` : "") +
      (q.lending_limit != null ? `, lends ≤ ${fmt.n(q.lending_limit)}` : "")).join("; ");
    rows.push([orgOf[project] || "–", project, flavours || "no GPU quota", fmt.n(guaranteed), fmt.n(used),
      fmt.n(Math.max(0, used - guaranteed)), fmt.n(Math.max(0, guaranteed - used)),
      u ? fmt.n(u.real.gpu_hours + u.simulated.gpu_hours) : "0"]);
  }
  const other = t.quotas.filter((q) => q.resource !== "gpu");
  return h("div", { id: "tenancy" },
    table("GPU quota and use per project", ["Organisation", "Project", "Quota per flavour", "Guaranteed (GPUs)",
      "Used now", "Borrowed", "Unused guarantee (lendable)", "GPU-hours"], rows, "No project visible."),
    other.length ? h("div", {}, h("h3", {}, "Other quotas"), table("Other quotas", ["Project", "Resource", "Flavour", "Guaranteed", "Borrowing limit"],
      other.map((q) => [q.project, q.resource, q.flavor, fmt.n(q.guaranteed), q.borrowing_limit ?? "–"]))) : null,
    h("p", { class: "note" }, "Borrowed: GPUs held beyond the project's guarantee (from its cohort). Unused guarantee: what other projects of the cohort may borrow now."));
}
