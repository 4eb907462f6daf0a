// The gpuplane console: login, navigation, live state from the server's stream, views.
import { h, replace } from "./dom.js";
import { api, session, Live, setOnUnauthenticated } from "./api.js";
import { can } from "./roles.js";
import * as overview from "./views/overview.js";
import * as gpumap from "./views/gpumap.js";
import * as queue from "./views/queue.js";
import * as tenancy from "./views/tenancy.js";
import * as charts from "./views/charts.js";
import * as workload from "./views/workload.js";
import * as submit from "./views/submit.js";
import * as audit from "./views/audit.js";

const $ = (sel) => document.querySelector(sel);

const ROUTES = [
  { path: "overview", label: "Overview", title: "Fleet overview", deps: overview.deps, render: overview.render },
  { path: "gpus", label: "GPU map", title: "GPU map", deps: gpumap.deps, render: gpumap.render },
  { path: "queue", label: "Queue", title: "Queue", deps: queue.deps, render: queue.renderQueue },
  { path: "running", label: "Running", title: "Running workloads", deps: queue.deps, render: queue.renderRunning },
  { path: "tenancy", label: "Tenancy", title: "Tenancy", deps: tenancy.deps, render: tenancy.render },
  { path: "charts", label: "Charts", title: "The pool over time", deps: charts.deps, render: charts.render },
  { path: "submit", label: "Submit", title: "Submit a workload", deps: submit.deps, render: submit.render,
    allowed: (me) => can(me, "workload.write") },
  { path: "audit", label: "Audit", title: "Audit log", deps: audit.deps, render: audit.render,
    allowed: (me) => can(me, "audit.read") },
];

const state = { whoami: null, fleet: null, workloads: null, tenancy: null, history: null };
const kept = new Map();
let current = null;      // {route, arg}
let renderSeq = 0;

const live = new Live(onView, (status) => {
  const el = $("#live");
  el.textContent = { live: "● live", connecting: "○ connecting", reconnecting: "○ reconnecting", offline: "○ offline" }[status];
  el.dataset.status = status;
});

function onView(name, data) {
  if (name === "history") data = mergeHistory(state.history, data);
  if (name === "workloads") data = mergeWorkloads(state.workloads, data);
  state[name] = data;
  if (name === "whoami") renderChrome();
  if (current && current.route.deps.includes(name)) render(false);
}

/** The stream sends all kept samples first (reset), then only new ones. */
function mergeHistory(had, got) {
  const samples = got.reset || !had ? got.samples : had.samples.concat(got.samples);
  return { interval_s: got.interval_s, max_points: got.max_points, samples: samples.slice(-got.max_points) };
}

/** The stream sends all workloads first (reset), then the changed ones and the ids that left. */
function mergeWorkloads(had, got) {
  if (got.forbidden || got.reset || !had || had.forbidden) return { items: got.items || [], pending: got.pending || {}, forbidden: got.forbidden };
  const byId = new Map(had.items.map((w) => [w.id, w]));
  for (const id of got.removed || []) byId.delete(id);
  for (const w of got.items) byId.set(w.id, w);
  return { items: [...byId.values()], pending: got.pending || {} };
}

function routeOf(hash) {
  const [path, ...rest] = hash.replace(/^#\/?/, "").split("/");
  if (path === "workload" && rest.length) {
    return { route: { path: "workload", title: "Workload " + decodeURIComponent(rest.join("/")), deps: workload.deps,
      render: (root, st, ctx) => workload.render(root, st, ctx, decodeURIComponent(rest.join("/"))) } };
  }
  const route = ROUTES.find((r) => r.path === path && (!r.allowed || r.allowed(state.whoami))) || ROUTES[0];
  return { route };
}

const ctx = {
  refresh() { render(false); },
  keep(key, make) { if (!kept.has(key)) kept.set(key, make()); return kept.get(key); },
  async cancel(w) {
    try {
      await api(`/v1/workloads/${encodeURIComponent(w.id)}/cancel`, { method: "POST" });
      flash(`Cancel requested for ${w.name}.`);
    } catch (e) {
      flash(`Could not cancel ${w.name}: ${e.message}`, true);
    }
  },
};

function flash(text, error = false) {
  const el = $("#flash");
  el.textContent = text;
  el.className = error ? "error" : "ok";
}

async function render(navigated) {
  if (!session.token || !current) return;
  const seq = ++renderSeq;
  const root = $("#view");
  const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  if (navigated) {
    if (current.route.path !== "workload") workload.leave();
    kept.clear();
    $("#view-title").textContent = current.route.title;
    document.title = current.route.title + " · gpuplane";
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.getAttribute("href") === "#/" + current.route.path) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }
  try {
    const content = await current.route.render(root, state, ctx);
    if (seq !== renderSeq) return; // a newer render won
    replace(root, content);
    $("#error").hidden = true;
  } catch (e) {
    if (seq !== renderSeq) return;
    $("#error").textContent = e.message;
    $("#error").hidden = false;
  }
  if (navigated) $("#view-title").focus();
  else if (focusKey) {
    const again = root.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
}

function renderChrome() {
  const me = state.whoami;
  if (!me || me.forbidden) return;
  const roles = me.roles.map((b) => `${b.role}${b.scope === "global" ? "" : " of " + b.scope_name}`).join(", ");
  replace($("#me"), me.name, " ", h("small", {}, roles ? "(" + roles + ")" : "(no roles)"));
  replace($("#nav ul"), ROUTES.filter((r) => !r.allowed || r.allowed(me)).map((r) =>
    h("li", {}, h("a", { href: "#/" + r.path, "aria-current": current && current.route.path === r.path ? "page" : null }, r.label))));
  // a role change may hide the current view
  if (current && current.route.allowed && !current.route.allowed(me)) location.hash = "#/overview";
}

function showLogin(message) {
  live.stop();
  Object.assign(state, { whoami: null, fleet: null, workloads: null, tenancy: null, history: null });
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#login-error").hidden = !message;
  $("#token").value = "";
  $("#token").focus();
}

async function signIn(token) {
  session.set(token);
  try {
    state.whoami = await api("/v1/whoami");
  } catch (e) {
    session.clear();
    showLogin(e.status === 401 ? "That token is not valid here." : e.message);
    return;
  }
  $("#login").hidden = true;
  $("#logout").hidden = false;
  $("#app").hidden = false;
  renderChrome();
  current = routeOf(location.hash);
  live.start();
  render(true);
}

function initTheme() {
  const stored = localStorage.getItem("gpuplane.console.theme"); // a preference, not a secret
  const apply = (t) => {
    if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
    $("#theme").textContent = "Theme: " + (t || "auto");
    $("#theme").setAttribute("aria-label", `Colour theme: ${t || "auto (system)"}; press to change`);
  };
  apply(stored);
  $("#theme").addEventListener("click", () => {
    const now = document.documentElement.dataset.theme || "auto";
    const next = { auto: "light", light: "dark", dark: "auto" }[now];
    if (next === "auto") localStorage.removeItem("gpuplane.console.theme");
    else localStorage.setItem("gpuplane.console.theme", next);
    apply(next === "auto" ? null : next);
  });
}

setOnUnauthenticated(() => { session.clear(); showLogin("Signed out: the token is no longer accepted."); });
initTheme();
$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("#token").value.trim();
  if (token) signIn(token);
});
$("#skip").addEventListener("click", () => $("#view-title").focus());
$("#logout").addEventListener("click", () => { session.clear(); showLogin("Signed out."); });
window.addEventListener("hashchange", () => { if (session.token) { current = routeOf(location.hash); render(true); } });
if (session.token) signIn(session.token); else showLogin();
