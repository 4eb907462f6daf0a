// The audit log (GET /v1/audit, newest page last) and, for global auditors and admins, whether
// the hash chain verifies (GET /v1/audit/verify). Read on demand: the audit log is not streamed.
import { h, table, fmt } from "../dom.js";
import { api } from "../api.js";
import { canVerify } from "../roles.js";

export const deps = ["whoami"];

export async function render(root, state) {
  const out = h("div", { id: "audit" });
  const entries = [];
  let cursor = null;
  do {
    const page = await api("/v1/audit?limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    entries.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && entries.length < 5000);
  if (canVerify(state.whoami)) {
    const v = await api("/v1/audit/verify");
    out.append(h("p", { class: v.intact ? "ok" : "error", role: "status", id: "audit-verify" },
      v.intact ? "The audit chain verifies: intact." : "The audit chain does NOT verify: " + v.problems.join("; ")));
  }
  const cols = entries.length ? Object.keys(entries[0]) : [];
  const show = ["seq", "at", "actor", "action", "object_kind", "object_id", "outcome", "detail"].filter((c) => cols.includes(c));
  out.append(table("Audit entries", show, entries.slice(-300).reverse().map((e) =>
    show.map((c) => (c === "at" ? fmt.time(e[c]) : typeof e[c] === "object" ? JSON.stringify(e[c]) : e[c] ?? "")))
    , "No audit entries in your scope."));
  return out;
}
