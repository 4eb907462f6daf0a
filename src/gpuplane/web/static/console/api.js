// The REST API and the live stream. The token lives in sessionStorage: this tab only, gone when
// the tab closes; never localStorage.
const KEY = "gpuplane.console.token";

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.errors = (body && body.errors) || [];
  }
}

export let onUnauthenticated = () => {};
export function setOnUnauthenticated(fn) { onUnauthenticated = fn; }

/** fetch with the bearer token; JSON in and out unless ``raw`` (then the Response). */
export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { Authorization: "Bearer " + (session.token || "") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) {
    const problem = await res.json().catch(() => null);
    if (res.status === 401) onUnauthenticated(problem);
    throw new ApiError(res.status, problem);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

/** Every item of a paged list. */
export async function all(path) {
  let items = [], cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(path + sep + "limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    items = items.concat(page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

export const VIEWS = ["whoami", "fleet", "workloads", "tenancy", "history"];

/**
 * The live stream: POST /v1/stream/tickets with the token, then EventSource on
 * /v1/stream?ticket=... (single use). On any error the source is closed and a new ticket is
 * fetched after a pause: EventSource's own retry would reuse the spent ticket.
 */
export class Live {
  constructor(onView, onStatus) {
    this.onView = onView;
    this.onStatus = onStatus;
    this.source = null;
    this.timer = null;
    this.stopped = true;
    this.failures = 0;
  }

  async start() {
    this.stopped = false;
    clearTimeout(this.timer);
    this.onStatus("connecting");
    let ticket;
    try {
      ticket = (await api("/v1/stream/tickets", { method: "POST" })).ticket;
    } catch (e) {
      if (e.status === 401) return this.stop();
      return this.retry();
    }
    if (this.stopped) return;
    const source = new EventSource("/v1/stream?ticket=" + encodeURIComponent(ticket));
    this.source = source;
    source.onopen = () => { this.failures = 0; this.onStatus("live"); };
    for (const name of VIEWS) {
      source.addEventListener(name, (ev) => this.onView(name, JSON.parse(ev.data)));
    }
    source.addEventListener("expired", () => { source.close(); onUnauthenticated(null); });
    source.onerror = () => { source.close(); if (this.source === source) this.retry(); };
  }

  retry() {
    if (this.stopped) return;
    this.onStatus("reconnecting");
    this.failures += 1;
    this.timer = setTimeout(() => this.start(), Math.min(10000, 500 * 2 ** this.failures));
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    this.onStatus("offline");
  }
}
