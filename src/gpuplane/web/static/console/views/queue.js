// The queue (pending workloads with their reason and what would unblock them) and the running
// workloads with where they landed. Data: the stream's "workloads" view, which carries
// GET /v1/workloads and GET /v1/workloads/{w}/pending for each pending workload.
import { h, table, fmt } from "../dom.js";
import { can } from "../roles.js";

export const deps = ["workloads", "whoami"];
const SHOWN = 300, QUEUE_SHOWN = 1000; // rows drawn (a large fleet runs thousands)

const HINTS = [
  [/quota|cohort|guarantee|borrow/, "More quota for the project (PUT /v1/quotas), borrowing room in its cohort, or other work finishing."],
  [/selector|affinity|label|taint/, "A host whose labels match the selector (or fewer constraints in the spec)."],
  [/residency|jurisdiction|tee|confidential|attest/, "A ready host in an allowed jurisdiction (with a TEE, if confidential)."],
  [/mig|profile/, "A free MIG slice of that profile, or an empty MIG GPU to create it on."],
  [/gang|topology|rack/, "Enough free GPUs at once for the whole gang."],
  [/backoff/, "Time: the retry backoff ends."],
  [/not_yet_scheduled/, "The next scheduling cycle."],
  [/capacity|fit|insufficient|no_host|resources/, "Free capacity of the requested kind: work finishing, or more hosts."],
];

export function unblockHint(reason) {
  if (!reason) return "";
  const text = (reason.code + " " + reason.message).toLowerCase();
  const hit = HINTS.find(([re]) => re.test(text));
  return hit ? hit[1] : "See the workload's events.";
}

const link = (w) => h("a", { href: "#/workload/" + encodeURIComponent(w.id), dataset: { key: "wl-" + w.id } }, w.name);

export const FINISHED = ["Succeeded", "Failed", "Cancelled", "Lost"];

export function cancelButton(w, me, onCancel) {
  if (!can(me, "workload.write", w.project, w.organisation) || w.status.cancel_requested ||
      FINISHED.includes(w.status.phase)) return "";
  return h("button", { type: "button", class: "danger", dataset: { key: "cancel-" + w.id },
    "aria-label": "Cancel " + w.name, onclick: () => onCancel(w) }, "Cancel");
}

function where(w) {
  const hosts = new Map();
  for (const t of w.status.tasks) {
    const p = t.placement;
    if (!p) continue;
    const what = p.mig && p.mig.length ? p.mig.map((m) => `GPU ${m.gpu_index} ${m.profile}`).join(", ")
      : p.gpu_indices.length ? `GPU ${p.gpu_indices.join(",")}${p.gpu_milli && p.gpu_milli < 1000 ? ` (${p.gpu_milli / 10} %)` : ""}` : "CPU";
    hosts.set(p.host + what, `${p.host}: ${what}`);
  }
  const sim = w.status.tasks.some((t) => t.placement && t.simulated);
  return [...hosts.values()].join("; ") + (sim ? " (simulated)" : "");
}

export function renderQueue(root, state, ctx) {
  const wl = state.workloads;
  if (!wl) return h("p", {}, "Waiting for workloads…");
  if (wl.forbidden) return h("p", {}, "Your roles do not show workloads.");
  const all = wl.items.filter((w) => w.status.phase === "Pending");
  const info = wl.pending || {};
  all.sort((a, b) => ((info[a.id] || {}).queue_position ?? 1e9) - ((info[b.id] || {}).queue_position ?? 1e9));
  const pending = all.slice(0, QUEUE_SHOWN);
  return h("div", { id: "queue" },
    all.length > QUEUE_SHOWN ? h("p", { class: "note" }, `The first ${QUEUE_SHOWN} of ${all.length.toLocaleString("en")} waiting workloads.`) : null,
    table("Pending workloads",
    ["#", "Workload", "Project", "Priority", "Submitted", "Why it waits", "What would unblock it", ""],
    pending.map((w) => {
      const p = info[w.id] || {};
      const reason = p.reason || w.status.pending_reason;
      return [p.queue_position ?? "–", link(w), w.project, w.priority_class, fmt.ago(w.status.submitted_at),
        reason ? h("span", {}, reason.message, " ", h("code", {}, reason.code)) : "–",
        unblockHint(reason), cancelButton(w, state.whoami, ctx.cancel)];
    }), "No workload is waiting."));
}

export function renderRunning(root, state, ctx) {
  const wl = state.workloads;
  if (!wl) return h("p", {}, "Waiting for workloads…");
  if (wl.forbidden) return h("p", {}, "Your roles do not show workloads.");
  const all = wl.items.filter((w) => ["Admitted", "Running"].includes(w.status.phase));
  const started = (w) => w.status.started_at || w.status.admitted_at || 0;
  const active = all.length > SHOWN ? [...all].sort((a, b) => started(b) - started(a)).slice(0, SHOWN) : all;
  const done = wl.items.filter((w) => ["Succeeded", "Failed", "Cancelled", "Lost"].includes(w.status.phase)).reverse();
  return h("div", { id: "running" },
    all.length > SHOWN ? h("p", { class: "note" }, `The ${SHOWN} most recently started of ${all.length.toLocaleString("en")} running workloads.`) : null,
    table("Running workloads", ["Workload", "Project", "Phase", "Tasks", "Where", "Started", ""],
      active.map((w) => [link(w), w.project, h("span", { class: "phase-" + w.status.phase }, w.status.phase),
        w.status.tasks.length, where(w), fmt.ago(w.status.started_at || w.status.admitted_at), cancelButton(w, state.whoami, ctx.cancel)]),
      "Nothing is running."),
    h("h3", {}, "Recently finished"),
    table("Recently finished workloads", ["Workload", "Project", "Phase", "Finished", "Message"],
      done.slice(0, 20).map((w) => [link(w), w.project, h("span", { class: "phase-" + w.status.phase }, w.status.phase),
        fmt.ago(w.status.finished_at), w.status.message || ""]), "Nothing finished recently."));
}
