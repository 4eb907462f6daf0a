// Workload detail: spec, status and placement, events, pending standing, and a live log tail
// (GET /v1/workloads/{w}/logs?follow=true read as a fetch stream; aborted on leaving the view).
import { h, table, fmt } from "../dom.js";
import { api } from "../api.js";
import { cancelButton, unblockHint, FINISHED } from "./queue.js";

export const deps = ["workloads", "whoami"];

let follow = null; // {id, task, pre, controller}

export function leave() {
  if (follow) follow.controller.abort();
  follow = null;
}

/** Follows the log of ``task`` into ``pre`` (kept across renders of the page), from its
 *  start. A log read to its end once the task had finished is not opened again. */
async function tail(id, task, pre, status, finished) {
  if ((follow && follow.pre === pre) || pre.dataset.complete) return;
  leave();
  const controller = new AbortController();
  follow = { id, task, pre, controller };
  pre.textContent = "";
  try {
    const res = await api(`/v1/workloads/${encodeURIComponent(id)}/logs?task=${task}&follow=true`, { raw: true, signal: controller.signal });
    if (res.headers.get("X-Gpuplane-Log-Available") === "false") status.textContent = "No log (yet): the task has not written one, or runs on a simulated host.";
    else status.textContent = "Following the log…";
    const reader = res.body.getReader(), decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pre.textContent = (pre.textContent + decoder.decode(value, { stream: true })).slice(-200000);
      pre.scrollTop = pre.scrollHeight;
    }
    if (status.textContent === "Following the log…") status.textContent = "End of log stream.";
    if (finished()) pre.dataset.complete = "true";
  } catch (e) {
    if (e.name !== "AbortError") status.textContent = "Log: " + e.message;
  } finally {
    if (follow && follow.controller === controller) follow = null;
  }
}

export async function render(root, state, ctx, id) {
  const listed = state.workloads && !state.workloads.forbidden ? state.workloads.items.find((w) => w.id === id || w.name === id) : null;
  const full = listed ? null : await api("/v1/workloads/" + encodeURIComponent(id));
  const w = listed || full;
  // the stream's items carry no spec: read it once per visit of this page
  const spec = full ? full.spec : await ctx.keep("spec-" + w.id, () => api("/v1/workloads/" + encodeURIComponent(w.id)).then((x) => x.spec));
  const pending = w.status.phase === "Pending" ? ((state.workloads && state.workloads.pending) || {})[w.id] || (await api(`/v1/workloads/${w.id}/pending`)) : null;
  const events = (await api(`/v1/workloads/${w.id}/events?limit=200`)).items;
  const s = w.status;
  const logPre = ctx.keep("log-" + w.id, () => h("pre", { class: "log", tabindex: "0", "aria-label": "Log of task 0", "aria-live": "off" }));
  const logStatus = ctx.keep("logstatus-" + w.id, () => h("p", { class: "note", role: "status" }, "Opening the log…"));
  const out = h("div", { id: "workload", dataset: { workload: w.id } },
    h("p", {}, h("span", { class: "phase-" + s.phase }, s.phase), ` · project ${w.project} · ${w.kind} · priority ${w.priority_class}`,
      ` · submitted ${fmt.time(s.submitted_at)} by ${w.submitted_by} `, cancelButton(w, state.whoami, ctx.cancel)),
    s.message ? h("p", {}, s.message) : null,
    pending && pending.reason ? h("p", { class: "warn" }, `Waiting (queue position ${pending.queue_position ?? "–"}): ${pending.reason.message}. `,
      "Would unblock it: ", unblockHint(pending.reason)) : null,
    h("h3", {}, "Tasks and placement"),
    table("Tasks", ["Task", "Phase", "Attempt", "Host", "GPUs", "Started", "Exit", "Reason"],
      s.tasks.map((t) => [`${t.group}[${t.replica}]`, h("span", { class: "phase-" + t.phase }, t.phase), t.attempt,
        t.placement ? t.placement.host + (t.simulated ? " (simulated)" : "") : "–",
        t.placement ? (t.placement.mig.length ? t.placement.mig.map((m) => `${m.gpu_index}:${m.profile}`).join(", ")
          : t.placement.gpu_indices.join(",") + (t.placement.gpu_milli < 1000 && t.placement.gpu_indices.length ? ` @${t.placement.gpu_milli / 10} %` : "")) : "–",
        fmt.time(t.started_at), t.exit_code ?? "–", t.message || t.reason || ""])),
    h("h3", {}, "Log (task 0)"), logStatus, logPre,
    h("h3", {}, "Events"),
    table("Events", ["When", "Type", "Reason", "Message", "Host"], events.slice(-100).reverse().map((e) =>
      [fmt.time(e.at), e.type, e.reason, e.message, e.host || ""]), "No events."),
    h("h3", {}, "Spec"), h("pre", { class: "spec", tabindex: "0", "aria-label": "Spec" }, JSON.stringify(spec, null, 2)));
  const finished = () => {  // task 0 as the stream last told it
    const now = ((state.workloads && state.workloads.items) || []).find((x) => x.id === w.id) || w;
    const t0 = now.status.tasks[0];
    return !t0 || FINISHED.includes(t0.phase);
  };
  tail(w.id, 0, logPre, logStatus, finished);
  return out;
}
