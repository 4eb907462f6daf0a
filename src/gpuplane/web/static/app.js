// gpuplane dashboard: reads /v1/hosts and /v1/workloads with the token kept in localStorage.
"use strict";
const $ = (sel) => document.querySelector(sel);
const KEY = "gpuplane-token";

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + (localStorage.getItem(KEY) || "") } });
  if (res.status === 401) { showLogin(true); throw new Error("a token is needed"); }
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error((body.detail || res.statusText) + (body.code ? " [" + body.code + "]" : ""));
  }
  return res.json();
}

async function all(path) {
  let items = [], cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(path + sep + "limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    items = items.concat(page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

function showLogin(show) { $("#login").hidden = !show; $("#logout").hidden = show; }

function usedByHost(workloads) {
  const used = {};
  for (const w of workloads) for (const t of w.status.tasks) {
    const p = t.placement;
    if (!p || !["Admitted", "Running"].includes(t.phase)) continue;
    const milli = p.mig && p.mig.length ? 1000 * p.mig.length : (p.gpu_indices || []).length * (p.gpu_milli || 0);
    used[p.host] = (used[p.host] || 0) + milli;
  }
  return used;
}

function renderHosts(hosts, used) {
  $("#hosts tbody").innerHTML = hosts.map((h) => {
    const total = h.gpus.length * 1000, u = used[h.name] || 0;
    const pct = total ? Math.round((100 * u) / total) : 0;
    const models = {};
    for (const g of h.gpus) { const k = g.model + (g.mode !== "whole" ? " (" + g.mode + ")" : ""); models[k] = (models[k] || 0) + 1; }
    const gpus = Object.entries(models).map(([m, n]) => n + "× " + m).join(", ") || "none";
    return `<tr class="${h.simulated ? "sim" : ""}"><td>${esc(h.name)}</td><td>${esc(h.site)}</td><td>${esc(h.jurisdiction)}</td>` +
      `<td>${esc(h.state)}</td><td>${esc(gpus)}</td>` +
      `<td>${total ? `<span class="bar"><span data-pct="${pct}"></span></span>${(u / 1000).toFixed(1)}/${h.gpus.length}` : "-"}</td>` +
      `<td>${esc(h.tee || "")}</td><td>${h.simulated ? "simulated" : "real" + (h.declared ? " (declared GPUs)" : "")}</td></tr>`;
  }).join("");
  // widths set through the DOM: the Content-Security-Policy refuses inline style attributes
  for (const bar of document.querySelectorAll("#hosts .bar > span")) bar.style.width = bar.dataset.pct + "%";
}

function renderWorkloads(workloads) {
  const rows = workloads.slice(-200).reverse();
  $("#workloads tbody").innerHTML = rows.map((w) => {
    const s = w.status, counts = {};
    for (const t of s.tasks) counts[t.phase] = (counts[t.phase] || 0) + 1;
    const hosts = [...new Set(s.tasks.map((t) => t.placement && t.placement.host).filter(Boolean))];
    const sim = s.tasks.some((t) => t.placement && t.simulated);
    return `<tr><td>${esc(w.name)}</td><td>${esc(w.project)}</td><td>${esc(w.kind)}</td>` +
      `<td class="phase-${esc(s.phase)}">${esc(s.phase)}</td>` +
      `<td>${esc(Object.entries(counts).map(([p, n]) => n + " " + p).join(", "))}</td>` +
      `<td class="${sim ? "sim" : ""}">${esc(hosts.join(", "))}${sim ? " (simulated)" : ""}</td>` +
      `<td>${esc(s.phase === "Pending" && s.pending_reason ? s.pending_reason.message : "")}</td></tr>`;
  }).join("");
}

async function refresh() {
  if (!localStorage.getItem(KEY)) { showLogin(true); $("#summary").textContent = ""; return; }
  try {
    const [hosts, workloads] = await Promise.all([all("/v1/hosts"), all("/v1/workloads")]);
    const used = usedByHost(workloads);
    renderHosts(hosts, used);
    renderWorkloads(workloads);
    const gpus = hosts.reduce((n, h) => n + h.gpus.length, 0);
    const alloc = Object.values(used).reduce((a, b) => a + b, 0) / 1000;
    const phases = {};
    for (const w of workloads) phases[w.status.phase] = (phases[w.status.phase] || 0) + 1;
    $("#summary").textContent = `${hosts.length} hosts, ${alloc.toFixed(1)}/${gpus} GPUs allocated · ` +
      Object.entries(phases).map(([p, n]) => n + " " + p).join(", ");
    $("#error").hidden = true;
    showLogin(false);
  } catch (e) {
    $("#error").textContent = e.message;
    $("#error").hidden = false;
  }
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(KEY, $("#token").value.trim());
  refresh();
});
$("#logout").addEventListener("click", () => { localStorage.removeItem(KEY); refresh(); });
refresh();
setInterval(refresh, 3000);
